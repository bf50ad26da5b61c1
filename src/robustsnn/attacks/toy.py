"""Tiny trained models and small data for the evaluation's tests and benchmarks.

Everything is deterministic and cached per process, so several test files share
one trained model. Real Fashion-MNIST (the first images of each split) when it
is installed, otherwise a synthetic separable 10-class task of the same shape.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["toy_data", "trained_toy_model", "GradientMaskedModel", "sharp_potential_model"]


@functools.lru_cache(maxsize=8)
def toy_data(split: str = "train", n: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """(x float [n, 1, 28, 28] in [0, 1], y int64 [n]): Fashion-MNIST's first ``n``, or synthetic."""
    try:
        from ..data import load_dataset

        ds = load_dataset("fashion-mnist", split, download=False)
        return ds.images[:n].float().div(255.0), ds.labels[:n].clone()
    except Exception:  # no data on this machine: synthetic, linearly separable classes
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        proto = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(42))
        y = torch.randint(0, 10, (n,), generator=g)
        x = (0.6 * proto[y] + 0.4 * torch.rand(n, 1, 28, 28, generator=g)).clamp(0, 1)
        return x, y


@functools.lru_cache(maxsize=8)
def trained_toy_model(
    kind: str = "snn", epochs: int = 2, n: int = 3000, time_steps: int = 2, width: float = 0.25, encoding: str = "direct"
) -> nn.Module:
    """A small CNN twin (``kind`` "snn" or "ann") trained naturally on ``n`` images; eval mode."""
    from ..batchnorm import fast_batchnorm
    from ..models import build

    torch.manual_seed(0)
    model = build("cnn", kind=kind, time_steps=time_steps, width=width, encoding=encoding,
                  mean=(0.2860,), std=(0.3530,))
    x, y = toy_data("train", n)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    # torch's batch norm: the fixture's weights stay the ones the tests were written against, whatever
    # faster kernel (equal to rounding, robustsnn.batchnorm) training uses elsewhere
    with fast_batchnorm(False):
        for _ in range(epochs):
            for idx in torch.randperm(n, generator=g).split(64):
                opt.zero_grad()
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()


class GradientMaskedModel(nn.Module):
    """A model that masks its gradient: pixels pass a hard rounding step (zero derivative).

    ``forward(x) = model(round(x * levels) / levels)``: the prediction is the wrapped
    model's on a quantised image, and the input gradient is exactly 0 everywhere.
    Gradient attacks see nothing; black-box attacks still work. Diagnostics must flag it.
    """

    def __init__(self, model: nn.Module, levels: int = 255):
        super().__init__()
        self.model = model
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * self.levels) / self.levels)


def sharp_potential_model(model: nn.Module, factor: float = 64.0) -> nn.Module:
    """A copy of an SNN whose spiking layers see ``factor`` x the current and ``factor`` x the threshold.

    The spikes, hence the predictions, are those of ``model`` exactly (``factor`` a power of
    two: the scaling is exact in floating point), but every membrane potential lies
    ``factor`` x farther from its threshold, so a fixed-width surrogate (triangle, gamma = 1)
    sees almost no neuron inside its support and its input gradient nearly vanishes: the
    gradient masking that adaptive estimators (ASSG, PDSG, HART's and RGA's threshold
    units) must see through.
    """
    import copy

    from ..neurons import SpikingNeuron

    sharp = copy.deepcopy(model)
    for m in sharp.modules():
        if isinstance(m, SpikingNeuron):
            with torch.no_grad():
                m.threshold.mul_(factor)
            m.config = m.config.with_(threshold_floor=m.config.threshold_floor * factor)
            m.register_forward_pre_hook(lambda _m, args, f=float(factor): (args[0] * f, *args[1:]))
    return sharp.eval()
