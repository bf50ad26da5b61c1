r"""One-shot pruning to a target sparsity: least weight magnitude (LWM) and random.

Prunable weights are the ``weight`` of every convolution and linear layer
(tensors with ``dim >= 2``), listed in forward (registration) order by
:func:`prunable_layers`. By default *all* of them are pruned, the first
convolution (the encoder of a direct-coded SNN) and the last linear layer (the
readout) included, as in HYDRA (Sehwag et al. 2020) and the sparse conversion
paper (Schmolli et al. 2025); ``first=False`` / ``last=False`` keep those dense.

A layer with :math:`n` weights pruned to sparsity :math:`s` keeps exactly

.. math::  k = \max(1,\ \mathrm{round}((1 - s)\, n))

weights (at least one, so that no layer is cut off). The result is a fixed
binary mask per layer, attached with :func:`robustsnn.sparsity.set_mask` (a
``weight_mask`` buffer that the trainer re-applies after every optimiser step
and that checkpoints store), and the pruned weights are set to exactly 0.

* :func:`prune_lwm` with ``scope="layer"``: each layer keeps its :math:`k` largest
  :math:`|w|` (every layer ends at the same sparsity).
* :func:`prune_lwm` with ``scope="global"``: one magnitude threshold over all prunable
  weights; the :math:`K = \mathrm{round}((1-s) N)` largest :math:`|w|` of the whole
  model survive (:math:`N` = all prunable weights), so layers end at different
  sparsities (small, important layers stay denser; a layer may lose all its weights).
* :func:`prune_random`: each layer keeps :math:`k` weights drawn uniformly (baseline).

Pruning composes with masks already present: weights already pruned rank below
every surviving weight, so they are pruned first.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from .masks import set_mask

__all__ = ["prunable_layers", "keep_count", "prune_lwm", "prune_random", "topk_mask", "check_sparsity"]

_PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def check_sparsity(sparsity: float) -> float:
    """``sparsity`` as a float in [0, 1); a UsageError otherwise."""
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise UsageError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not 0.0 <= s < 1.0:
        hint = f"; did you mean {s / 100:g}?" if 1.0 < s < 100.0 else ""
        raise UsageError(f"sparsity must be in [0, 1) (fraction of weights removed), got {s:g}{hint}")
    return s


def prunable_layers(model: nn.Module, *, first: bool = True, last: bool = True) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every conv / linear layer whose weight has ``dim >= 2``, in forward order.

    Args:
        model: any module (a TwinModel of either kind).
        first: include the first such layer (the input convolution / encoder).
        last: include the last such layer (the non-spiking readout).
    """
    layers = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, _PRUNABLE_TYPES) and isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2
    ]
    if not layers:
        raise UsageError("the model has no convolution or linear weights to prune")
    if not last:
        layers = layers[:-1]
    if not first:
        layers = layers[1:]
    return layers


def keep_count(numel: int, sparsity: float) -> int:
    """Weights a layer of ``numel`` weights keeps at ``sparsity``: ``max(1, round((1 - s) * numel))``."""
    return max(1, min(numel, int(round((1.0 - sparsity) * numel))))


def topk_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """{0, 1} mask (dtype of ``score``) with ones at exactly the ``k`` largest entries of ``score``."""
    flat = score.detach().flatten()
    mask = torch.zeros_like(flat)
    if k > 0:
        mask[flat.topk(k, sorted=False).indices] = 1.0
    return mask.view_as(score)


def _magnitude(module: nn.Module) -> torch.Tensor:
    """|w| with already-pruned entries ranked last (-1)."""
    score = module.weight.detach().abs().float()
    old = module._buffers.get("weight_mask")
    if old is not None:
        score = torch.where(old.bool(), score, torch.full_like(score, -1.0))
    return score


@torch.no_grad()
def prune_lwm(
    model: nn.Module, sparsity: float, scope: str = "layer", *, first: bool = True, last: bool = True
) -> dict[str, float]:
    """Least-weight-magnitude pruning, one shot, in place.

    Args:
        model: the model to prune (its masks are set with :func:`set_mask`).
        sparsity: fraction of the prunable weights to remove, in [0, 1) (0.9 keeps 10 %).
        scope: ``"layer"`` (every layer pruned to ``sparsity``, keeping its largest
            :math:`|w|`) or ``"global"`` (one threshold over all prunable weights).
        first, last: prune the first conv / the last linear layer too (default: yes).
    Returns:
        {layer name: sparsity reached} for every pruned layer.
    """
    s = check_sparsity(sparsity)
    layers = prunable_layers(model, first=first, last=last)
    if scope == "layer":
        masks = {n: topk_mask(_magnitude(m), keep_count(m.weight.numel(), s)) for n, m in layers}
    elif scope == "global":
        scores = [_magnitude(m) for _, m in layers]
        flat = torch.cat([sc.flatten() for sc in scores])
        keep = keep_count(flat.numel(), s)
        chosen = topk_mask(flat, keep)
        masks, offset = {}, 0
        for (n, _), sc in zip(layers, scores):
            masks[n] = chosen[offset : offset + sc.numel()].view_as(sc)
            offset += sc.numel()
    else:
        raise UsageError(f"scope must be 'layer' or 'global', got {scope!r}")
    return _set_masks(layers, masks)


@torch.no_grad()
def prune_random(
    model: nn.Module,
    sparsity: float,
    generator: torch.Generator | None = None,
    *,
    first: bool = True,
    last: bool = True,
) -> dict[str, float]:
    """Random pruning (the baseline), layer-wise uniform, in place.

    Each layer keeps exactly :math:`k` weights chosen uniformly at random among those
    not yet pruned (drawn with ``generator``, so a seeded generator gives the same masks).

    Args:
        model: the model to prune.
        sparsity: fraction of weights to remove per layer, in [0, 1).
        generator: CPU ``torch.Generator`` (None: torch's global RNG).
        first, last: prune the first conv / the last linear layer too (default: yes).
    Returns:
        {layer name: sparsity reached} for every pruned layer.
    """
    s = check_sparsity(sparsity)
    layers = prunable_layers(model, first=first, last=last)
    masks = {}
    for n, m in layers:
        noise = torch.rand(m.weight.shape, generator=generator)
        old = m._buffers.get("weight_mask")
        if old is not None:
            noise = torch.where(old.detach().cpu().bool(), noise, torch.full_like(noise, -1.0))
        masks[n] = topk_mask(noise, keep_count(m.weight.numel(), s))
    return _set_masks(layers, masks)


def _set_masks(layers: list[tuple[str, nn.Module]], masks: dict[str, torch.Tensor]) -> dict[str, float]:
    reached = {}
    for n, m in layers:
        mask = masks[n]
        set_mask(m, mask)
        reached[n] = 1.0 - float(mask.sum()) / mask.numel()
    return reached
