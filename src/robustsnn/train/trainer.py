"""The shared training loop: one objective, SGD/Adam with cosine decay, atomic per-epoch
checkpoints and exact resume.

Run directory written by :func:`fit`::

    OUT/model/     checkpoint (robustsnn.load reads it) + optimizer state + history,
                   swapped in atomically at the end of every epoch
    OUT/log.json   one entry per finished epoch (loss, train/test accuracy, images/s, lr)

Reproducibility: epoch ``e`` seeds the data order/augmentation and torch's RNG from
``(seed, e)`` alone, and the learning rate is a function of the global step, so
resuming after epoch ``e`` ends with the same weights as an uninterrupted run.

Under torchrun (:mod:`robustsnn.distributed`) the model is wrapped in
DistributedDataParallel; every rank takes its slice of each global batch (same order
and augmentation as one process), adversarial examples are made locally on each
rank with the unwrapped model, and the loss is weighted so that DDP's gradient
average is the global-batch mean. The weights then follow one process with the same
global batch (up to float rounding; with ``sync_bn`` also for models with batch norm).
Rank 0 writes checkpoints and logs and draws the progress bar; a run may resume on
another number of ranks.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from .. import checkpoint
from .. import distributed as D
from ..data import ArrayDataset, batches, num_batches
from ..errors import CheckpointError, RobustSNNError, UsageError
from ..io import atomic_write_json, recover_dir
from ..models.masks import apply_masks
from ..precision import autocast, check_precision
from .objectives import Objective, make_objective
from .parseval import ParsevalStep
from .optim import cosine_lr, load_optimizer, make_optimizer, save_optimizer

__all__ = ["TrainConfig", "fit", "accuracy", "RankFailure", "TrainingDiverged"]

PostStep = Callable[[nn.Module], None]


@dataclass
class TrainConfig:
    """Recipe of a training run (stored in the checkpoint as ``recipe``).

    Attributes:
        epochs: number of passes over the (sub)set.
        batch_size: images per step.
        lr: initial learning rate (cosine-decayed to 0 over all steps).
        optimizer: ``"sgd"`` (momentum) or ``"adam"``.
        momentum, weight_decay: optimiser settings.
        seed: fixes init (by the caller), data order, augmentation and attack randomness.
        augment: random crop/flip as the data set defines.
        train_subset: train on this many images (a seeded random subset), None = all.
        test_subset: evaluate on this many test images after each epoch, None = all.
        objective: objective name (see ``available_objectives()``).
        objective_params: its parameters (eps, beta, sigma, mppd, ...).
        parseval: Parseval retraction strength beta after every step (0 = off; weight decay
            is forced to 0 when it is on, as in the seeds).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (under torchrun a CUDA device
            means each rank's own GPU).
        sync_bn: under DDP, normalise with the statistics of the global batch
            (:class:`robustsnn.distributed.SyncBatchNorm`) instead of each rank's slice.
        precision: ``"fp32"`` (default) or ``"bf16"`` (autocast of the forward passes,
            :mod:`robustsnn.precision`).
        grad_clip: largest global L2 norm of the parameter gradient before each step
            (``torch.nn.utils.clip_grad_norm_``; 0 = off). The epoch's history then records
            the mean and largest norm before clipping.
    """

    epochs: int = 1
    batch_size: int = 64
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    augment: bool = False
    train_subset: int | None = None
    test_subset: int | None = None
    objective: str = "natural"
    objective_params: dict = field(default_factory=dict)
    parseval: float = 0.0
    device: str = "cpu"
    sync_bn: bool = False
    precision: str = "fp32"
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        self.precision = check_precision(self.precision)
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise UsageError(f"unknown device {self.device!r}; give cpu, cuda, cuda:N or auto") from None
        if self.parseval < 0:
            raise UsageError(f"parseval beta must be >= 0, got {self.parseval}")
        if self.parseval > 0:
            self.weight_decay = 0.0
        if self.epochs < 1:
            raise UsageError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise UsageError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise UsageError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not self.grad_clip >= 0:
            raise UsageError(f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}")


class RankFailure(RobustSNNError):
    """A peer rank stopped (killed, out of memory, lost node) during distributed training."""


class TrainingDiverged(RobustSNNError):
    """The training loss became NaN or infinite; the last finished epoch's checkpoint is kept."""


@torch.no_grad()
def accuracy(model: nn.Module, data: ArrayDataset, batch_size: int = 500) -> float:
    """Clean top-1 accuracy (fraction in [0, 1]) of ``model`` on every image of ``data``.

    Under torchrun each rank scores a contiguous share of ``data`` and the counts are summed.
    """
    model = D.unwrap(model)
    was_training = model.training
    model.eval()
    correct = 0
    device = next(model.parameters()).device
    share = D.split_batch(len(data))
    part = data if not D.active() else data.subset(torch.arange(share.start, share.stop))
    if len(part):
        for x, y in batches(part, batch_size, shuffle=False, seed=0, pin_memory=device.type == "cuda"):
            correct += int((model(x.to(device, non_blocking=True)).argmax(1) == y.to(device, non_blocking=True)).sum())
    model.train(was_training)
    return D.all_sum([correct])[0] / max(1, len(data))


def _seeded_subset(data: ArrayDataset, n: int | None, seed: int) -> ArrayDataset:
    if n is None or n >= len(data):
        return data
    g = torch.Generator().manual_seed(seed)
    return data.subset(torch.randperm(len(data), generator=g)[:n])


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:5.1%}  {task.fields[ips]:.0f} img/s"),
        TimeRemainingColumn(),
    )


