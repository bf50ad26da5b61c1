"""The default SNN's layers, NCHW against channels-last and fused against unfused, as ratios from one run.

    python benchmarks/layers_speed.py [--threads 1] [--rounds 9]

On the [T*B, C, H, W] = [256, 32, 14, 14] map of the default SNN (T = 4, batch 64):
the 3x3 convolution to 64 channels (forward + backward: input and weight gradients) on NCHW
and on channels-last tensors, and training batch norm's forward on the [256, 64, 14, 14] output
on NCHW and channels-last: the compiled kernel (robustsnn.batchnorm), the same statistics from
torch ops (the fallback without the kernel) and torch's own ``batch_norm`` (on channels-last maps
torch's vectorises over channels and is faster than the kernel, so the modules route channels-last
maps to torch's), and the flatten + linear layer on the pooled [4, 64, 64, 7, 7] channels-last map
(forward + backward): flatten's copy to (C, H, W) order then the linear layer, against
``Linear.flattened`` (the map read as it lies, the weight's columns permuted instead); and the first
spiking layer (its [64, 32, 28, 28] channels-last current repeated over T = 4 steps, pooled,
forward + backward) with the membrane saved by the forward against recomputed in the backward
(``robustsnn.neurons.recompute_membrane``). Process CPU time on one thread, wall clock on more
(``--threads 2``), allocator tuned (as the command line runs), minimum over interleaved rounds.
"""

from __future__ import annotations

import argparse
import time

import torch

import robustsnn
from robustsnn import batchnorm, layers
from robustsnn.neurons import multistep_spike, recompute_membrane
from robustsnn.timerepeat import repeat_over_time


CLOCK = [time.process_time]  # process CPU time on one thread (load-insensitive); wall clock on more


def _best(fns: dict, rounds: int) -> dict:
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            f()
            t = CLOCK[0]()
            f()
            best[k] = min(best[k], CLOCK[0]() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.threads > 1:
        CLOCK[0] = time.perf_counter
    robustsnn.tune_allocator()
    torch.manual_seed(0)
    cl = torch.channels_last

    def conv_case(fmt):
        x = torch.randn(256, 32, 14, 14).contiguous(memory_format=fmt).requires_grad_(True)
        w = torch.randn(64, 32, 3, 3).requires_grad_(True)
        g = torch.randn(256, 64, 14, 14).contiguous(memory_format=fmt)

        def run():
            torch.nn.functional.conv2d(x, w, padding=1).backward(g)
            x.grad = w.grad = None
        return run

    y = torch.randn(256, 64, 14, 14)
    yc = y.contiguous(memory_format=cl)
    weight, bias = torch.rand(64) + 0.5, torch.randn(64)

    def torch_bn(t):
        return lambda: torch.nn.functional.batch_norm(t, None, None, weight, bias, training=True)

    def flatten_case(fused):
        lin = layers.Linear(64 * 7 * 7, 128)
        x = torch.randn(4, 64, 64, 7, 7).permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
        x.requires_grad_(True)
        g = torch.randn(4, 64, 128)

        def run():
            (lin.flattened(x) if fused else lin(x.flatten(-3))).backward(g)
            x.grad = None
            lin.zero_grad(set_to_none=True)
        return run

    def first_neuron(recompute):
        x = (torch.rand(64, 32, 28, 28) * 1.5).contiguous(memory_format=cl).requires_grad_(True)
        th = torch.tensor(1.0)
        g = torch.randn(4, 64, 32, 14, 14).permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)

        def run():
            with recompute_membrane(recompute):
                multistep_spike(repeat_over_time(x, 4), th, 0.5, pool=True).backward(g)
            x.grad = None
        return run

    fns = {
        "first neuron fwd+bwd, repeated current, saved membrane": first_neuron(False),
        "first neuron fwd+bwd, repeated current, recomputed": first_neuron(True),
        "flatten + linear fwd+bwd, channels-last, copy": flatten_case(False),
        "flatten + linear fwd+bwd, channels-last, fused": flatten_case(True),
        "conv fwd+bwd, NCHW": conv_case(torch.contiguous_format),
        "conv fwd+bwd, channels-last": conv_case(cl),
        "batch norm fwd, NCHW, kernel": lambda: batchnorm._kernel_forward(y, weight, bias, 1e-5),
        "batch norm fwd, NCHW, torch ops": lambda: batchnorm._torch_forward(y, weight, bias, 1e-5),
        "batch norm fwd, NCHW, torch batch_norm": torch_bn(y),
        "batch norm fwd, channels-last, kernel": lambda: batchnorm._kernel_forward(yc, weight, bias, 1e-5),
        "batch norm fwd, channels-last, torch batch_norm": torch_bn(yc),
    }
    with torch.no_grad():
        bn = _best({k: f for k, f in fns.items() if k.startswith("batch")}, args.rounds)
    best = {**_best({k: f for k, f in fns.items() if not k.startswith("batch")}, args.rounds), **bn}
    print(f"robustsnn {robustsnn.__version__}, torch {torch.__version__}, {args.threads} thread(s), "
          f"minimum of {args.rounds} interleaved rounds, {'process CPU time' if args.threads == 1 else 'wall clock'}")
    for k, v in best.items():
        print(f"  {k:56s} {v * 1e3:7.2f} ms")
    print(f"  convolution: NCHW / channels-last x{best['conv fwd+bwd, NCHW'] / best['conv fwd+bwd, channels-last']:.2f}")
    print(f"  first neuron: saved membrane / recomputed x"
          f"{best['first neuron fwd+bwd, repeated current, saved membrane'] / best['first neuron fwd+bwd, repeated current, recomputed']:.2f}")
    print(f"  flatten + linear, channels-last: copy / fused x"
          f"{best['flatten + linear fwd+bwd, channels-last, copy'] / best['flatten + linear fwd+bwd, channels-last, fused']:.2f}")
    for layout in ("NCHW", "channels-last"):
        k = best[f"batch norm fwd, {layout}, kernel"]
        print(f"  batch norm, {layout}: torch batch_norm / kernel x{best[f'batch norm fwd, {layout}, torch batch_norm'] / k:.2f}"
              + (f", torch ops / kernel x{best['batch norm fwd, NCHW, torch ops'] / k:.2f}" if layout == "NCHW" else ""))


if __name__ == "__main__":
    main()
