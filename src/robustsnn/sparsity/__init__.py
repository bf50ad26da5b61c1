"""Sparse connectivity: masks, pruning (LWM, HYDRA, random) and sparse storage."""

from .masks import apply_masks, masked_modules, set_mask, sparsity_report

__all__ = ["apply_masks", "masked_modules", "set_mask", "sparsity_report"]