def fit(
    model: nn.Module,
    train_set: ArrayDataset,
    test_set: ArrayDataset | None,
    config: TrainConfig,
    out: str | Path,
    *,
    objective: Objective | None = None,
    post_step: list[PostStep] | None = None,
    resume: bool = False,
    progress: bool = True,
    meta: dict | None = None,
    stop_after_epoch: int | None = None,
    log_epochs: bool | None = None,
) -> list[dict]:
    """Train ``model`` in place and checkpoint it to ``out/model`` after every epoch.

    Args:
        model: a TwinModel (ANN or SNN); its parameters' requires_grad decides what trains.
        train_set, test_set: in-memory data sets (test_set may be None).
        config: the recipe.
        out: run directory.
        objective: overrides ``config.objective`` (for objectives built in code).
        post_step: callbacks run after every optimiser step (masks are always re-applied).
        resume: continue from ``out/model`` (which must exist) after its last finished epoch.
        progress: show a live progress bar.
        meta: extra fields for the checkpoint config (dataset name, command, ...).
        stop_after_epoch: end after this epoch (used to test interruption).
        log_epochs: print one summary line per epoch (loss, accuracy, gradient norms when
            clipping); None = only with the progress bar. ``robustsnn train`` always prints them.
    Returns:
        The history: one dict per finished epoch.
    """
    out = Path(out)
    ckpt_dir = out / "model"
    device = D.setup(config.device)
    world, me = D.world_size(), D.rank()
    model.to(device)
    objective = objective or make_objective(config.objective, **config.objective_params)
    train_data = _seeded_subset(train_set, config.train_subset, config.seed)
    test_data = _seeded_subset(test_set, config.test_subset, config.seed + 1) if test_set is not None else None
    per_rank = D.check_batch(config.batch_size, len(train_data), world)
    steps_per_epoch = num_batches(train_data, config.batch_size)
    total_steps = steps_per_epoch * config.epochs

    history: list[dict] = []
    start_epoch = 0
    saved_opt = None
    if resume:
        recover_dir(ckpt_dir)
        if not (ckpt_dir / checkpoint.CONFIG).exists():
            raise CheckpointError(f"--resume: nothing to resume in {out} (no {ckpt_dir / checkpoint.CONFIG}); drop --resume to start")
        saved = checkpoint.read_meta(ckpt_dir)
        history = list(saved.get("history", []))
        start_epoch = int(saved.get("epoch", 0))
        resumed = checkpoint.load(ckpt_dir)
        model.load_state_dict(resumed.state_dict())
        if (ckpt_dir / "optimizer.safetensors").exists():
            saved_opt = ckpt_dir
    if config.sync_bn and world > 1:
        D.convert_sync_batchnorm(model)
    opt = make_optimizer(model, config.optimizer, config.lr, config.momentum, config.weight_decay)
    if saved_opt is not None:
        load_optimizer(opt, saved_opt / "optimizer.safetensors", saved_opt / "optimizer.json")
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    hooks = list(post_step or [])
    trainable = [p for group in opt.param_groups for p in group["params"]]  # what the optimiser steps
    if config.parseval > 0:
        hooks.append(ParsevalStep(config.parseval))
    main = D.is_main()
    bar = _progress() if progress and main else None
    if bar:
        bar.start()
    if main:
        say = bar.console.print if bar else Console().print
        if world > 1:
            say(f"distributed: {world} ranks ({'nccl' if device.type == 'cuda' else 'gloo'}), global batch "
                f"{config.batch_size} = {world} x {per_rank} per rank" + (", synchronised batch norm" if config.sync_bn else ""))
        ranks_before = history[-1].get("ranks", 1) if history else world
        if ranks_before != world:
            say(f"resuming a run of {ranks_before} rank(s) on {world}: same global batch, data order and learning rate")
    pin = device.type == "cuda"
    epoch = start_epoch

    def lost(reason: str) -> RankFailure:
        return RankFailure(f"rank {me}: {reason} during epoch {epoch + 1}; the last checkpoint is {ckpt_dir} "
                           f"(epoch {len(history)}): rerun the same command with --resume")

    def diverged(what: str) -> TrainingDiverged:
        kept = f"the checkpoint of epoch {len(history)} in {ckpt_dir} is kept" if history else "no epoch finished"
        return TrainingDiverged(f"{what}; {kept}; lower --lr or set --grad-clip and train again")

    def on_term(signum, frame):  # torchrun stops the other ranks with SIGTERM when one fails
        raise lost("stopped by the launcher (another rank failed)")

    old_term = signal.signal(signal.SIGTERM, on_term) if world > 1 and _main_thread() else None
    try:
        for epoch in range(start_epoch, config.epochs):
            torch.manual_seed(config.seed * 100003 + epoch)
            model.train()
            task = bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=steps_per_epoch, loss=0.0, acc=0.0, ips=0.0) if bar else None
            seen = correct = 0
            loss_sum = 0.0
            norms: list[float] = []  # gradient norms before clipping (only with grad_clip)
            t0 = time.perf_counter()
            for i, (x, y) in enumerate(
                batches(train_data, config.batch_size, shuffle=True, seed=config.seed, epoch=epoch, augment=config.augment,
                        part=(me, world) if world > 1 else None, pin_memory=pin)
            ):
                step = epoch * steps_per_epoch + i
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(config.lr, step, total_steps)
                share = D.split_batch(min(config.batch_size, len(train_data) - i * config.batch_size)) if world > 1 else None
                with D.batch_share(share), autocast(config.precision, config.device):
                    loss, logits = objective(net, x, y)
                opt.zero_grad(set_to_none=True)
                (loss * share.weight if share is not None else loss).backward()
                if config.grad_clip > 0:
                    norms.append(float(nn.utils.clip_grad_norm_(trainable, config.grad_clip)))
                opt.step()
                for hook in hooks:
                    hook(model)
                apply_masks(model)
                seen += len(y)
                correct += int((logits.detach().argmax(1) == y).sum())
                step_loss = float(loss.detach())
                if not math.isfinite(step_loss):
                    raise diverged(f"the training loss became {step_loss} at step {i + 1} of epoch {epoch + 1}")
                loss_sum += step_loss * len(y)
                if bar:
                    bar.update(task, advance=1, loss=loss_sum / seen, acc=correct / seen, ips=world * seen / (time.perf_counter() - t0))
                D.fault_point(f"epoch{epoch + 1}:step{i}")
            bad = checkpoint.nonfinite_entries(dict(model.named_parameters()))
            if bad:  # finite loss, NaN weights: a NaN potential before a spiking layer never fires
                raise diverged(f"weights became NaN or Inf in epoch {epoch + 1} ({', '.join(bad[:3])}) although the loss "
                               "stayed finite")
            seen, correct, loss_sum = D.all_sum([seen, correct, loss_sum])
            seconds = time.perf_counter() - t0
            entry = {
                "epoch": epoch + 1,
                "loss": loss_sum / max(1, seen),
                "train_acc": correct / max(1, seen),
                "images_per_s": seen / seconds,
                "seconds": seconds,
                "lr_end": opt.param_groups[0]["lr"],
            }
            if norms:
                entry["grad_norm_mean"], entry["grad_norm_max"] = sum(norms) / len(norms), max(norms)
                entry["clipped_steps"] = sum(n > config.grad_clip for n in norms)
            if world > 1:
                entry["ranks"], entry["batch_per_rank"] = world, per_rank
            if test_data is not None:
                with autocast(config.precision, config.device):
                    entry["test_acc"] = accuracy(model, test_data)
                entry["test_images"] = len(test_data)
            history.append(entry)
            if main:
                _save_epoch(ckpt_dir, model, opt, config, epoch + 1, history, meta or {})
                atomic_write_json(out / "log.json", {"recipe": asdict(config), "history": history})
            D.barrier()
            if main and (log_epochs if log_epochs is not None else bar is not None):
                msg = f"epoch {epoch + 1}: loss {entry['loss']:.3f}, train acc {entry['train_acc']:.1%}"
                if "test_acc" in entry:
                    msg += f", test acc {entry['test_acc']:.1%} ({entry['test_images']} images)"
                if norms:
                    msg += (f", gradient norm {entry['grad_norm_mean']:.3g} mean / {entry['grad_norm_max']:.3g} max, "
                            f"{entry['clipped_steps']} of {len(norms)} steps clipped")
                say(msg)
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                break
    except RuntimeError as e:
        if world > 1 and _peer_lost(e):
            raise lost("another rank stopped (its connection closed)") from e
        raise
    finally:
        if old_term is not None:
            # failing (a lost peer): the launcher's SIGTERM must not kill this rank before its error
            # (which names the checkpoint to --resume from) is printed; it exits right after
            failing = sys.exc_info()[0] is not None
            signal.signal(signal.SIGTERM, signal.SIG_IGN if failing else old_term)
        if bar:
            bar.stop()
    return history


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _peer_lost(e: Exception) -> bool:
    """True for the errors a collective raises when a peer rank has gone."""
    text = str(e).lower()
    return isinstance(e, getattr(torch.distributed, "DistError", ())) or any(
        k in text for k in ("connection", "gloo", "nccl", "timed out", "timeout", "peer", "closed"))


def _save_epoch(ckpt_dir: Path, model, opt, config: TrainConfig, epoch: int, history: list, meta: dict) -> None:
    """Checkpoint + optimiser state + history in one atomic directory swap."""
    def fill(tmp: Path) -> None:
        save_optimizer(opt, tmp / "optimizer.safetensors", tmp / "optimizer.json")

    # checkpoint.save builds the directory; the optimiser files are added inside the same swap.
    checkpoint.save(ckpt_dir, model, recipe=asdict(config), epoch=epoch, history=history, extra_files=fill, **meta)
