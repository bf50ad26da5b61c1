"""Compact storage of sparse weights: CSR or bitmap per layer, whichever is smaller.

Every prunable tensor (a ``weight`` with at least 2 dims: conv and linear
layers) is viewed as a matrix ``[out, in * kh * kw]`` (row-major) and stored in
the cheapest of three encodings; every other tensor (biases, batch norm,
thresholds, DLIF gains) is stored as it is:

============  =========================================  ===========================================
encoding      stored tensors                             bytes
============  =========================================  ===========================================
``dense``     ``key``: the weight                        ``numel * s``
``csr``       ``key@values`` [nnz], ``key@col_index``    ``nnz * s + 4 nnz + 4 (rows + 1)``
              int32 [nnz], ``key@row_ptr`` int32
              [rows + 1]
``bitmap``    ``key@values`` [nnz], ``key@bitmap`` uint8  ``nnz * s + ceil(numel / 8)``
              (bit i of byte j = element 8 j + i)
============  =========================================  ===========================================

with ``s`` the element size of the weight (4 for fp32) and ``nnz`` the number
of stored values: the positions that are non-zero or inside the layer's mask
(values are stored in row-major order). A mask buffer (``key_mask``) costs
nothing when it equals the stored pattern (``"pattern"``), is all ones
(``"ones"``) or equals ``weight != 0`` (``"nonzero"``); otherwise it is
stored as its own bitmap (``key_mask@bitmap``, ``"bitmap"``). The encoding
minimises weight + mask bytes; ties prefer dense, then bitmap, then CSR.

An exported checkpoint keeps the layout of :mod:`robustsnn.checkpoint` (a
directory with ``weights.safetensors`` and ``config.json``); the safetensors
file holds the packed tensors and ``config.json`` gains a ``"sparse"`` entry:
the layout that :func:`unpack_state_dict` needs.

This module is pure tensor bookkeeping below :mod:`robustsnn.checkpoint` (which unpacks
with it); writing and reading such checkpoints is :mod:`robustsnn.sparsity.storage`.
"""

from __future__ import annotations

import torch

from .errors import CheckpointError

__all__ = [
    "LAYOUT_FORMAT",
    "is_prunable",
    "plan_tensor",
    "plan_state_dict",
    "pack_state_dict",
    "unpack_state_dict",
]

LAYOUT_FORMAT = "robustsnn-sparse"
_ORDER = ("dense", "bitmap", "csr")  # tie-break order
_INDEX_BYTES = 4  # int32 column indices and row pointers


def is_prunable(key: str, tensor: torch.Tensor) -> bool:
    """True for conv / linear weights: a floating ``weight`` tensor with at least 2 dims."""
    return (key == "weight" or key.endswith(".weight")) and tensor.dim() >= 2 and tensor.is_floating_point()


