"""Fused multi-step LIF vs the plain reference loop (T autograd steps), one run, as ratios.

    python benchmarks/neuron_speed.py [--repeats 20] [--threads 2]

Shape [T=8, B=32, C=64, H=16, W=16], float32, hard reset, triangle surrogate.
Reports forward+backward wall time (median of repeats) and the memory kept for
the backward pass (bytes of tensors autograd saves, counted with
torch.autograd.graph.saved_tensors_hooks) and the peak resident-memory growth.
The reference is the one the tests check the fused neuron against.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_neurons import reference  # noqa: E402  (the tests' plain loop)

from robustsnn.neurons import multistep_spike  # noqa: E402
from robustsnn.surrogates import Surrogate  # noqa: E402

SHAPE = (8, 32, 64, 16, 16)


def saved_bytes(fn) -> int:
    """Bytes of all tensors autograd saves for backward while running ``fn``."""
    total = 0
    seen = set()

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.dtype, tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return total


def time_fwd_bwd(fn, x, upstream, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        x.grad = None
        t0 = time.perf_counter()
        (fn() * upstream).sum().backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = (torch.rand(SHAPE) * 1.5).requires_grad_(True)
    theta = torch.tensor(1.0)
    up = torch.randn(SHAPE)
    ours = lambda: multistep_spike(x, theta, 0.99, None, "hard", Surrogate("triangle"))  # noqa: E731
    ref = lambda: reference(x, theta, 0.99, None, "hard", "triangle", 1.0, 1.0)  # noqa: E731
    # warm-up + correctness guard
    assert torch.equal(ours(), ref())
    t_ours = time_fwd_bwd(ours, x, up, args.repeats)
    t_ref = time_fwd_bwd(ref, x, up, args.repeats)
    m_ours, m_ref = saved_bytes(ours), saved_bytes(ref)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"shape [T,B,C,H,W] = {list(SHAPE)}, threads={args.threads}, repeats={args.repeats}")
    print(f"forward+backward  ours {t_ours * 1e3:8.2f} ms   reference loop {t_ref * 1e3:8.2f} ms   speed-up x{t_ref / t_ours:.2f}")
    print(f"saved for backward ours {m_ours / 2**20:7.1f} MiB  reference loop {m_ref / 2**20:7.1f} MiB  memory ratio x{m_ref / m_ours:.2f}")
    print(f"(process peak RSS {rss0 / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
