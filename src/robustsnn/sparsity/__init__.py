"""Sparse connectivity: masks, pruning (LWM, HYDRA, random) and sparse storage."""

from .masks import apply_masks, masked_modules, set_mask, sparsity_report
from .hydra import attach_scores, finalize_scores, prune_hydra
from .prune import keep_count, prunable_layers, prune_lwm, prune_random
from .storage import export_sparse, load_sparse, pack_state_dict, plan_state_dict, unpack_state_dict

__all__ = [
    "apply_masks", "masked_modules", "set_mask", "sparsity_report",
    "export_sparse", "load_sparse", "attach_scores", "finalize_scores", "prune_hydra",
    "keep_count", "prunable_layers", "prune_lwm", "prune_random", "pack_state_dict", "plan_state_dict", "unpack_state_dict",
]