def _bitmap_bytes(numel: int) -> int:
    return -(-numel // 8)


def _mask_key(key: str) -> str:
    return key + "_mask"


def _stored_pattern(w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    pattern = w != 0
    if mask is not None:
        pattern = pattern | (mask != 0)
    return pattern


def plan_tensor(w: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
    """Choose the encoding of one prunable weight (and its mask) and count its bytes exactly.

    Args:
        w: the weight, >= 2 dims.
        mask: its ``weight_mask`` buffer (same shape) or None.
    Returns:
        ``{"encoding", "mask", "shape", "dtype", "numel", "nonzero", "stored", "dense_bytes",
        "bytes": {"dense", "bitmap", "csr"} (weight + mask bytes of each option), "sparse_bytes"}``.
    """
    w = w.detach()
    numel, rows = w.numel(), w.shape[0]
    size = w.element_size()
    pattern = _stored_pattern(w, mask)
    nonzero = int((w != 0).sum())
    stored = int(pattern.sum())
    m = None if mask is None else mask != 0

    def mask_cost(encoding: str) -> tuple[str | None, int]:
        if m is None:
            return None, 0
        if encoding != "dense" and torch.equal(m, pattern):
            return "pattern", 0
        if bool(m.all()):
            return "ones", 0
        if torch.equal(m, w != 0):
            return "nonzero", 0
        return "bitmap", _bitmap_bytes(numel)

    weight_bytes = {
        "dense": numel * size,
        "bitmap": stored * size + _bitmap_bytes(numel),
        "csr": stored * size + _INDEX_BYTES * stored + _INDEX_BYTES * (rows + 1),
    }
    options = {}
    for enc in _ORDER:
        mask_enc, extra = mask_cost(enc)
        options[enc] = (weight_bytes[enc] + extra, mask_enc)
    best = min(_ORDER, key=lambda e: (options[e][0], _ORDER.index(e)))
    return {
        "encoding": best,
        "mask": options[best][1],
        "shape": list(w.shape),
        "dtype": str(w.dtype).removeprefix("torch."),
        "numel": numel,
        "nonzero": nonzero,
        "stored": numel if best == "dense" else stored,
        "dense_bytes": numel * size,
        "bytes": {e: options[e][0] for e in _ORDER},
        "sparse_bytes": options[best][0],
    }


def _split(sd: dict[str, torch.Tensor]) -> tuple[dict[str, str | None], list[str]]:
    """Prunable weight keys (-> their mask key or None) and the other keys (masks excluded)."""
    weights: dict[str, str | None] = {}
    for key, t in sd.items():
        if is_prunable(key, t):
            mk = _mask_key(key)
            weights[key] = mk if mk in sd and sd[mk].shape == t.shape else None
    masks = {mk for mk in weights.values() if mk is not None}
    others = [k for k in sd if k not in weights and k not in masks]
    return weights, others


def plan_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    """Storage plan of a whole state dict: per-prunable-tensor plans and byte totals.

    Returns:
        ``{"tensors": {key: plan_tensor(...)}, "other_bytes": bytes of every other tensor
        (dense), "dense_bytes": all tensors dense without masks (a dense model),
        "checkpoint_bytes": all tensors dense with masks (a plain checkpoint),
        "sparse_bytes": the packed form (exactly the bytes :func:`pack_state_dict` returns)}``.
    """
    weights, others = _split(sd)
    plans = {k: plan_tensor(sd[k], None if mk is None else sd[mk]) for k, mk in weights.items()}
    other_bytes = sum(sd[k].numel() * sd[k].element_size() for k in others)
    return {
        "tensors": plans,
        "other_bytes": other_bytes,
        "dense_bytes": other_bytes + sum(p["dense_bytes"] for p in plans.values()),
        "checkpoint_bytes": sum(t.numel() * t.element_size() for t in sd.values()),
        "sparse_bytes": other_bytes + sum(p["sparse_bytes"] for p in plans.values()),
    }


def _pack_bits(bits: torch.Tensor) -> torch.Tensor:
    flat = bits.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    place = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.int32)
    return (flat.view(-1, 8).to(torch.int32) * place).sum(1).to(torch.uint8)


def _unpack_bits(packed: torch.Tensor, numel: int) -> torch.Tensor:
    shifts = torch.arange(8, dtype=torch.uint8)
    bits = (packed.to(torch.uint8).unsqueeze(1) >> shifts) & 1
    return bits.reshape(-1)[:numel].bool()


def pack_state_dict(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """Pack a state dict into the compact form of :func:`plan_state_dict`.

    Args:
        sd: e.g. ``model.state_dict()``; masks are the ``<weight key>_mask`` buffers.
    Returns:
        ``(tensors, layout)``: contiguous CPU tensors to write with safetensors, and the
        JSON-serialisable layout describing every encoded weight (``layout["tensors"]``).
        The tensors' total ``nbytes`` equals ``plan_state_dict(sd)["sparse_bytes"]``.
    """
    sd = {k: v.detach().cpu() for k, v in sd.items()}
    weights, others = _split(sd)
    tensors = {k: sd[k].contiguous() for k in others}
    entries = {}
    for key, mk in weights.items():
        w = sd[key]
        mask = None if mk is None else sd[mk]
        plan = plan_tensor(w, mask)
        enc = plan["encoding"]
        entry = {"encoding": enc, "shape": plan["shape"], "dtype": plan["dtype"], "stored": plan["stored"]}
        if enc == "dense":
            tensors[key] = w.contiguous()
        else:
            pattern = _stored_pattern(w, mask).reshape(w.shape[0], -1)
            matrix = w.reshape(w.shape[0], -1)
            tensors[key + "@values"] = matrix[pattern].contiguous()
            if enc == "csr":
                cols = pattern.nonzero()[:, 1]
                row_ptr = torch.zeros(w.shape[0] + 1, dtype=torch.int64)
                row_ptr[1:] = pattern.sum(1).cumsum(0)
                tensors[key + "@col_index"] = cols.to(torch.int32).contiguous()
                tensors[key + "@row_ptr"] = row_ptr.to(torch.int32)
            else:
                tensors[key + "@bitmap"] = _pack_bits(pattern)
        if mk is not None:
            entry["mask"] = {"key": mk, "encoding": plan["mask"], "dtype": str(mask.dtype).removeprefix("torch.")}
            if plan["mask"] == "bitmap":
                tensors[mk + "@bitmap"] = _pack_bits(mask != 0)
        entries[key] = entry
    layout = {"format": LAYOUT_FORMAT, "format_version": 1, "index_dtype": "int32", "bit_order": "little",
              "tensors": entries}
    return tensors, layout


def _dtype(name: str) -> torch.dtype:
    dt = getattr(torch, str(name), None)
    if not isinstance(dt, torch.dtype):
        raise CheckpointError(f"unknown dtype {name!r} in the sparse layout")
    return dt


def _take(tensors: dict, key: str) -> torch.Tensor:
    if key not in tensors:
        raise CheckpointError(f"sparse checkpoint lacks tensor {key!r}; the file is damaged or incomplete")
    return tensors[key]


def unpack_state_dict(tensors: dict[str, torch.Tensor], layout: dict) -> dict[str, torch.Tensor]:
    """Inverse of :func:`pack_state_dict`: the full state dict (weights and masks) back.

    Raises:
        CheckpointError: a foreign layout or packed tensors inconsistent with it.
    """
    if not isinstance(layout, dict) or layout.get("format") != LAYOUT_FORMAT:
        raise CheckpointError(f"not a sparse layout (no 'format': '{LAYOUT_FORMAT}')")
    entries = layout.get("tensors", {})
    device = next(iter(tensors.values())).device if tensors else torch.device("cpu")
    tensors = {k: v.cpu() for k, v in tensors.items()}  # rebuilt on the CPU, returned on the input's device
    packed = set()
    for key in entries:
        packed.update(k for k in (key + "@values", key + "@col_index", key + "@row_ptr", key + "@bitmap"))
        mask = entries[key].get("mask")
        if mask:
            packed.add(mask["key"] + "@bitmap")
    sd = {k: v for k, v in tensors.items() if k not in packed and k not in entries}
    for key, e in entries.items():
        shape, dtype, enc = tuple(e["shape"]), _dtype(e["dtype"]), e["encoding"]
        numel = 1
        for s in shape:
            numel *= s
        rows = shape[0]
        if enc == "dense":
            w = _take(tensors, key).to(dtype)
            pattern = None
        elif enc in ("csr", "bitmap"):
            values = _take(tensors, key + "@values").to(dtype)
            if enc == "csr":
                cols = _take(tensors, key + "@col_index").to(torch.int64)
                row_ptr = _take(tensors, key + "@row_ptr").to(torch.int64)
                if row_ptr.numel() != rows + 1 or cols.numel() != values.numel() or int(row_ptr[-1]) != values.numel():
                    raise CheckpointError(f"CSR tensors of {key!r} do not fit its shape {list(shape)}")
                row_idx = torch.repeat_interleave(torch.arange(rows), row_ptr.diff())
                pattern = torch.zeros(rows, numel // rows, dtype=torch.bool)
                pattern[row_idx, cols] = True
            else:
                bits = _take(tensors, key + "@bitmap")
                if bits.numel() != _bitmap_bytes(numel):
                    raise CheckpointError(f"bitmap of {key!r} has {bits.numel()} bytes, its shape needs {_bitmap_bytes(numel)}")
                pattern = _unpack_bits(bits, numel).view(rows, -1)
            if int(pattern.sum()) != values.numel():
                raise CheckpointError(f"{key!r}: {values.numel()} stored values for {int(pattern.sum())} positions")
            w = torch.zeros(rows, numel // rows, dtype=dtype)
            w[pattern] = values
            w = w.view(shape)
            pattern = pattern.view(shape)
        else:
            raise CheckpointError(f"unknown encoding {enc!r} for {key!r} in the sparse layout")
        sd[key] = w
        m = e.get("mask")
        if m:
            menc, mdtype = m["encoding"], _dtype(m.get("dtype", "float32"))
            if menc == "pattern" and pattern is not None:
                mask = pattern
            elif menc == "ones":
                mask = torch.ones(shape, dtype=torch.bool)
            elif menc == "nonzero":
                mask = w != 0
            elif menc == "bitmap":
                mask = _unpack_bits(_take(tensors, m["key"] + "@bitmap"), numel).view(shape)
            else:
                raise CheckpointError(f"unknown mask encoding {menc!r} for {m['key']!r}")
            sd[m["key"]] = mask.to(mdtype)
    return {k: v.to(device) for k, v in sd.items()}
