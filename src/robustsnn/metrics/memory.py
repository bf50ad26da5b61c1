"""Memory of a model: stored non-zero weights and bytes, dense fp32 vs the packed sparse form.

The sparse form is the one :mod:`robustsnn.sparsity.storage` writes (CSR or
bitmap per conv/linear weight with int32 indices, whichever is smaller, or
dense when neither pays off; every other tensor dense), so the byte counts
here are exactly the tensor bytes of an exported sparse checkpoint (the
safetensors header and ``config.json`` are not counted).
"""

from __future__ import annotations

import torch
from torch import nn

from ..sparse_format import plan_state_dict

__all__ = ["memory_report"]


def memory_report(model: nn.Module | dict[str, torch.Tensor]) -> dict:
    """Stored weights and bytes of ``model`` (or of a state dict), dense vs packed sparse.

    Returns:
        JSON-serialisable ``{"weights": conv/linear weights, "nonzero": of those non-zero,
        "stored_values": values the sparse form stores, "weight_ratio": weights / nonzero,
        "dense_bytes": every tensor dense (masks excluded, as a dense model has none),
        "checkpoint_bytes": a plain checkpoint (masks included), "sparse_bytes",
        "bytes_ratio": dense_bytes / sparse_bytes, "layers": [{"tensor", "shape", "weights",
        "nonzero", "encoding", "mask", "dense_bytes", "csr_bytes", "bitmap_bytes",
        "sparse_bytes"}]}``.
    """
    sd = model.state_dict() if isinstance(model, nn.Module) else model
    plan = plan_state_dict(sd)
    layers = []
    for key, p in plan["tensors"].items():
        layers.append(
            {
                "tensor": key,
                "shape": p["shape"],
                "weights": p["numel"],
                "nonzero": p["nonzero"],
                "encoding": p["encoding"],
                "mask": p["mask"],
                "dense_bytes": p["dense_bytes"],
                "csr_bytes": p["bytes"]["csr"],
                "bitmap_bytes": p["bytes"]["bitmap"],
                "sparse_bytes": p["sparse_bytes"],
            }
        )
    weights = sum(r["weights"] for r in layers)
    nonzero = sum(r["nonzero"] for r in layers)
    return {
        "weights": weights,
        "nonzero": nonzero,
        "stored_values": sum(p["stored"] for p in plan["tensors"].values()),
        "weight_ratio": weights / nonzero if nonzero else None,
        "dense_bytes": plan["dense_bytes"],
        "checkpoint_bytes": plan["checkpoint_bytes"],
        "sparse_bytes": plan["sparse_bytes"],
        "other_bytes": plan["other_bytes"],
        "bytes_ratio": plan["dense_bytes"] / plan["sparse_bytes"] if plan["sparse_bytes"] else None,
        "layers": layers,
    }
