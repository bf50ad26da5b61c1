r"""Spike rates per spiking layer and per time step, from one forward pass.

For a spiking layer with :math:`N` neurons, run on :math:`M` images for
:math:`T` steps, with :math:`s_{b,i}[t] \in \{0, 1\}`:

.. math::

    r[t] = \frac{1}{M N} \sum_{b,i} s_{b,i}[t], \qquad
    r = \frac{1}{T} \sum_t r[t] \quad \text{(spikes per neuron per step)}

The whole network's rate is the total spike count over the total number of
neuron-steps, so large layers weigh more. Rates are recorded with forward
hooks on :class:`robustsnn.neurons.SpikingNeuron` modules; the model itself is
not modified (see :func:`robustsnn.metrics.recording.record`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from ..neurons import SpikingNeuron
from .recording import record

__all__ = ["SpikeRecorder", "spike_rates"]


class SpikeRecorder:
    """Forward hooks that count the spikes of every :class:`SpikingNeuron` of a model.

    After :func:`~robustsnn.metrics.recording.record`, :meth:`report` gives the rates.
    A neuron called several times per forward pass accumulates over all calls.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.counts: dict[str, torch.Tensor] = {}  # spikes summed over batch and neurons, per step [T]
        self.neurons: dict[str, int] = {}  # neurons per image in the layer
        self.samples: dict[str, int] = {}  # images (x calls) seen by the layer

    def attach(self, model: nn.Module) -> list:
        handles = []
        for name, module in model.named_modules():
            if isinstance(module, SpikingNeuron):
                self.names.append(name)
                handles.append(module.register_forward_hook(self._hook(name)))
        return handles

    def start_batch(self, batch_size: int) -> None:
        pass

    def _hook(self, name: str):
        def hook(module, inputs, output):
            s = output.detach()
            scale = module.spike_scale()
            if scale != 1.0:  # spike_amplitude="threshold": events of value theta
                s = s / scale
            if module.grad_mode.mode == "ann" or not bool(((s == 0) | (s == 1)).all()):
                raise UsageError(
                    f"spiking layer {name!r} emitted non-binary values (is the ANN-proxy estimator active?); "
                    "record spike rates outside `estimator(model, 'ann')`"
                )
            per_step = s.flatten(1).sum(1, dtype=torch.float64)  # [T]
            prev = self.counts.get(name)
            if prev is not None and prev.shape != per_step.shape:
                raise UsageError(f"spiking layer {name!r} ran with {per_step.shape[0]} steps, earlier {prev.shape[0]}")
            self.counts[name] = per_step if prev is None else prev + per_step
            self.neurons[name] = s[0, 0].numel()
            self.samples[name] = self.samples.get(name, 0) + s.shape[1]

        return hook

    def report(self) -> dict:
        """Per-layer and whole-network rates (JSON-serialisable).

        Returns:
            ``{"layers": [{"layer", "neurons", "steps", "rate", "rate_per_step",
            "spikes_per_image"}], "rate": float, "rate_per_step": [T],
            "spikes_per_image": float}``; layers never called are left out.
        """
        layers = []
        total_spikes, total_neuron_steps = 0.0, 0.0
        step_spikes, step_neurons = None, 0.0
        for name in self.names:
            if name not in self.counts:
                continue
            counts, n, m = self.counts[name], self.neurons[name], self.samples[name]
            T = counts.shape[0]
            layers.append(
                {
                    "layer": name,
                    "neurons": n,
                    "steps": T,
                    "rate": float(counts.sum() / (n * m * T)),
                    "rate_per_step": [float(c / (n * m)) for c in counts],
                    "spikes_per_image": float(counts.sum() / m),
                }
            )
            total_spikes += float(counts.sum()) / m
            total_neuron_steps += n * T
            if step_spikes is None or step_spikes.shape == counts.shape:
                step_spikes = counts / m if step_spikes is None else step_spikes + counts / m
                step_neurons += n
        return {
            "layers": layers,
            "rate": total_spikes / total_neuron_steps if total_neuron_steps else 0.0,
            "rate_per_step": [float(c / step_neurons) for c in step_spikes] if step_spikes is not None else [],
            "spikes_per_image": total_spikes,
        }


def spike_rates(model: nn.Module, data, *, n: int | None = None, batch_size: int = 256) -> dict:
    """Spike rates of every spiking layer of ``model`` over ``data`` (one forward pass).

    Args:
        model: an SNN (any module containing :class:`SpikingNeuron` layers).
        data: ArrayDataset, tensor [N, C, H, W] in [0, 1], or iterable of ``(x, y)`` batches.
        n: use at most this many images.
        batch_size: batch size for a data set or tensor.
    Returns:
        :meth:`SpikeRecorder.report` plus ``"images"``.
    """
    rec = SpikeRecorder()
    images = record(model, data, [rec], n=n, batch_size=batch_size)
    if not rec.names:
        raise UsageError("the model has no spiking layers (an ANN?); spike rates need an SNN")
    return {"images": images, **rec.report()}
