"""Checkpoints: safetensors weights + a JSON config; ``load`` rebuilds the model without pickle.

A checkpoint is a directory::

    model/
      weights.safetensors   every tensor of model.state_dict() (masks included)
      config.json           {"format": "robustsnn-checkpoint", "model": ModelConfig,
                             "dataset": ..., "recipe": ..., "version": ..., ...}

It is written to a temporary directory and swapped in atomically, so an
interrupted save never leaves a half checkpoint behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .errors import CheckpointError, UsageError
from .io import atomic_replace_dir, recover_dir
from .models import ModelConfig, TwinModel, build_from_config
from .sparse_format import unpack_state_dict

__all__ = ["save", "load", "read_meta", "FORMAT", "WEIGHTS", "CONFIG", "attach_buffers", "nonfinite_entries"]

FORMAT = "robustsnn-checkpoint"
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"


def save(path: str | Path, model: TwinModel, *, extra_files=None, **meta) -> Path:
    """Write ``model`` as a checkpoint directory at ``path`` (atomically).

    Args:
        path: directory to create or replace.
        model: a :class:`TwinModel` (its ``config`` is stored).
        extra_files: optional ``fn(tmp_dir)`` writing more files into the same atomic swap.
        **meta: extra JSON-serialisable fields (dataset, recipe, epoch, metrics, ...).
    Returns:
        The checkpoint path.
    """
    refuse_to_replace(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    config = {
        "format": FORMAT,
        "format_version": 1,
        "version": __version__,
        "model": model.config.to_dict(),
        **meta,
    }

    def fill(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, default=str) + "\n")
        if extra_files is not None:
            extra_files(tmp)

    return atomic_replace_dir(path, fill)


def refuse_to_replace(path: str | Path) -> None:
    """Raise :class:`UsageError` if writing a checkpoint at ``path`` would destroy something else.

    A checkpoint replaces an earlier checkpoint or an empty directory; a file, or a
    directory holding other things, is left alone with a message saying where to write.
    """
    p = Path(path)
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"cannot write a checkpoint at {p}: {parent} is a file, not a directory; choose another path")
    if p.exists() and not p.is_dir():
        raise UsageError(f"cannot write a checkpoint at {p}: it is a file, not a directory; choose another path")
    if p.is_dir() and any(p.iterdir()) and not (p / CONFIG).exists():
        raise UsageError(
            f"cannot write a checkpoint at {p}: the directory holds files that are not a robustsnn checkpoint; "
            "choose another path or empty it"
        )


def _checkpoint_dir(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file() and p.name in (WEIGHTS, CONFIG):
        p = p.parent
    recover_dir(p)  # a save killed between its two renames left the previous version aside
    if not p.exists():
        raise CheckpointError(f"no checkpoint at {p}: give the directory that `robustsnn train --out` wrote (it holds {CONFIG})")
    if p.is_dir() and not (p / CONFIG).exists() and (p / "model" / CONFIG).exists():
        p = p / "model"  # a run directory
    if not p.is_dir() or not (p / CONFIG).exists() or not (p / WEIGHTS).exists():
        raise CheckpointError(
            f"{p} is not a robustsnn checkpoint (it needs {CONFIG} and {WEIGHTS}); "
            "point at a directory written by robustsnn"
        )
    return p


def read_meta(path: str | Path) -> dict:
    """The JSON config of a checkpoint (model config, dataset, recipe, version, ...)."""
    p = _checkpoint_dir(path)
    try:
        meta = json.loads((p / CONFIG).read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError, UnicodeDecodeError (a binary file)
        raise CheckpointError(f"cannot read {p / CONFIG}: {_first_line(e)}; the checkpoint is damaged, re-save it") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{p / CONFIG} is not a robustsnn checkpoint config (no 'format': '{FORMAT}'); "
            "point at a directory written by robustsnn"
        )
    return meta


def _first_line(e: BaseException) -> str:
    """The informative first line of an exception's message (a torch load error's detail line)."""
    if isinstance(e, KeyError):
        return f"missing field {e.args[0]!r}" if e.args else "missing field"
    lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
    detail = [l for l in lines if l.startswith(("size mismatch", "Missing key", "Unexpected key"))]
    text = (detail or lines or [type(e).__name__])[0]
    return text.rstrip(".")[:300]


def attach_buffers(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Register buffers (e.g. ``weight_mask``) that the file holds but a fresh model lacks."""
    own = model.state_dict()
    for key, value in tensors.items():
        if key in own:
            continue
        module_name, _, buf = key.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        module.register_buffer(buf, torch.empty_like(value))


def nonfinite_entries(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` holding a NaN or an infinity.

    A NaN weight before a spiking layer leaves the loss finite (a NaN potential never
    fires), so a diverged model can look healthy until its weights are checked.
    """
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def load(path: str | Path, map_location: str = "cpu", *, allow_nonfinite: bool = False) -> TwinModel:
    """Rebuild a model from a checkpoint directory (no pickle), in eval mode.

    Args:
        path: checkpoint directory, its config.json / weights file, or a run directory
            holding ``model/``.
        allow_nonfinite: load weights holding NaN/Inf instead of refusing them (to inspect
            a diverged run).
    Returns:
        The :class:`TwinModel` with its weights, thresholds and masks.
    Raises:
        CheckpointError: missing, foreign, damaged or inconsistent checkpoint, or weights
            holding NaN/Inf (unless ``allow_nonfinite``).
    """
    p = _checkpoint_dir(path)
    meta = read_meta(p)
    try:
        config = ModelConfig.from_dict(meta["model"])
        model = build_from_config(config)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(
            f"{p / CONFIG} has an invalid model config ({_first_line(e)}); was it written by a newer robustsnn? "
            "Upgrade robustsnn or re-save the checkpoint"
        ) from None
    try:
        tensors = load_file(str(p / WEIGHTS), device=map_location)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {p / WEIGHTS}: {e}; the checkpoint is damaged") from None
    if "sparse" in meta:  # written by `robustsnn export --sparse`
        try:
            tensors = unpack_state_dict(tensors, meta["sparse"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            raise CheckpointError(f"cannot unpack the sparse weights in {p}: {_first_line(e)}; the checkpoint is damaged") from None
    bad = [] if allow_nonfinite else nonfinite_entries(tensors)
    if bad:
        raise CheckpointError(
            f"weights in {p} hold NaN or Inf ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): the run that wrote "
            "them diverged; use an earlier checkpoint or train again with a lower --lr or --grad-clip"
        )
    missing, unexpected = [], []
    try:
        attach_buffers(model, tensors)
        result = model.load_state_dict(tensors, strict=False)
        missing, unexpected = result.missing_keys, result.unexpected_keys
    except (RuntimeError, AttributeError, KeyError) as e:
        raise CheckpointError(
            f"weights in {p} do not fit the model in its config: {_first_line(e)}; the weights and config.json "
            "belong to different models, re-save the checkpoint"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"weights in {p} do not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()
