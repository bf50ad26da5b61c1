r"""NIR (Neuromorphic Intermediate Representation) export and import of robustsnn SNNs.

:func:`to_nir` writes a sequential robustsnn SNN (direct encoding) as a ``nir.NIRGraph``:
Conv2d (batch norm folded in, pruning masks as zeros), AvgPool2d, Flatten, Affine, and
its IF / LIF / DLIF layers as NIR's continuous-time neurons. Our discrete neuron
:math:`m[t] = \lambda v[t-1] + g I[t]`, hard reset to 0, is NIR's
:math:`\tau \dot v = -v + R I` under forward Euler with step ``dt``:

.. math::

    \tau = \frac{dt}{1 - \lambda}, \qquad R = \frac{g\,\tau}{dt} \qquad
    \text{(IF: } \dot v = R I,\ R = g / dt \cdot dt = g\text{)}

with ``v_threshold`` = theta, ``v_leak`` = ``v_reset`` = 0. ``dt`` defaults to 1e-4, the
step snnTorch's NIR import assumes. NIR has no reset by subtraction and no per-step
gain: soft-reset layers and DLIF layers whose gains a[t] differ are refused. The graph
starts after the model's normalisation: feed it ``(x - mean) / std``, the same image at
every step (``metadata`` records mean, std and T). NIR spikes where
:math:`v > \theta`, we where :math:`v \ge \theta`: they differ only on exact equality.

:func:`from_nir` reads such a chain back into a :class:`NIRNetwork` of robustsnn layers
(pixels in, logits out), so a graph from another tool runs under robustsnn's attacks.
Needs the optional ``nir`` package.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import layers as L
from ..encoding import encode, readout
from ..errors import UsageError
from ..neurons import NeuronConfig, SpikingNeuron

__all__ = ["to_nir", "from_nir", "NIRNetwork", "DEFAULT_DT"]

DEFAULT_DT = 1e-4


def _nir():
    try:
        import nir
    except ImportError:
        raise UsageError("NIR interop needs the 'nir' package: pip install nir") from None
    return nir


def _flat_modules(body: nn.Module) -> list[nn.Module]:
    if isinstance(body, nn.Sequential):
        return [m for child in body for m in _flat_modules(child)]
    return [body]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _weight(m: nn.Module) -> torch.Tensor:
    w = m.weight.detach()
    mask = getattr(m, "weight_mask", None)
    return w * mask if mask is not None else w


def _fold_bn(w: torch.Tensor, b: torch.Tensor, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shape = (-1,) + (1,) * (w.dim() - 1)
    return w * scale.view(shape), (b - bn.running_mean) * scale + bn.bias.detach()


def _neuron_params(n: SpikingNeuron, shape, T: int, dt: float, name: str) -> tuple[str, dict]:
    cfg = n.config
    if cfg.reset != "hard":
        raise UsageError(f"{name}: NIR neurons reset to v_reset; reset by subtraction ({cfg.reset}) has no NIR form")
    if getattr(cfg, "init_potential", 0.0) or getattr(cfg, "spike_amplitude", "one") != "one":
        raise UsageError(f"{name}: an initial potential or spikes of amplitude theta have no NIR form")
    gain = 1.0
    if n.gain is not None:
        a = n.gain.detach()[:T]
        if not torch.allclose(a, a[0].expand_as(a)):
            raise UsageError(f"{name}: DLIF gains a[t] = {a.tolist()} vary over time; NIR has no per-step gain")
        gain = float(a[0])
    theta = float(n.effective_threshold())
    full = lambda v: np.full(tuple(shape), float(v))  # noqa: E731
    if cfg.lam == 1.0:
        return "IF", {"r": full(gain), "v_threshold": full(theta), "v_reset": full(0.0)}
    tau = dt / (1.0 - cfg.lam)
    return "LIF", {"tau": full(tau), "r": full(gain * tau / dt), "v_leak": full(0.0), "v_threshold": full(theta),
                   "v_reset": full(0.0)}


def to_nir(model: nn.Module, dt: float = DEFAULT_DT):
    """A ``nir.NIRGraph`` of a robustsnn SNN with a sequential body; see the module docstring.

    Args:
        model: a robustsnn SNN (``robustsnn.models.build(..., kind="snn")`` or a loaded checkpoint).
        dt: the Euler step that maps our discrete leak to NIR's time constants.
    Returns:
        The graph; ``graph.metadata`` holds ``mean``, ``std``, ``time_steps`` and ``dt``.
    """
    nir = _nir()
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "kind", None) != "snn":
        raise UsageError("NIR export needs a robustsnn SNN (a model built with kind='snn')")
    if cfg.encoding != "direct":
        raise UsageError("NIR export needs direct encoding; a Poisson encoder has no NIR node")
    mods = _flat_modules(model.body)
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o: shapes.__setitem__(id(mod), (tuple(i[0].shape[2:]), tuple(o.shape[2:]))))
             for m in mods]
    try:
        with torch.no_grad():
            model.forward_steps(torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size))
    finally:
        for h in hooks:
            h.remove()
    nodes, k, T = [], 0, cfg.time_steps
    first_in = shapes[id(mods[0])][0]
    while k < len(mods):
        m, name = mods[k], f"layer{k}"
        nxt = mods[k + 1] if k + 1 < len(mods) else None
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = _weight(m)
            b = m.bias.detach() if m.bias is not None else torch.zeros(w.shape[0])
            if isinstance(nxt, (nn.BatchNorm2d, nn.BatchNorm1d)):
                w, b = _fold_bn(w, b, nxt)
                k += 1
            if isinstance(m, nn.Conv2d):
                if m.padding_mode != "zeros":
                    raise UsageError(f"{name}: padding_mode={m.padding_mode!r} has no NIR form")
                nodes.append(nir.Conv2d(input_shape=shapes[id(m)][0][1:], weight=_np(w), stride=m.stride,
                                        padding=m.padding, dilation=m.dilation, groups=m.groups, bias=_np(b)))
            else:
                nodes.append(nir.Affine(weight=_np(w), bias=_np(b)))
        elif isinstance(m, nn.AvgPool2d):
            pair = lambda v: np.array(v if isinstance(v, (tuple, list)) else (v, v))  # noqa: E731
            if m.ceil_mode or not m.count_include_pad and m.padding:
                raise UsageError(f"{name}: AvgPool2d with ceil_mode or count_include_pad=False has no NIR form")
            nodes.append(nir.AvgPool2d(kernel_size=pair(m.kernel_size), stride=pair(m.stride or m.kernel_size),
                                       padding=pair(m.padding)))
        elif isinstance(m, L.Flatten):
            nodes.append(nir.Flatten(input_type={"input": np.array(shapes[id(m)][0])}, start_dim=0, end_dim=-1))
        elif isinstance(m, SpikingNeuron):
            kind, params = _neuron_params(m, shapes[id(m)][0], T, dt, name)
            nodes.append(getattr(nir, kind)(**params))
        elif isinstance(m, nn.Dropout) or (isinstance(m, nn.Identity)):
            pass
        else:
            raise UsageError(f"{name}: {type(m).__name__} has no NIR export (supported: conv, linear, batch norm, "
                             "average pooling, flatten, IF/LIF/DLIF)")
        k += 1
    out_shape = shapes[id(mods[-1])][1]
    graph = nir.NIRGraph.from_list(nir.Input(input_type={"input": np.array(first_in)}), *nodes,
                                   nir.Output(output_type={"output": np.array(out_shape)}))
    graph.metadata = {"source": "robustsnn", "mean": list(cfg.mean), "std": list(cfg.std), "time_steps": T, "dt": dt}
    return graph


class NIRNetwork(nn.Module):
    """A chain read from NIR as robustsnn layers: pixels [B, C, H, W] -> normalise -> T steps -> mean logits."""

    def __init__(self, body: nn.Sequential, time_steps: int, mean, std):
        super().__init__()
        self.body, self.time_steps = body, int(time_steps)
        self.normalize = L.Normalize(tuple(mean), tuple(std))

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step outputs [T, B, K] of the graph's last layer."""
        return self.body(encode(self.normalize(x), self.time_steps, "direct"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return readout(self.forward_steps(x))


def _uniform(arr, what: str, name: str) -> float:
    a = np.asarray(arr, dtype=float)
    if a.size and not np.allclose(a, a.flat[0]):
        raise UsageError(f"{name}: per-neuron {what} values differ; robustsnn layers share one {what}")
    return float(a.flat[0])


def from_nir(graph, time_steps: int | None = None, dt: float | None = None, mean=None, std=None) -> NIRNetwork:
    """A :class:`NIRNetwork` from a chain-shaped ``nir.NIRGraph`` (Input -> ... -> Output).

    ``time_steps``, ``dt``, ``mean``, ``std`` default to the graph's metadata (our exports
    carry them), else T = 4, dt = 1e-4, no normalisation.
    """
    nir = _nir()
    meta = dict(getattr(graph, "metadata", {}) or {})
    T = int(time_steps or meta.get("time_steps", 4))
    dt = float(dt or meta.get("dt", DEFAULT_DT))
    order, nxt = [], {a: b for a, b in graph.edges}
    if len(nxt) != len(graph.edges):
        raise UsageError("from_nir reads chains only; this graph branches")
    start = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    if len(start) != 1:
        raise UsageError("from_nir needs exactly one Input node")
    key = start[0]
    while key in nxt:
        key = nxt[key]
        order.append(key)
    layers: list[nn.Module] = []
    channels = None
    for key in order:
        n = graph.nodes[key]
        if isinstance(n, nir.Output):
            break
        if isinstance(n, nir.Conv2d):
            w = torch.tensor(n.weight, dtype=torch.float32)
            conv = L.Conv2d(w.shape[1] * n.groups, w.shape[0], tuple(w.shape[2:]), stride=n.stride, padding=n.padding,
                            dilation=n.dilation, groups=n.groups, bias=True)
            with torch.no_grad():
                conv.weight.copy_(w)
                conv.bias.copy_(torch.as_tensor(n.bias, dtype=torch.float32))
            layers.append(conv)
            channels = w.shape[0]
        elif isinstance(n, (nir.Affine, nir.Linear)):
            w = torch.tensor(n.weight, dtype=torch.float32)
            lin = L.Linear(w.shape[1], w.shape[0], bias=isinstance(n, nir.Affine))
            with torch.no_grad():
                lin.weight.copy_(w)
                if isinstance(n, nir.Affine):
                    lin.bias.copy_(torch.as_tensor(n.bias, dtype=torch.float32))
            layers.append(lin)
        elif isinstance(n, nir.AvgPool2d):
            layers.append(L.AvgPool2d(tuple(int(v) for v in n.kernel_size), tuple(int(v) for v in n.stride),
                                      tuple(int(v) for v in n.padding)))
        elif isinstance(n, nir.Flatten):
            layers.append(L.Flatten())
        elif isinstance(n, (nir.IF, nir.LIF)):
            if not np.allclose(n.v_reset, 0.0) or (isinstance(n, nir.LIF) and not np.allclose(n.v_leak, 0.0)):
                raise UsageError(f"{key}: v_reset and v_leak must be 0 for robustsnn neurons")
            theta, r = _uniform(n.v_threshold, "threshold", key), _uniform(n.r, "r", key)
            if isinstance(n, nir.IF):
                lam, gain = 1.0, r
            else:
                tau = _uniform(n.tau, "tau", key)
                lam, gain = 1.0 - dt / tau, r * dt / tau
            kind = "if" if lam == 1.0 else ("lif" if np.isclose(gain, 1.0) else "dlif")
            neuron = SpikingNeuron(NeuronConfig(kind, leak=min(max(lam, 0.0), 1.0), threshold=theta,
                                                threshold_floor=min(0.03, theta)), T)
            if kind == "dlif":
                with torch.no_grad():
                    neuron.gain.fill_(gain)
            elif kind == "if" and not np.isclose(gain, 1.0):
                raise UsageError(f"{key}: an IF neuron with r = {gain:g} has no robustsnn form (r must be 1)")
            layers.append(neuron)
        else:
            raise UsageError(f"{key}: NIR node {type(n).__name__} has no robustsnn layer")
    mean = mean if mean is not None else meta.get("mean", (0.0,) * (channels or 1))
    std = std if std is not None else meta.get("std", (1.0,) * len(mean))
    return NIRNetwork(nn.Sequential(*layers), T, mean, std).eval()
