"""Fixed binary masks on weights, stored as ``weight_mask`` buffers next to ``weight``.

A masked layer keeps its parameter name (``conv.weight``) so the ANN and SNN
twins still share keys; the mask is a buffer saved in the checkpoint.
:func:`apply_masks` zeroes pruned weights in place; the trainer calls it after
every optimiser step, so a pruned weight is exactly 0 at all times.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["set_mask", "masked_modules", "apply_masks", "sparsity_report"]


def set_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Attach (or replace) ``module.weight_mask`` (same shape as weight, {0,1}) and apply it."""
    if mask.shape != module.weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(module.weight.shape)}")
    mask = mask.to(dtype=module.weight.dtype, device=module.weight.device)
    if hasattr(module, "weight_mask") and "weight_mask" in module._buffers:
        module.weight_mask.copy_(mask)
    else:
        module.register_buffer("weight_mask", mask.clone())
    with torch.no_grad():
        module.weight.mul_(module.weight_mask)


def masked_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module carrying a ``weight_mask`` buffer."""
    return [(n, m) for n, m in model.named_modules() if "weight_mask" in m._buffers]


@torch.no_grad()
def apply_masks(model: nn.Module) -> None:
    """Zero every masked weight of ``model`` in place."""
    for _, m in masked_modules(model):
        m.weight.mul_(m.weight_mask)


def sparsity_report(model: nn.Module) -> list[dict]:
    """Per prunable layer (conv/linear weights): name, total and non-zero weights, sparsity."""
    rows = []
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor) or w.dim() < 2:
            continue
        nz = int((w != 0).sum())
        rows.append({"layer": name, "weights": w.numel(), "nonzero": nz, "sparsity": 1 - nz / w.numel(),
                     "masked": "weight_mask" in m._buffers})
    return rows
