r"""Operation counts: MACs of the ANN twin, synaptic operations (SOPs) of the SNN.

Counting rules (per image; DESIGN.md section 8):

* **Exact triples.** A convolution or linear layer costs one operation per
  (input element, weight, output element) triple that the layer actually
  computes, skipping weights that are exactly zero (pruned). With the fan-out
  map :math:`F_l[p]` = number of non-zero weights that input position
  :math:`p` of layer :math:`l` reaches (zero padding reaches nothing; stride,
  dilation, groups and padding mode are taken from the layer),

  .. math::

      \mathrm{MAC}_l = \sum_p F_l[p], \qquad
      \mathrm{SOP}_l = \sum_t \sum_p 1[x_l[t, p] \ne 0]\, F_l[p].

  This is the same number as :math:`\sum_t \sum \mathrm{conv}(x_l[t] \ne 0,\
  W_l \ne 0)` (every output position counts the non-zero weights whose input
  spiked), computed without a second convolution per step. Because padding is
  not counted, an SNN whose every input fires at every step has exactly
  :math:`T \cdot \mathrm{MAC}_l` SOPs. (Tools such as thop count
  :math:`H_{out} W_{out} \cdot |W|`, a few percent more for padded 3x3 convs.)
* **ANN twin: all MACs**, dense over its inputs (activation zeros are not
  skipped), sparse or dense over the weights (``ann_macs`` counts non-zero
  weights only, ``ann_macs_dense`` every weight). Its layer shapes are those
  of the SNN, so it need not be run.
* **SNN, input kinds.** Each conv/linear input is classified per forward pass:

  - ``spikes``: all values in {0, 1} (spikes, or Poisson-coded pixels):
    one accumulate (AC) per non-zero weight reached, SOPs above.
  - ``pooled``: downstream of a spiking layer, values in [0, 1] but not
    binary (average pooling of spikes). A non-zero input still costs one AC
    per non-zero weight reached (an accumulate of a scaled spike; the common
    SNN convention), i.e. counted as SOPs with :math:`1[x \ne 0]`.
  - ``analog``: anything else (the first layer under direct encoding): MACs,
    counted **once** when the input is identical at every step (direct
    encoding; the layer's output is then computed once and reused) and at
    every step otherwise; dense over its inputs, like the ANN.

* **SNN vs dense SNN.** ``sops_dense`` / ``macs_dense`` count the same
  spikes with every weight treated as non-zero (``dense=True``): the cost of
  the same network stored and run without exploiting its sparsity.
* **Not counted**: batch norm (folded into the preceding convolution's weights
  and bias at inference), biases, pooling additions, membrane updates.

Only :class:`torch.nn.Conv2d` and :class:`torch.nn.Linear` modules (and their
:mod:`robustsnn.layers` subclasses) are counted.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from ..neurons import SpikingNeuron
from .recording import record

__all__ = ["OpRecorder", "count_ops", "fanout", "INPUT_KINDS"]

INPUT_KINDS = ("spikes", "pooled", "analog")
_PRIORITY = {k: i for i, k in enumerate(INPUT_KINDS)}


def _weight_pattern(module: nn.Module, dense: bool) -> torch.Tensor:
    w = module.weight.detach()
    return torch.ones_like(w, dtype=torch.float32) if dense else (w != 0).to(torch.float32)


def fanout(module: nn.Module, sample_shape: tuple[int, ...], dense: bool = False) -> torch.Tensor:
    """Number of non-zero weights each input element of one sample reaches.

    Args:
        module: an ``nn.Conv2d`` or ``nn.Linear``.
        sample_shape: shape of one input sample, [C, H, W] for a conv, [..., F] for a linear.
        dense: count every weight (as if nothing were pruned).
    Returns:
        float tensor of ``sample_shape`` holding integers; its sum is the layer's MACs per sample.
    """
    pattern = _weight_pattern(module, dense)
    if isinstance(module, nn.Conv2d):
        with torch.enable_grad():
            z = torch.ones(1, *sample_shape, dtype=torch.float32, device=pattern.device, requires_grad=True)
            nn.Conv2d._conv_forward(module, z, pattern, None).sum().backward()
        return z.grad[0]
    if isinstance(module, nn.Linear):
        return pattern.sum(0).expand(sample_shape).clone()
    raise TypeError(f"cannot count operations of {type(module).__name__}")


class _LayerStats:
    __slots__ = ("module", "kind", "sample_shape", "counts", "samples", "steps", "constant")

    def __init__(self, module):
        self.module = module
        self.kind = None
        self.sample_shape = None
        self.counts = None  # non-zero inputs summed over the batch, [T, *sample_shape] float64
        self.samples = 0
        self.steps = 0
        self.constant = True


class OpRecorder:
    """Forward hooks on every conv/linear layer that accumulate where its inputs are non-zero.

    Also hooks every :class:`SpikingNeuron` to know whether a layer runs downstream of
    spikes within the current forward pass. Use with
    :func:`~robustsnn.metrics.recording.record`, then call :meth:`report`.
    """

    def __init__(self) -> None:
        self.layers: dict[str, _LayerStats] = {}
        self.snn = False
        self._after_spikes = False
        self._amplitude = 1.0

    def attach(self, model: nn.Module) -> list:
        handles = []
        self.snn = any(isinstance(m, SpikingNeuron) for m in model.modules())
        for name, module in model.named_modules():
            if isinstance(module, SpikingNeuron):
                handles.append(module.register_forward_hook(self._neuron_hook))
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                self.layers[name] = _LayerStats(module)
                handles.append(module.register_forward_hook(self._layer_hook(name)))
        return handles

    def start_batch(self, batch_size: int) -> None:
        self._after_spikes = False
        self._amplitude = 1.0

    def _neuron_hook(self, module, inputs, output):
        self._after_spikes = True
        self._amplitude = max(self._amplitude, module.spike_scale())

    def _classify(self, x: torch.Tensor) -> str:
        if not self.snn:
            return "analog"
        if bool(((x == 0) | (x == 1)).all()):
            return "spikes"
        if self._after_spikes and self._amplitude != 1.0:  # theta * s events
            nonzero = x[x != 0]
            if nonzero.numel() and bool((nonzero == nonzero[0]).all()) and float(nonzero[0]) > 0:
                return "spikes"
        if self._after_spikes and bool(((x >= 0) & (x <= self._amplitude)).all()):
            return "pooled"
        return "analog"

    def _layer_hook(self, name: str):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            timed = self.snn and (x.dim() == 5 if isinstance(module, nn.Conv2d) else x.dim() >= 3)
            if not timed:
                x = x.unsqueeze(0)  # [1, B, ...]
            st = self.layers[name]
            shape = tuple(x.shape[2:])
            if st.sample_shape is not None and (shape != st.sample_shape or x.shape[0] != st.steps):
                raise UsageError(
                    f"layer {name!r} saw inputs of shape {(x.shape[0], '*', *shape)} after {(st.steps, '*', *st.sample_shape)}; "
                    "operation counts need a fixed input size and number of steps"
                )
            kind = self._classify(x)
            st.kind = kind if st.kind is None or _PRIORITY[kind] > _PRIORITY[st.kind] else st.kind
            st.sample_shape, st.steps = shape, x.shape[0]
            if st.constant and x.shape[0] > 1:
                st.constant = bool((x == x[:1]).all())
            nz = (x != 0).sum(1, dtype=torch.float64)
            st.counts = nz if st.counts is None else st.counts + nz
            st.samples += x.shape[1]

        return hook

    def report(self) -> dict:
        """Per-layer and total operation counts per image (JSON-serialisable).

        Each layer row: ``layer``, ``type`` (conv/linear), ``input`` (spikes / pooled /
        analog), ``input_shape``, ``weights``, ``nonzero``, ``ann_macs``,
        ``ann_macs_dense``; for an SNN also ``steps``, ``input_rate`` (share of non-zero
        inputs per step; None for analog), ``macs``, ``macs_dense``, ``sops``,
        ``sops_dense`` and ``sops_per_step`` [T]. ``totals`` sums them for ``snn``,
        ``snn_dense``, ``ann`` and ``ann_dense``.
        """
        rows = []
        tot = {"snn": {"macs": 0.0, "sops": 0.0}, "snn_dense": {"macs": 0.0, "sops": 0.0},
               "ann": {"macs": 0.0, "sops": 0.0}, "ann_dense": {"macs": 0.0, "sops": 0.0}}
        steps = 1
        for name, st in self.layers.items():
            if st.counts is None:
                continue
            m = st.module
            f_s, f_d = fanout(m, st.sample_shape), fanout(m, st.sample_shape, dense=True)
            mac_s, mac_d = float(f_s.sum(dtype=torch.float64)), float(f_d.sum(dtype=torch.float64))
            w = m.weight.detach()
            row = {
                "layer": name,
                "type": "conv" if isinstance(m, nn.Conv2d) else "linear",
                "input": st.kind,
                "input_shape": list(st.sample_shape),
                "weights": w.numel(),
                "nonzero": int((w != 0).sum()),
                "ann_macs": mac_s,
                "ann_macs_dense": mac_d,
            }
            tot["ann"]["macs"] += mac_s
            tot["ann_dense"]["macs"] += mac_d
            if self.snn:
                T, M = st.steps, st.samples
                steps = max(steps, T)
                if st.kind == "analog":
                    n_steps = 1 if st.constant else T
                    macs, macs_d = n_steps * mac_s, n_steps * mac_d
                    per_step, sops, sops_d, rate = [0.0] * T, 0.0, 0.0, None
                else:
                    dims = tuple(range(1, st.counts.dim()))
                    per_step_t = (st.counts * f_s.to(torch.float64)).sum(dims) / M
                    per_step = [float(v) for v in per_step_t]
                    sops = float(per_step_t.sum())
                    sops_d = float((st.counts * f_d.to(torch.float64)).sum() / M)
                    macs = macs_d = 0.0
                    rate = float(st.counts.sum() / (M * T * f_s.numel()))
                row.update(steps=T, input_rate=rate, macs=macs, macs_dense=macs_d, sops=sops, sops_dense=sops_d,
                           sops_per_step=per_step)
                tot["snn"]["macs"] += macs
                tot["snn"]["sops"] += sops
                tot["snn_dense"]["macs"] += macs_d
                tot["snn_dense"]["sops"] += sops_d
            rows.append(row)
        if not self.snn:
            del tot["snn"], tot["snn_dense"]
        return {"kind": "snn" if self.snn else "ann", "time_steps": steps if self.snn else None,
                "layers": rows, "totals": tot}


def count_ops(model: nn.Module, data, *, n: int | None = None, batch_size: int = 256) -> dict:
    """MACs / SOPs per image of ``model`` (SNN or ANN) over ``data``, in one forward pass.

    Args:
        model: an SNN or ANN; conv/linear layers are counted (see the module docstring).
        data: ArrayDataset, tensor [N, C, H, W] in [0, 1], or iterable of ``(x, y)`` batches.
        n: use at most this many images.
        batch_size: batch size for a data set or tensor.
    Returns:
        :meth:`OpRecorder.report` plus ``"images"``; all counts are averages per image.
    """
    rec = OpRecorder()
    images = record(model, data, [rec], n=n, batch_size=batch_size)
    if not rec.layers:
        raise UsageError("the model has no Conv2d / Linear layers to count")
    return {"images": images, **rec.report()}
