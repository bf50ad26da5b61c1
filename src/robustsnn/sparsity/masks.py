"""Fixed binary weight masks: :mod:`robustsnn.models.masks`, re-exported under its old name.

The masks live with the models (a ``weight_mask`` buffer next to ``weight``) so the
trainer and checkpoints use them without depending on the pruning code.
"""

from ..models.masks import apply_masks, masked_modules, set_mask, sparsity_report

__all__ = ["set_mask", "masked_modules", "apply_masks", "sparsity_report"]
