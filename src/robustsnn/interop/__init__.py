"""Evaluate SpikingJelly and snnTorch networks with robustsnn's attacks and gradient estimators.

>>> net = robustsnn.interop.wrap(my_spikingjelly_net)   # or pass it to robustsnn.evaluate directly
>>> robustsnn.evaluate(net, (x, y), preset="strongest", eps=0.1)

:func:`wrap` returns a :class:`ForeignSNN`: pixels [B, C, H, W] in [0, 1] -> logits
[B, K] (a network returning per-step outputs [T, B, K] is averaged over T). Before
every forward it resets the library's neuron state (``functional.reset_net`` /
``reset_mem``), so two identical calls give identical outputs. Its neurons become
modes of :func:`robustsnn.estimators.estimator`, like ours:

* SpikingJelly ``LIFNode`` / ``IFNode`` / ``ParametricLIFNode`` in multi-step mode with
  ``v_reset`` 0 (hard reset) or None (soft reset) are replaced by robustsnn neurons with
  the same dynamics (``lambda = 1 - 1/tau``, input gain ``1/tau`` when ``decay_input``):
  every estimator works (surrogates, BPTR, ANN proxy, ASSG, HART, RGA, PDSG).
* Every other SpikingJelly neuron, and every snnTorch neuron, keeps its own dynamics;
  its surrogate function (``surrogate_function`` / ``spike_grad``) is swapped for a
  :class:`SurrogateSlot` that computes the exact spike and our surrogate in the
  backward: the bptt surrogates (``bptt:default`` = the library's own), ``assg`` and
  ``pdsg`` (per time step). Estimators that need the whole spike train of a layer
  (``bptr``, ``ann``, ``hart``, ``rga``) raise a clear error there.

SpikingJelly and snnTorch are optional peers, imported only if the network uses them.
NIR export / import of robustsnn SNNs: :mod:`robustsnn.interop.nirgraph` (``to_nir``,
``from_nir``; needs the optional ``nir`` package).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import UsageError
from ..estimators import proxy_forward
from ..gradhooks import ASSG, PDSG
from ..neurons import GradMode, SpikingNeuron
from ..surrogates import surrogate_grad

__all__ = ["wrap", "ForeignSNN", "SurrogateSlot", "foreign_library", "load_model_file", "supports", "SLOT_REFUSES"]

#: Estimator modes a :class:`SurrogateSlot` cannot give (they need a layer's whole spike train).
SLOT_REFUSES = ("bptr", "ann", "hart", "rga")


def foreign_library(model: nn.Module) -> str | None:
    """``"spikingjelly"`` or ``"snntorch"`` if ``model`` holds that library's neurons, else None."""
    for m in model.modules():
        root = type(m).__module__.split(".")[0]
        if root == "spikingjelly" and _is_sj_neuron(m):
            return "spikingjelly"
        if root == "snntorch" and hasattr(m, "spike_grad"):
            return "snntorch"
    return None


def _is_sj_neuron(m: nn.Module) -> bool:
    return hasattr(m, "surrogate_function") and hasattr(m, "v_threshold")


