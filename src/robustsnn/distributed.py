"""torch.distributed plumbing shared by training, evaluation and the pipeline.

Launch with PyTorch's own launcher, ``torchrun --nproc_per_node N -m robustsnn train ...``
(or the ``robustsnn`` entry point under torchrun). :func:`setup` reads torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``), opens
the process group (NCCL for CUDA devices, gloo otherwise) and pins each rank to its
GPU. Without torchrun every helper is a no-op for one process, so the same code
runs in both cases.

Conventions: rank 0 owns every file write (checkpoints, logs, results, pipeline.json)
and the progress bar; all ranks compute. The global batch size stays what the user
asked for: a batch of B samples is split into N contiguous per-rank slices
(:func:`split_batch`), and :func:`batch_share` lets per-sample random draws
(:func:`shared_draw`) give every rank exactly the values a single process would
have drawn for its slice, so N ranks reproduce one process.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from .errors import UsageError

__all__ = [
    "rank", "world_size", "is_main", "active", "setup", "shutdown", "resolve_device", "barrier", "all_sum",
    "broadcast_object", "broadcast_tensor", "all_gather_object", "split_batch", "check_batch", "BatchShare", "batch_share",
    "sharing", "shared_draw", "unwrap", "SyncBatchNorm", "convert_sync_batchnorm", "fault_point",
]

_SHARE: contextvars.ContextVar["BatchShare | None"] = contextvars.ContextVar("robustsnn_batch_share", default=None)


def active() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0, the rank that writes files and draws the progress bar."""
    return rank() == 0


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; under torchrun a CUDA device becomes ``cuda:LOCAL_RANK``."""
    device = "cpu" if device is None else str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r}; give cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine; use --device cpu or auto")
        if _launched() and dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def setup(device: str | torch.device | None = "cpu", timeout_s: float | None = None) -> torch.device:
    """Join torchrun's process group if launched by it; return this rank's device.

    NCCL for CUDA devices, gloo for CPU. ``timeout_s`` (default 1800, env
    ``ROBUSTSNN_DIST_TIMEOUT``) bounds how long a rank waits for a dead peer.
    Idempotent; without torchrun only the device is resolved.
    """
    dev = resolve_device(device)
    if _launched() and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        timeout = float(timeout_s or os.environ.get("ROBUSTSNN_DIST_TIMEOUT", 1800))
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))
    return dev


def shutdown() -> None:
    """Wait for every rank, then close the process group opened by :func:`setup` (no-op otherwise).

    Call it on success only: a rank that leaves while a peer still talks to it can make
    the peer's gloo transport abort.
    """
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            if dist.get_world_size() > 1:
                dist.barrier()
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if active():
        dist.barrier()


def _comm_device() -> torch.device:
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64; identity for one process)."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.cpu().tolist()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; tensors come back on the CPU)."""
    if not active():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def broadcast_tensor(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``t`` on every rank (same shape and dtype everywhere; ``t`` itself for one process)."""
    if not active():
        return t
    buf = t.to(_comm_device()).contiguous()
    dist.broadcast(buf, src=src)
    return buf.to(t.device)


def all_gather_object(obj: Any) -> list[Any]:
    """List of every rank's ``obj``, in rank order (``[obj]`` for one process)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def check_batch(batch_size: int, n_samples: int, world: int | None = None) -> int:
    """Per-rank batch for a global ``batch_size``; clear errors when it cannot be split.

    The global batch must divide by the number of ranks, and every batch of the
    epoch (the last one has ``n_samples % batch_size`` samples) must give each rank
    at least one sample.
    """
    world = world or world_size()
    if n_samples < world:
        raise UsageError(f"{world} ranks but only {n_samples} training samples: use at most {n_samples} ranks")
    if batch_size % world:
        raise UsageError(f"--batch-size {batch_size} does not divide by the {world} ranks; the global batch is split "
                         f"evenly, so give a multiple of {world} (e.g. {batch_size - batch_size % world or world})")
    last = n_samples % batch_size
    if 0 < last < world:
        raise UsageError(f"the last batch of each epoch has {last} sample(s), fewer than the {world} ranks; "
                         f"change --batch-size or --train-subset so that {n_samples} % batch >= {world}")
    return batch_size // world


@dataclass(frozen=True)
class BatchShare:
    """This rank's rows ``[start, stop)`` of a global batch of ``total`` samples."""

    start: int
    stop: int
    total: int

    @property
    def weight(self) -> float:
        """Loss factor making DDP's gradient average equal the global batch mean."""
        return (self.stop - self.start) * world_size() / self.total


def split_batch(n: int, r: int | None = None, world: int | None = None) -> BatchShare:
    """Rank ``r``'s contiguous slice of a global batch of ``n`` (sizes differ by at most one)."""
    r = rank() if r is None else r
    world = world or world_size()
    base, extra = divmod(n, world)
    start = r * base + min(r, extra)
    return BatchShare(start, start + base + (1 if r < extra else 0), n)


@contextlib.contextmanager
def batch_share(share: BatchShare | None) -> Iterator[None]:
    """Within the block, :func:`shared_draw` returns this rank's rows of a global-batch draw."""
    token = _SHARE.set(share)
    try:
        yield
    finally:
        _SHARE.reset(token)


def sharing(n_local: int) -> bool:
    """True inside :func:`batch_share` for a batch of ``n_local`` samples (this rank's slice)."""
    share = _SHARE.get()
    return share is not None and share.stop - share.start == n_local


def shared_draw(draw: Callable[[int], torch.Tensor], n_local: int) -> torch.Tensor:
    """``draw(n)`` for a batch of ``n_local`` samples, batch-size independent under DDP.

    ``draw(m)`` must return a tensor whose first dimension is ``m`` samples. Inside
    :func:`batch_share` (every rank holding the same RNG state) it draws for the whole
    global batch and keeps this rank's rows, so the values equal a single process's.
    """
    if not sharing(n_local):
        return draw(n_local)
    share = _SHARE.get()
    return draw(share.total)[share.start:share.stop]


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (``model`` itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class _SyncStats(torch.autograd.Function):
    """All-reduce (sum) of a tensor with the matching all-reduce of its gradient."""

    @staticmethod
    def forward(ctx, t):
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        dist.all_reduce(g)
        return g


class SyncBatchNorm(nn.BatchNorm2d):
    """Batch norm whose training statistics are those of the global batch (all ranks).

    Works on CPU (gloo) and GPU (NCCL), on [B, C, ...] or the SNN layout [T, B, C, ...]
    (statistics over T*B and the spatial positions, like :class:`robustsnn.layers.BatchNorm2d`).
    Same parameters and buffers as nn.BatchNorm2d/1d, so checkpoints are interchangeable.
    Outside training or without a process group it is plain batch norm. torch's own
    nn.SyncBatchNorm refuses CPU tensors and the [T, B, ...] layout, hence this class.
    """

    #: dimensions of a plain input: 4 for [B, C, H, W], 2 for [B, F]
    _plain_dim = 4

    def _check_input_dim(self, x):  # 2-D/4-D and the [T, B, ...] forms are all accepted
        return None

    def forward(self, x):
        merged = x.flatten(0, 1) if x.dim() == self._plain_dim + 1 else x
        if not (self.training and active()):
            return nn.BatchNorm2d.forward(self, merged).reshape(x.shape)
        c = self.num_features
        dims = [0] + list(range(2, merged.dim()))
        shape = [1, c] + [1] * (merged.dim() - 2)
        # two passes, as one process computes them: the global mean, then the mean squared deviation
        total = _SyncStats.apply(torch.cat([merged.sum(dims), merged.new_full((1,), float(merged.numel() // c))]))
        n = total[-1]
        mean = total[:c] / n
        centred = merged - mean.reshape(shape)
        var = _SyncStats.apply((centred * centred).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp_min(1.0))
        out = centred * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out.reshape(x.shape)


class SyncBatchNorm1d(SyncBatchNorm):
    """:class:`SyncBatchNorm` for [B, F] / [T, B, F] features."""

    _plain_dim = 2


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d/1d of ``model`` for :class:`SyncBatchNorm` in place (state dict unchanged)."""
    for m in model.modules():
        if isinstance(m, SyncBatchNorm):
            continue
        if isinstance(m, nn.BatchNorm2d):
            m.__class__ = SyncBatchNorm
        elif isinstance(m, nn.BatchNorm1d):
            m.__class__ = SyncBatchNorm1d
    return model


def fault_point(where: str) -> None:
    """Fault injection for tests: ``ROBUSTSNN_FAULT="rank:where"`` kills that rank here (exit 17)."""
    spec = os.environ.get("ROBUSTSNN_FAULT")
    if spec and spec == f"{rank()}:{where}":
        os._exit(17)
