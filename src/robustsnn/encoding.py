"""Input encoders (images -> T steps) and the readout.

* direct: repeat the (normalised) analog image at every step; the first
  convolution acts as the encoder. Deterministic.
* poisson: at every step each pixel fires with probability equal to its
  intensity in [0, 1]. Stochastic: attacks need expectation over
  transformation. The backward pass is straight-through (d spike / d x = 1).
"""

from __future__ import annotations

import torch

from .distributed import shared_draw, sharing
from .timerepeat import repeat_over_time

__all__ = ["ENCODINGS", "direct_encode", "poisson_encode", "encode", "readout"]

ENCODINGS = ("direct", "poisson")


def direct_encode(x: torch.Tensor, time_steps: int) -> torch.Tensor:
    """[B, ...] -> [T, B, ...] by repetition (a broadcast view, no copy; the layers take ``x`` itself
    from it, see :mod:`robustsnn.timerepeat`)."""
    return repeat_over_time(x, time_steps)


def poisson_encode(x: torch.Tensor, time_steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, ...] pixel intensities in [0, 1] -> Bernoulli spikes [T, B, ...].

    The value is the spike train; the gradient with respect to ``x`` is that of the
    identity at every step (straight-through estimator). Under DDP training
    (:func:`robustsnn.distributed.batch_share`) each rank takes its rows of one uniform
    draw for the whole global batch, so ranks never repeat each other's spike noise.
    """
    rep = direct_encode(x, time_steps)
    p = rep.detach().clamp(0, 1)
    if generator is None and sharing(x.shape[0]):
        u = shared_draw(lambda m: torch.rand((m, time_steps, *x.shape[1:]), dtype=x.dtype, device=x.device), x.shape[0])
        spikes = (u.transpose(0, 1) < p).to(rep.dtype)
    else:
        spikes = torch.bernoulli(p, generator=generator)
    return rep + (spikes - rep).detach()


def encode(x: torch.Tensor, time_steps: int, encoding: str = "direct") -> torch.Tensor:
    """Encode images [B, ...] to [T, B, ...] with the named encoder."""
    if encoding == "direct":
        return direct_encode(x, time_steps)
    if encoding == "poisson":
        return poisson_encode(x, time_steps)
    raise ValueError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")


def readout(step_logits: torch.Tensor) -> torch.Tensor:
    """Mean over time of the non-spiking last layer: [T, B, K] -> [B, K]."""
    return step_logits.mean(0)
