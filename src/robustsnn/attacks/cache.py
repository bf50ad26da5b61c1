"""A resumable, reusable record of finished ensemble members (early exit only).

An ensemble run with early exit is a chain: member k attacks exactly the samples
that members 0..k-1 left standing. After each member finishes, the chain link
(which samples it broke, their adversarial images, its record) is written
atomically to ``DIR/<fingerprint>/<link>.safetensors``, where

* the fingerprint hashes everything that decides the outcome: the model's
  weights and buffers, the images and labels, eps, norm, seed, votes, EOT
  samples, batch size and the robustsnn version;
* the link hashes the fingerprint and the specs of members 0..k.

A run that was killed therefore restarts after its last finished member, and a
run whose member list starts with another run's members (``standard`` starts
with ``pgd-ens``) reuses them. Anything that differs, down to one weight, gives
another fingerprint and nothing is reused. Only :class:`~robustsnn.attacks.ensemble.Member`
specs are cached (a pre-built attack object's settings cannot all be hashed).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..io import atomic_write, atomic_write_json

__all__ = ["CACHE_DIRNAME", "MemberCache", "fingerprint", "next_link"]

#: Folder name of the cache next to a result file (``robustsnn evaluate``, ``train``, ``pipeline``).
CACHE_DIRNAME = "eval-cache"


def _hash_tensor(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(str((t.dtype, tuple(t.shape))).encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def fingerprint(model: nn.Module, x: torch.Tensor, y: torch.Tensor, extra_models=(), **settings) -> str:
    """sha256 (hex, 24 chars) of the model's state, the data and the settings (JSON-able values).

    ``extra_models``: other models the outcome depends on (a transfer attack's source).
    """
    from .. import __version__

    h = hashlib.sha256()
    for m in (model, *[e for e in extra_models if e is not None]):
        for name, t in sorted(m.state_dict().items()):
            h.update(name.encode())
            _hash_tensor(h, t)
    _hash_tensor(h, x)
    _hash_tensor(h, y)
    h.update(json.dumps({**settings, "version": __version__}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def _digest(broke: torch.Tensor, x_adv: torch.Tensor) -> str:
    """sha256 of a link's tensors: its record names them, so swapped or altered files are not trusted."""
    h = hashlib.sha256()
    _hash_tensor(h, broke)
    _hash_tensor(h, x_adv)
    return h.hexdigest()


def next_link(previous: str, spec: dict) -> str:
    """Name of the link after ``previous`` (the fingerprint for member 0) for member ``spec``."""
    blob = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256((previous + "|" + blob).encode()).hexdigest()[:24]


class MemberCache:
    """The finished links of one fingerprint.

    Args:
        root: cache directory (created on the first write).
        key: :func:`fingerprint` of the run; also the start of its chain of links.
    """

    def __init__(self, root: str | Path, key: str):
        self.dir = Path(root) / key
        self.key = key

    def load(self, link: str) -> tuple[torch.Tensor, torch.Tensor, dict] | None:
        """(broken sample indices [k], their adversarial images [k, ...], record dict), or None."""
        path = self.dir / f"{link}.safetensors"
        meta = self.dir / f"{link}.json"
        if not (path.exists() and meta.exists()):
            return None
        try:
            tensors = load_file(str(path))
            record = json.loads(meta.read_text())
        except (OSError, ValueError, SafetensorError):
            return None  # a damaged link is recomputed, never trusted
        broke, x_adv = tensors.get("broke"), tensors.get("x_adv")
        if (
            not isinstance(record, dict)
            or broke is None
            or x_adv is None
            or broke.dtype != torch.int64
            or broke.dim() != 1
            or not x_adv.is_floating_point()
            or record.get("tensors_sha256", _digest(broke, x_adv)) != _digest(broke, x_adv)
        ):
            return None  # not what store() wrote for this link (damaged, swapped, foreign)
        record.pop("tensors_sha256", None)
        return broke, x_adv, record

    def store(self, link: str, broke: torch.Tensor, x_adv: torch.Tensor, record: dict) -> None:
        """Write one finished link atomically (tensors first, then the record that validates them)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tensors = {"broke": broke.detach().cpu().long().contiguous(), "x_adv": x_adv.detach().cpu().contiguous()}
        atomic_write(self.dir / f"{link}.safetensors", lambda p: save_file(tensors, str(p)))
        atomic_write_json(self.dir / f"{link}.json", {**record, "tensors_sha256": _digest(tensors["broke"], tensors["x_adv"])})
