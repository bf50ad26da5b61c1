"""GPU readiness check: train one short epoch on the GPU, evaluate, compare CPU and GPU on the same weights.

    python benchmarks/gpu_check.py                 # or: make gpu-check
    python benchmarks/gpu_check.py --model vgg11 --width 0.25 --n-train 2048 --time-steps 4

Needs a CUDA GPU (exits with a one-line message otherwise). Nothing is downloaded:
the data are Fashion-MNIST's first images when installed, otherwise a synthetic
task of the same shape (:func:`robustsnn.attacks.toy.toy_data`). Steps:

1. train the model for one epoch on the GPU (``fit``, pinned memory, non-blocking copies);
2. copy the trained weights to the CPU and compare, on the same test images: logits,
   predictions, input gradients, and a small evaluation ensemble (APGD-CE, APGD-T,
   Square, PGD) with per-sample verdicts;
3. run one LIF layer's forward and backward through the compiled neuron (``torch.compile``,
   the default on CUDA) and through the torch loop on the GPU: spike agreement, largest
   gradient difference, and the milliseconds of each;
4. print the numbers, the training images/s on both devices, and PASS or FAIL.

Float results of a GPU are not bitwise those of a CPU, and an SNN's threshold
turns a tiny difference into a spike more or less now and then, so the checks are
tolerances (agreement of predictions and verdicts), not equalities.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from robustsnn.attacks.toy import toy_data
from robustsnn.data import ArrayDataset, dataset_info
from robustsnn.evaluate import evaluate
from robustsnn.models import build
from robustsnn.train import TrainConfig, fit

MEMBERS = [("apgd-ce", None, {"steps": 10}), ("apgd-t", None, {"steps": 10, "n_target_classes": 3}),
           ("square", None, {"n_queries": 100}), ("pgd", None, {"steps": 10})]


def _dataset(split: str, n: int) -> ArrayDataset:
    x, y = toy_data(split, n)
    return ArrayDataset((x * 255).round().to(torch.uint8), y, dataset_info("fashion-mnist"))


def _input_grad(model, x, y) -> torch.Tensor:
    from robustsnn.attacks.base import attack_mode

    with attack_mode(model, None):
        xr = x.detach().clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xr), y, reduction="sum")
        return torch.autograd.grad(loss, xr)[0]


def neuron_check(device: str = "cuda", shape=(8, 32, 64, 16, 16), repeats: int = 10) -> dict:
    """The compiled neuron (``robustsnn.kernels.compiled``, the CUDA default) against the torch loop
    on ``device``: spike agreement, largest input-gradient difference and fwd+bwd milliseconds
    (minimum of ``repeats``) of a LIF layer with the triangle surrogate."""
    from robustsnn import kernels
    from robustsnn.neurons import multistep_spike
    from robustsnn.surrogates import Surrogate

    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(shape, generator=g) * 1.5).to(dev)
    up = torch.randn(shape, generator=g).to(dev)
    theta = torch.tensor(1.0, device=dev)
    saved, runs = kernels.backend(), {}
    try:
        for name in ("torch", "compile"):
            kernels.set_backend(name)
            xr = x.clone().requires_grad_(True)

            def step():
                xr.grad = None
                s = multistep_spike(xr, theta, 0.99, None, "hard", Surrogate("triangle"))
                (s * up).sum().backward()
                return s.detach()

            spikes = step()  # compiles on the first call
            times = []
            for _ in range(repeats):
                _sync(dev)
                t = time.perf_counter()
                step()
                _sync(dev)
                times.append(time.perf_counter() - t)
            runs[name] = (spikes, xr.grad.clone(), 1e3 * min(times))
    finally:
        kernels.set_backend(saved)
    (s_loop, g_loop, t_loop), (s_comp, g_comp, t_comp) = runs["torch"], runs["compile"]
    return {"neuron_ms": {"torch_loop": t_loop, "compiled": t_comp, "speedup": t_loop / t_comp},
            "neuron_spike_agreement": float((s_loop == s_comp).float().mean()),
            "neuron_grad_max_abs_diff": float((g_loop - g_comp).abs().max())}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def check(device: str = "cuda", *, model: str = "cnn", width: float = 0.5, time_steps: int = 4, n_train: int = 1024,
          n_eval: int = 64, batch_size: int = 64, eps: float = 0.05, out: str | Path | None = None) -> dict:
    """Run the check on ``device``; returns the numbers and ``passed`` (see the module docstring)."""
    dev = torch.device(device)
    train, test = _dataset("train", n_train), _dataset("test", n_eval)
    torch.manual_seed(0)
    net = build(model, kind="snn", time_steps=time_steps, width=width, mean=(0.2860,), std=(0.3530,))
    cpu_net = copy.deepcopy(net)
    cfg = dict(epochs=1, batch_size=batch_size, lr=0.05, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(out or tmp)
        t = time.perf_counter()
        fit(net, train, None, TrainConfig(**cfg, device=str(dev)), out / "gpu", progress=False)
        gpu_ips = n_train / (time.perf_counter() - t)
        t = time.perf_counter()
        fit(cpu_net, train.subset(min(n_train, 4 * batch_size)), None, TrainConfig(**cfg, device="cpu"), out / "cpu", progress=False)
        cpu_ips = min(n_train, 4 * batch_size) / (time.perf_counter() - t)

    gpu_model = net.eval()
    cpu_model = copy.deepcopy(net).to("cpu").eval()
    x, y = test.images.float() / 255, test.labels
    with torch.no_grad():
        lg, lc = gpu_model(x.to(dev)).cpu(), cpu_model(x)
    ga, gc = _input_grad(gpu_model, x.to(dev), y.to(dev)).cpu(), _input_grad(cpu_model, x, y)
    cos = torch.nn.functional.cosine_similarity(ga.flatten(1), gc.flatten(1), dim=1)
    kw = dict(members=MEMBERS, eps=eps, batch_size=batch_size, diagnostics=False, warn=False)
    t = time.perf_counter()
    rg = evaluate(gpu_model, (x, y), **kw)
    gpu_eval_s = time.perf_counter() - t
    t = time.perf_counter()
    rc = evaluate(cpu_model, (x, y), **kw)
    cpu_eval_s = time.perf_counter() - t
    bg, bc = torch.tensor(rg.results[0].breaker), torch.tensor(rc.results[0].breaker)
    result = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev),
        "model": f"{model} width {width} T={time_steps}",
        "train_images_per_s": {"gpu": gpu_ips, "cpu": cpu_ips, "ratio": gpu_ips / cpu_ips},
        "logits_max_abs_diff": float((lg - lc).abs().max()),
        "logits_scale": float(lc.abs().max()),
        "prediction_agreement": float((lg.argmax(1) == lc.argmax(1)).float().mean()),
        "input_grad_cosine_median": float(cos.median()),
        "clean_acc": {"gpu": rg.clean_acc, "cpu": rc.clean_acc},
        "robust_acc": {"gpu": rg.robust_acc, "cpu": rc.robust_acc},
        "robust_verdict_agreement": float(((bg == -1) == (bc == -1)).float().mean()),
        "eval_seconds": {"gpu": gpu_eval_s, "cpu": cpu_eval_s, "ratio": cpu_eval_s / gpu_eval_s},
        **neuron_check(device),
    }
    result["passed"] = bool(
        result["prediction_agreement"] >= 0.97 and result["input_grad_cosine_median"] >= 0.9
        and result["robust_verdict_agreement"] >= 0.9 and abs(rg.robust_acc - rc.robust_acc) <= 0.1
        and result["neuron_spike_agreement"] >= 0.9999 and result["neuron_grad_max_abs_diff"] <= 1e-4
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda or cuda:N")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--time-steps", type=int, default=4)
    ap.add_argument("--n-train", type=int, default=1024)
    ap.add_argument("--n-eval", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU visible to torch (torch.cuda.is_available() is False); run it on a GPU machine",
              file=sys.stderr)
        sys.exit(2)
    r = check(args.device, model=args.model, width=args.width, time_steps=args.time_steps, n_train=args.n_train,
              n_eval=args.n_eval, batch_size=args.batch_size)
    print(json.dumps(r, indent=2))
    print("gpu-check:", "PASS" if r["passed"] else "FAIL (see the agreement numbers above)")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    sys.exit(0 if r["passed"] else 1)


if __name__ == "__main__":
    main()