class SurrogateSlot(SpikingNeuron):
    """Stands in for a foreign neuron's surrogate function: exact spike H(u), our backward.

    ``forward(u)`` takes ``u = membrane - threshold`` of one step and returns the spike
    (``u >= 0`` for SpikingJelly, ``u > 0`` for snnTorch, as the library's own forward),
    with the gradient of the estimator in force. Stateful shapes (ASSG's running
    statistics, PDSG's spread of u[0..t]) are kept per time step, counted from the last
    :meth:`begin` (the wrapper calls it before every forward).
    """

    def __init__(self, original, strict: bool, owner: str):
        nn.Module.__init__(self)
        object.__setattr__(self, "_original", original)  # not a submodule: the library's object
        self.strict, self.owner = bool(strict), owner
        self.grad_mode = GradMode()
        self._step, self._history, self._assg = 0, [], {}

    def begin(self) -> None:
        """Start a new forward pass (time step 0)."""
        self._step, self._history = 0, []

    def _refuse(self, what: str):
        raise UsageError(
            f"{self.owner}: the {what} estimator needs a layer's whole spike train, which this library's "
            "single-step neuron does not expose; available here: bptt surrogates, assg, pdsg"
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        gm = self.grad_mode
        if gm.mode != "bptt":
            self._refuse(gm.mode)
        hook, sur = gm.hook, gm.surrogate
        t, self._step = self._step, self._step + 1
        if hook is None and sur is None:
            return self._original(u)
        spikes = (u > 0 if self.strict else u >= 0).to(u.dtype)
        if not (torch.is_grad_enabled() and u.requires_grad):
            return spikes
        with torch.no_grad():
            ud = u.detach()
            if isinstance(hook, ASSG):
                key = (id(hook), t)
                if key not in self._assg:
                    self._assg = {k: v for k, v in self._assg.items() if k[0] == id(hook)}
                    self._assg[key] = ASSG(hook.A, hook.relax, hook.beta1, hook.beta2, hook.shape.name)
                d = self._assg[key].derivative(ud[None], None, 1.0, 0.0)[0]
            elif hook is not None:
                self._refuse(type(hook).__name__.lower())
            elif sur.name in ("pdsg", "pdsg-batch"):
                self._history.append(ud)
                hist = torch.stack(self._history)
                d = PDSG(sur.width, sur.name == "pdsg-batch").derivative(hist, hist, 1.0, torch.zeros(()))[-1]
            else:
                d = surrogate_grad(ud, sur, sur.width)
        return spikes + (u - ud) * d

    def extra_repr(self) -> str:
        return f"owner={self.owner}, mode={self.grad_mode.mode}"


def reset_state(net: nn.Module, library: str) -> None:
    """Zero the membrane state the library keeps between calls (``functional.reset_net`` / ``reset_mem``)."""
    if library == "spikingjelly":
        from spikingjelly.activation_based import functional

        functional.reset_net(net)
    else:
        for m in net.modules():
            if type(m).__module__.startswith("snntorch") and hasattr(m, "reset_mem"):
                m.reset_mem()


def supports(model: nn.Module, est) -> bool:
    """False if ``model`` has surrogate slots and the estimator ``est`` (an Estimator or None) needs more."""
    if est is None or est.mode not in SLOT_REFUSES:
        return True
    return not any(isinstance(m, SurrogateSlot) for m in model.modules())


class ForeignSNN(nn.Module):
    """A SpikingJelly or snnTorch network as a robustsnn model (see the module docstring).

    Attributes:
        net: the (copied, adapted) network.
        library: ``"spikingjelly"`` or ``"snntorch"``.
        converted: names of the neurons replaced by robustsnn neurons (all estimators).
        slots: names of the neurons whose surrogate function was swapped (bptt, assg, pdsg).
    """

    def __init__(self, net: nn.Module, library: str, converted: list[str], slots: list[str]):
        super().__init__()
        self.net, self.library = net, library
        self.converted, self.slots = converted, slots

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.net.modules():
            if isinstance(m, SurrogateSlot):
                m.begin()
        reset_state(self.net, self.library)
        out = self.net(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.dim() == 3:  # per-step outputs [T, B, K]
            out = out.mean(0)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, K] for pixels x [B, C, H, W] in [0, 1]; state reset first."""
        neurons = [m for m in self.net.modules() if isinstance(m, SpikingNeuron) and not isinstance(m, SurrogateSlot)]
        return proxy_forward(neurons, lambda: self._run(x))


def wrap(model: nn.Module) -> nn.Module:
    """``model`` as a :class:`ForeignSNN` if it holds SpikingJelly or snnTorch neurons, else unchanged.

    The network is deep-copied (the original is not modified, except that its neuron state is
    reset as before every call). Unsupported neurons (a
    SpikingJelly neuron without a surrogate function, a non-zero ``v_reset`` in a
    multi-step LIF, ...) are either adapted through their surrogate or refused with a
    :class:`~robustsnn.errors.UsageError` naming the layer.
    """
    if isinstance(model, ForeignSNN):
        return model
    lib = foreign_library(model)
    if lib is None:
        return model
    reset_state(model, lib)  # the state of the last call may hold a graph, which cannot be copied
    net = copy.deepcopy(model)
    if lib == "spikingjelly":
        from .spikingjelly import adapt
    else:
        from .snntorch import adapt
    converted, slots = adapt(net)
    out = ForeignSNN(net, lib, converted, slots)
    out.stochastic = bool(getattr(model, "stochastic", False))
    return out.train(model.training)


def load_model_file(spec: str) -> nn.Module:
    """The network that ``"path/to/script.py:factory"`` defines: ``factory()`` (or ``factory`` itself if a module).

    Weights are whatever the script loads (a SpikingJelly / snnTorch / plain PyTorch model);
    the result is passed through :func:`wrap` by :func:`robustsnn.evaluate`.
    """
    import importlib.util
    from pathlib import Path

    path, sep, name = str(spec).rpartition(":")
    if not sep or not path or not name:
        raise UsageError(f"--model-file {spec!r}: expected script.py:factory")
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--model-file: no such file {file}")
    mod_spec = importlib.util.spec_from_file_location(f"robustsnn_model_file_{abs(hash(str(file.resolve())))}", file)
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except ImportError as e:
        raise UsageError(f"--model-file {file}: {e}") from None
    obj = getattr(module, name, None)
    if obj is None:
        raise UsageError(f"--model-file: {file} defines no {name!r}")
    model = obj if isinstance(obj, nn.Module) else obj()
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model-file: {name}() returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()
