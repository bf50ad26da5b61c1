"""Rough GPU time of a pipeline config: image-passes of every stage x the model's MACs / a sustained throughput.

    python scripts/gpu_estimate.py configs/pipeline/cifar10_vgg16_hydra_s90.yaml [more.yaml ...] [--tflops 20]

An estimate, not a measurement. One image-pass is a forward + backward of one image
through the ANN (6 FLOPs per MAC: 2 forward, 4 backward); an SNN pass costs T of them
(every layer runs on the merged [T*B] view; the neurons' own cost is left out).
Per training image and epoch: TRADES / MART with k attack steps = k + 2 passes, PGD-AT =
k + 1; SNN finetuning (R+FGSM inner step + TRADES) = 3 SNN passes. Conversion: the
threshold search simulates the network for ``calib_time_steps`` steps on ``calib_batches``
batches once per spiking layer (forward only, counted as 1/3 pass). Evaluation is an
upper bound: every member of the preset attacks every image (early exit makes it less).
MACs come from robustsnn's own op counter (dense, at the config's width and image size).
The default 20 TFLOP/s is an assumption for one A100-class GPU in TF32 at batch 64; scale
the result for other GPUs (a V100 sustains about half of it).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from robustsnn.attacks.presets import preset_members
from robustsnn.data import dataset_info
from robustsnn.metrics.ops import count_ops
from robustsnn.models import build, spiking_layers
from robustsnn.pipeline import PipelineConfig

#: Training images of each data set (the official train splits).
TRAIN_IMAGES = {"fashion-mnist": 60000, "mnist": 60000, "cifar10": 50000, "cifar100": 50000, "svhn": 73257,
                "tiny-imagenet": 100000}


def stage_passes(c: dict, train_images: int, n_spiking: int) -> dict[str, float]:
    """ANN-equivalent image-passes (forward + backward) of each stage of pipeline settings ``c``."""
    n_ann = min(train_images, c["train_subset"] or train_images)
    n_snn = min(train_images, c["snn_train_subset"] or train_images)
    k = c["ann_attack_steps"]
    per_ann = k + (1 if c["ann_objective"] == "pgd" else 2)
    T = c["time_steps"]
    out = {}
    if c.get("baseline"):
        epochs = c["baseline_epochs"] or PipelineConfig.from_dict({key: c[key] for key in asdict(PipelineConfig())}).total_epochs
        if c["baseline"] == "ann-mask":
            out["ann"] = c["ann_epochs"] * n_ann * per_ann
        out["baseline"] = epochs * n_snn * 3 * T
    else:
        out["ann"] = c["ann_epochs"] * n_ann * per_ann
        if c["sparsity"] > 0:
            scores = c["hydra_epochs"] if c["pruning"] == "hydra" else 0
            out["prune"] = (scores + c["prune_finetune_epochs"]) * n_ann * per_ann
        out["convert"] = n_spiking * c["calib_batches"] * c["calib_batch_size"] * c["calib_time_steps"] / 3
        out["finetune"] = c["snn_epochs"] * n_snn * 3 * T
    members = preset_members(c["eval_preset"])
    out["evaluate"] = c["eval_n"] * sum(m.params.get("steps", 1) + 1 for m in members) * T
    return out


def estimate(path: str | Path, tflops: float = 20.0) -> dict:
    """Image-passes per stage, the model's MACs per image and the estimated hours of one config file."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    c = {**asdict(PipelineConfig()), **raw}  # keys this version does not know yet are carried along unused
    info = dataset_info(c["dataset"])
    torch.manual_seed(0)
    ann = build(c["model"], kind="ann", num_classes=info.num_classes, in_channels=info.in_channels,
                image_size=info.image_size, width=c["width"]).eval()
    macs = count_ops(ann, torch.rand(1, info.in_channels, info.image_size, info.image_size))["totals"]["ann_dense"]["macs"]
    snn = build(c["model"], kind="snn", neuron="if", time_steps=1, num_classes=info.num_classes,
                in_channels=info.in_channels, image_size=info.image_size, width=c["width"])
    passes = stage_passes(c, TRAIN_IMAGES[info.name], len(spiking_layers(snn)))
    hours = {k: v * macs * 6 / (tflops * 1e12) / 3600 for k, v in passes.items()}
    return {"config": str(path), "model": c["model"], "dataset": info.name, "macs": macs, "passes": passes,
            "hours": hours, "total_hours": sum(hours.values())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--tflops", type=float, default=20.0, help="sustained TFLOP/s assumed for the GPU (default 20)")
    args = ap.parse_args(argv)
    for path in args.configs:
        e = estimate(path, args.tflops)
        stages = ", ".join(f"{k} {v:.1f} h" for k, v in e["hours"].items())
        print(f"{Path(path).name}: {e['model']} on {e['dataset']}, {e['macs'] / 1e6:.0f} M MACs per image: "
              f"~{e['total_hours']:.0f} GPU hours at {args.tflops:g} TFLOP/s ({stages})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
