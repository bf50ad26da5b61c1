"""Scaling on one machine: 1 rank x 2 threads against 2 ranks x 1 thread (torchrun, gloo), and 1 x 1.

    python benchmarks/scaling.py                    # n=512 training images, 64 evaluation images
    python benchmarks/scaling.py --n 128 --n-eval 16   # a quick look
    python benchmarks/scaling.py --estimate configs/cifar10/vgg11_dlif_rfgsm_parseval_mppd1.yaml

Same total cores in both layouts. Training: images/s of the second of two epochs
(the first one warms up), SNN cnn (width --width, T=--time-steps), global batch
--batch-size, natural objective. Evaluation: wall time of a small ensemble (APGD-CE,
APGD-T, Square, PGD) on --n-eval images of a toy SNN trained here first
(robustsnn.attacks.toy), the attacks split across the ranks. Each
measurement is one fresh process group (``python -m torch.distributed.run``), so the
ratios come from one run of this script. The sharded per-sample verdicts are checked
against the single rank's. Nothing is downloaded (robustsnn.attacks.toy.toy_data).

``--estimate CONFIG``: time a few training steps of a training config (its model, T,
objective, MPPD and Parseval; random images of its data set's shape, batch
--estimate-batch) on this process and extrapolate one epoch and the whole run of
that config on one such process (the training set sizes are the data sets' own).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEMBERS = [("apgd-ce", None, {"steps": 10}), ("apgd-t", None, {"steps": 10, "n_target_classes": 3}),
           ("square", None, {"n_queries": 100}), ("pgd", None, {"steps": 10})]


def _data(split: str, n: int):
    import torch

    from robustsnn.attacks.toy import toy_data
    from robustsnn.data import ArrayDataset, dataset_info

    x, y = toy_data(split, n)
    return ArrayDataset((x * 255).round().to(torch.uint8), y, dataset_info("fashion-mnist"))


def _model(a):
    import torch

    from robustsnn.models import build

    torch.manual_seed(0)
    return build("cnn", kind="snn", time_steps=a.time_steps, width=a.width, mean=(0.2860,), std=(0.3530,))


def worker(a) -> None:
    """One measurement inside a process group; rank 0 writes ``a.result``."""
    import torch

    from robustsnn import distributed as D

    torch.set_num_threads(a.threads)
    D.setup("cpu")
    if a.worker == "train":
        from robustsnn.train import TrainConfig, fit

        hist = fit(_model(a), _data("train", a.n), None, TrainConfig(epochs=2, batch_size=a.batch_size, lr=0.05),
                   Path(a.result).with_suffix(".run"), progress=False)
        out = {"images_per_s": hist[-1]["images_per_s"]}
    else:
        from robustsnn.evaluate import evaluate

        from robustsnn import checkpoint

        model = checkpoint.load(a.ckpt).eval()
        x, y = _data("test", a.n_eval).images.float() / 255, _data("test", a.n_eval).labels
        D.barrier()
        t = time.perf_counter()
        res = evaluate(model, (x, y), members=MEMBERS, eps=0.05, batch_size=a.eval_batch_size, diagnostics=False, warn=False)
        out = {"seconds": time.perf_counter() - t, "breaker": res.results[0].breaker}
    if D.is_main():
        Path(a.result).write_text(json.dumps(out))
    D.shutdown()


TRAIN_SIZES = {"fashion-mnist": 60000, "mnist": 60000, "cifar10": 50000, "cifar100": 50000, "svhn": 73257,
               "tiny-imagenet": 100000}


def estimate(a) -> dict:
    """Images/s of a config's training step here, and the epoch / run time it implies."""
    import torch

    from robustsnn.cli.config_file import merge_options, read_config
    from robustsnn.cli.train import TRAIN_DEFAULTS, objective_params
    from robustsnn.data import dataset_info
    from robustsnn.models import build
    from robustsnn.train import make_objective
    from robustsnn.train.optim import make_optimizer
    from robustsnn.train.parseval import ParsevalStep

    o = merge_options(TRAIN_DEFAULTS, read_config(a.estimate), {})
    info = dataset_info(o["dataset"])
    torch.manual_seed(0)
    model = build(o["model"], kind=o["kind"], neuron=o["neuron"], time_steps=int(o["time_steps"]),
                  num_classes=info.num_classes, in_channels=info.in_channels, image_size=info.image_size,
                  mean=info.mean, std=info.std, width=float(o["width"]))
    objective = make_objective(o["objective"], **objective_params(o))
    opt = make_optimizer(model, "sgd", 0.1, 0.9, 0.0)
    hooks = [ParsevalStep(float(o["parseval"]))] if o.get("parseval") else []
    from robustsnn.distributed import resolve_device

    dev = resolve_device(a.device)
    model.to(dev)
    b = a.estimate_batch
    x, y = torch.rand(b, *info.shape, device=dev), torch.randint(0, info.num_classes, (b,), device=dev)
    times = []
    for _ in range(a.estimate_steps + 1):  # the first step warms up
        t = time.perf_counter()
        loss, _ = objective(model, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for h in hooks:
            h(model)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t)
    ips = b / (sum(times[1:]) / len(times[1:]))
    n = int(o["train_subset"] or TRAIN_SIZES.get(info.name, 50000))
    return {"config": a.estimate, "model": f"{o['model']} {o['kind']} T={o['time_steps']} {o['objective']}"
            f" mppd={o.get('mppd')} parseval={o.get('parseval')}", "batch": b, "device": str(dev), "threads": torch.get_num_threads(),
            "images_per_s": ips, "epoch_hours": n / ips / 3600, "epochs": int(o["epochs"]),
            "run_hours": n * int(o["epochs"]) / ips / 3600}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(a, what: str, ranks: int, threads: int, tmp: Path) -> dict:
    result = tmp / f"{what}-{ranks}x{threads}.json"
    args = [__file__, "--worker", what, "--result", str(result), "--threads", str(threads), "--train-n", str(a.n),
            "--n-eval", str(a.n_eval), "--batch-size", str(a.batch_size), "--eval-batch-size", str(a.eval_batch_size),
            "--width", str(a.width), "--time-steps", str(a.time_steps), "--ckpt", str(tmp / "eval-model")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
    if done.returncode:
        sys.exit(f"scaling: {what} on {ranks} rank(s) failed:\n{done.stderr[-3000:]}")
    return json.loads(result.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", "--train-n", dest="n", type=int, default=512, help="training images")
    ap.add_argument("--n-eval", type=int, default=64, help="evaluation images")
    ap.add_argument("--batch-size", type=int, default=64, help="global training batch")
    ap.add_argument("--eval-batch-size", type=int, default=16, help="samples per attack call (chunks split across ranks)")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--time-steps", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per launch")
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--estimate", help="a training config to extrapolate (see above)")
    ap.add_argument("--estimate-batch", type=int, default=8)
    ap.add_argument("--estimate-steps", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="device of --estimate: cpu, cuda or auto")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return
    if a.estimate:
        print(json.dumps(estimate(a), indent=2))
        return
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from robustsnn import checkpoint
        from robustsnn.attacks.toy import trained_toy_model

        checkpoint.save(tmp / "eval-model", trained_toy_model("snn", time_steps=a.time_steps))
        layouts = [(1, 1), (1, 2), (2, 1)]  # (ranks, threads per rank)
        train = {f"{r}x{t}": _launch(a, "train", r, t, tmp)["images_per_s"] for r, t in layouts}
        evals = {f"{r}x{t}": _launch(a, "eval", r, t, tmp) for r, t in layouts}
    secs = {k: v["seconds"] for k, v in evals.items()}
    r = {
        "setting": f"cnn width {a.width} T={a.time_steps}; train n={a.n} batch {a.batch_size}; eval: toy SNN "
                   f"(width 0.25, T={a.time_steps}), n={a.n_eval} in chunks of {a.eval_batch_size}; "
                   f"cpu count {os.cpu_count()}; load average at the start {load:.1f}",
        "train_images_per_s": {**train, "ratio_2x1_over_1x2": train["2x1"] / train["1x2"],
                               "ratio_2x1_over_1x1": train["2x1"] / train["1x1"]},
        "eval_seconds": {**secs, "speedup_2x1_over_1x2": secs["1x2"] / secs["2x1"],
                         "speedup_2x1_over_1x1": secs["1x1"] / secs["2x1"]},
        "robust_acc": sum(b == -1 for b in evals["1x1"]["breaker"]) / a.n_eval,
        "sharded_verdicts_identical_to_1x1": evals["2x1"]["breaker"] == evals["1x1"]["breaker"],
    }
    print(json.dumps(r, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
