"""Optimisers, the cosine schedule, and optimiser state as safetensors + JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import UsageError

__all__ = ["make_optimizer", "cosine_lr", "save_optimizer", "load_optimizer"]


def make_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float):
    """SGD (Nesterov off) or Adam over the parameters of ``model`` that require grad."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise UsageError(f"unknown optimizer {name!r}; choose sgd or adam")


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine decay from ``base_lr`` at step 0 to 0 at ``total_steps``."""
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))


def save_optimizer(opt: torch.optim.Optimizer, weights: Path, meta: Path) -> None:
    """Optimiser state: tensors to ``weights`` (safetensors), the rest to ``meta`` (JSON)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{k}"] = v
    save_file(tensors, str(weights))
    meta.write_text(json.dumps({"param_groups": sd["param_groups"], "scalars": scalars}))


def load_optimizer(opt: torch.optim.Optimizer, weights: Path, meta: Path) -> None:
    """Restore what :func:`save_optimizer` wrote."""
    tensors = load_file(str(weights))
    info = json.loads(meta.read_text())
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(info["scalars"].items()):
        idx, _, k = key.partition(".")
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})
