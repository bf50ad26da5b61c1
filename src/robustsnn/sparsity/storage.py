"""Sparse checkpoints on disk: ``export_sparse`` writes one, ``load_sparse`` reads it back.

The packed format itself (CSR or bitmap per layer, whichever is smaller) is
:mod:`robustsnn.sparse_format`, below :mod:`robustsnn.checkpoint`; its functions are
re-exported here, so ``robustsnn.sparsity.storage.pack_state_dict`` keeps working.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from .. import checkpoint, sparse_format
from ..io import atomic_replace_dir
from ..sparse_format import *  # noqa: F401,F403  (the format's public names, under their old module)
from ..sparse_format import pack_state_dict, plan_state_dict

__all__ = [*sparse_format.__all__, "export_sparse", "load_sparse"]


def export_sparse(ckpt: str | Path, out: str | Path) -> dict:
    """Write checkpoint ``ckpt`` in the compact sparse form as a checkpoint directory ``out``.

    ``out/config.json`` is ``ckpt``'s config plus ``"sparse"`` (the layout) and
    ``"sparse_bytes"`` / ``"dense_bytes"``. :func:`load_sparse` (and
    :func:`robustsnn.checkpoint.load`) rebuilds the same model.

    Returns:
        The storage plan (:func:`plan_state_dict`) with ``"out"`` and ``"file_bytes"``.
    """
    meta = checkpoint.read_meta(ckpt)
    model = load_sparse(ckpt)
    sd = model.state_dict()
    plan = plan_state_dict(sd)
    tensors, layout = pack_state_dict(sd)
    meta = {k: v for k, v in meta.items() if k not in ("sparse", "sparse_bytes", "dense_bytes")}
    meta.update(sparse=layout, sparse_bytes=plan["sparse_bytes"], dense_bytes=plan["dense_bytes"])

    def fill(tmp: Path) -> None:
        save_file(tensors, str(tmp / checkpoint.WEIGHTS), metadata={"format": checkpoint.FORMAT})
        (tmp / checkpoint.CONFIG).write_text(json.dumps(meta, indent=2, default=str) + "\n")

    checkpoint.refuse_to_replace(out)
    path = atomic_replace_dir(out, fill)
    return {**plan, "out": str(path), "file_bytes": (path / checkpoint.WEIGHTS).stat().st_size}


def load_sparse(path: str | Path, map_location: str = "cpu"):
    """Rebuild the model of a checkpoint directory, packed (``"sparse"`` in its config) or plain.

    The same as :func:`robustsnn.checkpoint.load` (which unpacks packed weights itself),
    kept under this name; returns the model in eval mode.
    """
    return checkpoint.load(path, map_location=map_location)
