"""Sparse connectivity: masks, pruning (LWM, HYDRA, random) and sparse storage."""

from .masks import apply_masks, masked_modules, set_mask, sparsity_report
from .storage import export_sparse, load_sparse, pack_state_dict, plan_state_dict, unpack_state_dict

__all__ = [
    "apply_masks", "masked_modules", "set_mask", "sparsity_report",
    "export_sparse", "load_sparse", "pack_state_dict", "plan_state_dict", "unpack_state_dict",
]
