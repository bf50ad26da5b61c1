"""Speed of the neuron, of training and of one attack member, side by side, as ratios from one run.

    python benchmarks/speed.py [--threads 1 2] [--repeats 5] [--quick]

Everything is measured in one process with interleaved repeats (round r runs every
variant once, at every thread count) and the minimum over rounds is reported, so a
shared, loaded CPU slows all variants alike. A training case times its steps one by one
(6 natural, 3 RFGSM-AT, 2 TRADES per round, after as many + 1 warm-up steps) and keeps the
fastest, as the minimum over rounds does: the mean of two steps, used before, let one slow
step (a neighbour's burst on the shared memory bus) set a round's figure.

1. Neuron forward+backward, LIF [T=8, B=32, C=64, 16, 16] float32, hard reset,
   lambda = 0.99, theta = 1, triangle surrogate: ours (compiled kernel), ours (torch
   path, ``ROBUSTSNN_KERNEL=torch``), a plain Python loop of T autograd steps with a
   custom surrogate, SpikingJelly 2.0 ``LIFNode`` (multi-step, torch backend; tau form
   with tau = 1/(1 - lambda) and input tau * I, i.e. the same dynamics) and snnTorch
   ``Leaky`` (beta = lambda, reset "zero") when installed, all with the allocator tuned
   (robustsnn.allocator, as the command line runs). Also the bytes autograd keeps
   for the backward pass and the fraction of spikes equal to ours.
2. Training images/s of the default model (cnn, LIF, T = 4, batch 64, 28x28): natural and
   RFGSM-AT (the demo's rfgsm-stable, eps 0.1, MPPD rho = 1), "today's path" (torch
   neuron loop, no compute-once encoder, glibc's default malloc, torch's batch norm, NCHW, neuron and pooling
   apart) against ours, ours with glibc's default malloc (the allocator's share: robustsnn.allocator),
   ours in NCHW with neuron and pooling apart (the share of robustsnn.layout and layers.Sequential's
   fused pooling) and bf16 autocast;
   and the T = 8 sweep's SNN (IF, T = 8, TRADES with an R+FGSM inner step, batch 64).
3. One PGD-20 member (batch 16, eval mode) images/s, same variants; and at batch 128 on
   the T = 8 IF SNN (the sweep's evaluation). The members attack the model's own clean
   predictions at eps = 0 (the image never moves, the gradients are computed all the same), so that no image is broken early and every image gets all
   20 gradient steps (with random weights and eps = 0.1 most images are misclassified
   at once and PGD stops on them).
4. The compute bound: FLOPs of one natural training step (torch.utils.flop_counter)
   over a measured float32 sgemm rate (1024 x 1024, the best of one measurement per round,
   taken between the workloads, so a busy moment on a shared core does not lower the bound).
5. bf16 agreement with fp32: clean predictions and PGD-20 verdicts of one model on 256
   images (random weights and inputs unless --checkpoint/--data give real ones).

Runs on the code on PYTHONPATH, so ``PYTHONPATH=/path/to/old/src python benchmarks/speed.py``
measures an older version (variants it lacks are skipped).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from neuron_speed import saved_bytes  # noqa: E402
from test_neurons import reference  # noqa: E402  (the tests' plain loop with its own surrogate)

import robustsnn  # noqa: E402
from robustsnn.attacks.pgd import PGD  # noqa: E402
from robustsnn.models import build  # noqa: E402
from robustsnn.neurons import multistep_spike  # noqa: E402
from robustsnn.surrogates import Surrogate  # noqa: E402
from robustsnn.train.objectives import make_objective  # noqa: E402

try:
    from robustsnn import kernels
except ImportError:  # an older version without the compiled kernel
    kernels = None
try:
    from robustsnn.layers import time_broadcast
except ImportError:
    time_broadcast = None
try:
    from robustsnn.precision import autocast
except ImportError:
    autocast = None
try:
    from robustsnn.allocator import tune_allocator
except ImportError:
    tune_allocator = None
try:
    from robustsnn.batchnorm import fast_batchnorm
except ImportError:
    fast_batchnorm = None
try:
    from robustsnn.layers import fused_pooling
    from robustsnn.layout import channels_last
except ImportError:
    channels_last = fused_pooling = None

SHAPE = (8, 32, 64, 16, 16)
LAM = 0.99


# ------------------------------------------------------------------ variants
@contextlib.contextmanager
def path(kernel: str | None, share: bool | None, malloc: str | None = None, bn: bool | None = None,
         layout: str | None = None, fuse: bool | None = None):
    """Neuron backend (cpp / torch), compute-once encoder on/off, glibc allocator ("system" /
    "tuned", :mod:`robustsnn.allocator`), three-pass CPU batch norm on/off
    (:mod:`robustsnn.batchnorm`), channels-last mode (:mod:`robustsnn.layout`) and the fused
    neuron + 2x2 pooling on/off (:class:`robustsnn.layers.Sequential`), where this version has them."""
    stack = contextlib.ExitStack()
    if channels_last is not None and layout is not None:
        stack.enter_context(channels_last(layout))
    if fused_pooling is not None and fuse is not None:
        stack.enter_context(fused_pooling(fuse))
    if fast_batchnorm is not None and bn is not None:
        stack.enter_context(fast_batchnorm(bn))
    if tune_allocator is not None and malloc is not None:
        tune_allocator(malloc == "tuned")
        stack.callback(tune_allocator, False)
    if kernels is not None and kernel is not None:
        saved = kernels.backend()
        kernels.set_backend(kernel)
        stack.callback(kernels.set_backend, saved)
    if time_broadcast is not None and share is not None:
        stack.enter_context(time_broadcast(share))
    with stack:
        yield


def neuron_variants(x: torch.Tensor, compiled: bool = False) -> dict:
    """name -> (leaf input, fn() -> spikes); ``compiled`` adds the torch.compile path (the GPU default)."""
    theta = torch.tensor(1.0)
    out = {}
    if kernels is not None and kernels.get() is not None:
        def ours():
            with path("cpp", None):
                return multistep_spike(x, theta, LAM, None, "hard", Surrogate("triangle"))
        out["ours (kernel)"] = (x, ours)
    if compiled and kernels is not None and hasattr(kernels, "compiled"):
        def ours_compiled():
            with path("compile", None):
                return multistep_spike(x, theta, LAM, None, "hard", Surrogate("triangle"))
        out["ours (torch.compile)"] = (x, ours_compiled)

    def ours_torch():
        with path("torch", None):
            return multistep_spike(x, theta, LAM, None, "hard", Surrogate("triangle"))
    out["ours (torch path)" if kernels is not None else "ours (fused op)"] = (x, ours_torch)
    out["plain loop"] = (x, lambda: reference(x, theta, LAM, None, "hard", "triangle", 1.0, 1.0))
    try:
        from spikingjelly.activation_based import neuron, surrogate

        tau = 1.0 / (1.0 - LAM)
        xs = (x.detach() * tau).requires_grad_(True)
        node = neuron.LIFNode(tau=tau, decay_input=True, v_threshold=1.0, v_reset=0.0, step_mode="m",
                              surrogate_function=surrogate.PiecewiseQuadratic(alpha=1.0))  # torch backend (2.0: the only one)

        def sj():
            node.reset()
            return node(xs)
        out["SpikingJelly LIFNode"] = (xs, sj)
    except Exception:  # noqa: BLE001 - not installed or incompatible
        pass
    try:
        import snntorch as snn
        from snntorch import surrogate as ssur

        leaky = snn.Leaky(beta=LAM, threshold=1.0, reset_mechanism="zero", spike_grad=ssur.triangular())
        xn = x.detach().clone().requires_grad_(True)

        def snt():
            mem = leaky.init_leaky()
            spk = []
            for t in range(xn.shape[0]):
                s, mem = leaky(xn[t], mem)
                spk.append(s)
            return torch.stack(spk)
        out["snnTorch Leaky"] = (xn, snt)
    except Exception:  # noqa: BLE001
        pass
    return out


def saved_mib(fn) -> float:
    """MiB of tensors autograd keeps for the backward pass of ``fn()``."""
    return saved_bytes(fn) / 2**20


def train_step_fn(model, objective, opt, x, y, precision="fp32"):
    def step():
        with (autocast(precision) if autocast is not None else contextlib.nullcontext()):
            loss, _ = objective(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


PGD_EPS = 0.0


def own_predictions(model, x):
    """Labels the attack keeps from breaking: the model's clean predictions (eval mode)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    model.train(was)
    return y


def default_model():
    torch.manual_seed(0)
    return build("cnn", "snn", neuron="lif", time_steps=4)


# ------------------------------------------------------------------ measurement
CLOCK = {"fn": time.perf_counter}


def timed(fn, n: int = 1) -> float:
    clock = CLOCK["fn"]
    t0 = clock()
    for _ in range(n):
        fn()
    return (clock() - t0) / n


def sgemm_gflops(n: int = 1024, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n**3 / min(timed(lambda: a @ b) for _ in range(reps)) / 1e9


def step_flops(model, x, y) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    obj = make_objective("natural")
    with FlopCounterMode(display=False) as fc:
        loss, _ = obj(model, x, y)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


GEMM_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::addmm", "aten::mm", "aten::bmm",
            "aten::_convolution", "aten::thnn_conv2d", "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward")


def gemm_share(model, x, y, reps: int = 3) -> float:
    """Share of a natural training step's time spent in convolution / matmul kernels (the only
    kernels flop_counter counts), from torch.profiler's self times over ``reps`` steps. With the
    step time of section 2 this gives those kernels' own GFLOP/s, and what the rest (neurons,
    batch norm, pooling, autograd) costs."""
    from torch.profiler import ProfilerActivity, profile

    obj = make_objective("natural")

    def step():
        loss, _ = obj(model, x, y)
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            step()
    ev = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ev)
    return sum(e.self_cpu_time_total for e in ev if e.key in GEMM_OPS) / max(total, 1e-9)


def agreement(precision_ctx, model, x, y) -> dict:
    """Clean and PGD-20 (eps 0.1) verdicts of an fp32 and a bf16 evaluation of the same model."""
    model.eval()
    out = {}
    for name, ctx in (("fp32", contextlib.nullcontext), ("bf16", precision_ctx)):
        with ctx():
            with torch.no_grad():
                clean = model(x).argmax(1) == y
            xa = PGD(model, 0.1, steps=20)(x, y)
            with torch.no_grad():
                robust = model(xa).argmax(1) == y
        out[name] = (clean, robust)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (minimum taken)")
    ap.add_argument("--quick", action="store_true", help="fewer rounds for the slow parts")
    demo = Path(__file__).resolve().parents[1] / "results" / "demo" / "model"
    ap.add_argument("--checkpoint", default=str(demo) if demo.exists() else None,
                    help="model for the bf16 agreement (default: results/demo/model, else a random cnn)")
    ap.add_argument("--data", default="fashion-mnist",
                    help="test set of the agreement (default fashion-mnist; random images if it cannot load)")
    ap.add_argument("--agree-n", type=int, default=128, help="images of the bf16 agreement")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time, or process CPU time (load-insensitive; meaningful with --threads 1 only)")
    ap.add_argument("--compile", action="store_true",
                    help="also time the neuron through torch.compile (the CUDA default; about a minute to compile)")
    args = ap.parse_args()
    if args.clock == "cpu":
        CLOCK["fn"] = time.process_time
    warnings.simplefilter("ignore")
    torch.manual_seed(0)

    # -- 1. neuron (every implementation with the allocator tuned, as the command line runs: with glibc's
    # default, whether a 16 MB output page-faults depends on its dynamic mmap threshold's history)
    if tune_allocator is not None:
        tune_allocator(True)
    x = (torch.rand(SHAPE) * 1.5).requires_grad_(True)
    up = torch.randn(SHAPE)
    variants = neuron_variants(x, args.compile)
    ref_spikes = None
    agree, mem = {}, {}
    for name, (leaf, fn) in variants.items():
        s = fn().detach()
        ref_spikes = s if ref_spikes is None else ref_spikes
        agree[name] = float((s == ref_spikes).float().mean())
        mem[name] = saved_mib(fn)
    neuron_t = {(k, n): float("inf") for k in variants for n in args.threads}
    neuron_rounds = 4 if args.quick else 3 * args.repeats
    for _ in range(neuron_rounds):
        for n in args.threads:
            torch.set_num_threads(n)
            for name, (leaf, fn) in variants.items():
                leaf.grad = None
                t = timed(lambda: (fn() * up).sum().backward())
                neuron_t[name, n] = min(neuron_t[name, n], t)
    if tune_allocator is not None:
        tune_allocator(False)

    # -- 2./3. training and attack
    model = default_model()
    B = 64
    g = torch.Generator().manual_seed(1)
    xb = torch.rand(B, 1, 28, 28, generator=g)
    yb = torch.randint(0, 10, (B,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)  # tiny lr: weights barely move
    natural = make_objective("natural")
    rfgsm = make_objective("rfgsm-stable", eps=0.1, clean_weight=0.5, mppd=1.0)
    # PGD stops on a sample once it is misclassified, and random weights misclassify at once: the
    # members attack the model's own predictions at eps = 0 (the image never moves), so all
    # 20 steps run on every image (the work of one member on robust samples)
    # (on models of their own: the training workloads change the trained models' predictions)
    pgd_model = default_model()
    pgd = PGD(pgd_model, PGD_EPS, steps=20)
    PB = 16  # PGD batch
    today = ("torch", False, "system", False, "off", False)
    ours_system = ("cpp", True, "system", True, "auto", True)
    ours = ("cpp", True, "tuned", True, "auto", True)
    ours_nchw = ("cpp", True, "tuned", True, "off", False)  # ours without channels-last and the fused pooling
    # (objective, steps timed one by one: the fastest counts, as the minimum over rounds does)
    work = {"train natural": (natural, 6), "train RFGSM-AT": (rfgsm, 3), "PGD-20 member": (None, 1),
            "train TRADES T=8": (make_objective("trades", eps=0.1, beta=2.0, inner="rfgsm"), 2),
            "PGD-20 member T=8": (None, 1)}
    torch.manual_seed(0)
    model8 = build("cnn", "snn", neuron="if", time_steps=8)
    opt8 = torch.optim.SGD(model8.parameters(), lr=0.01, momentum=0.9)
    PB8 = 128
    xb8 = torch.rand(PB8, *xb.shape[1:])
    torch.manual_seed(0)
    pgd_model8 = build("cnn", "snn", neuron="if", time_steps=8)
    pgd8 = PGD(pgd_model8, PGD_EPS, steps=20)
    ypgd, yb8 = own_predictions(pgd_model, xb[:PB]), own_predictions(pgd_model8, xb8)
    cases = [("today's path", today, "fp32"), ("ours, system malloc", ours_system, "fp32"),
             ("ours, NCHW unfused", ours_nchw, "fp32"), ("ours", ours, "fp32")]
    if autocast is not None:
        cases.append(("ours bf16", ours, "bf16"))
    if kernels is None:
        cases = [("this version", (None, None, None, None), "fp32")]
    rt = {}
    gf = {n: 0.0 for n in args.threads}  # sgemm GFLOP/s: the best of every round, measured between the workloads
    rounds = 2 if args.quick else max(2, args.repeats)
    for r in range(rounds):
        for n in args.threads:
            torch.set_num_threads(n)
            gf[n] = max(gf[n], sgemm_gflops())
            for wname, (obj, steps) in work.items():
                for cname, variant, prec in cases:
                    if wname.endswith("T=8") and prec != "fp32":
                        continue
                    if obj is None:
                        atk, xa, ya = (pgd8, xb8, yb8) if wname.endswith("T=8") else (pgd, xb[:PB], ypgd)
                        fn = lambda: atk(xa, ya)  # noqa: E731
                        ctx = autocast(prec) if prec != "fp32" else contextlib.nullcontext()
                    elif wname.endswith("T=8"):
                        fn = train_step_fn(model8, obj, opt8, xb, yb, prec)
                        ctx = contextlib.nullcontext()
                    else:
                        fn = train_step_fn(model, obj, opt, xb, yb, prec)
                        ctx = contextlib.nullcontext()
                    with path(*variant), ctx:
                        for _ in range(steps + 1):  # warm-up after every switch: the heap regrows after malloc_trim
                            fn()
                        t = min(timed(fn) for _ in range(steps))
                    key = (wname, cname, n)
                    rt[key] = min(rt.get(key, float("inf")), t)

    # -- 4. compute bound
    flops = step_flops(default_model(), xb, yb) / B
    gshare = {}
    for n in args.threads:
        torch.set_num_threads(n)
        gf[n] = max(gf[n], sgemm_gflops())
        with path(*(cases[-1][1] if kernels is None else ours)):  # noqa: SIM117
            gshare[n] = gemm_share(default_model(), xb, yb)

    # -- print
    print(f"robustsnn {getattr(robustsnn, '__version__', '?')} from {Path(robustsnn.__file__).parent}, "
          f"torch {torch.__version__}, threads {args.threads}, rounds neuron {neuron_rounds} / "
          f"training {rounds} (minimum of interleaved repeats), {args.clock} clock")
    print(f"\n1. neuron forward+backward, LIF {list(SHAPE)} float32, hard reset, lambda={LAM}, triangle surrogate")
    head = "".join(f"  {n} thr ms" for n in args.threads)
    print(f"{'implementation':24s}{head}  saved-for-backward  spikes = ours")
    plain = {n: neuron_t["plain loop", n] for n in args.threads}
    for name in variants:
        cols = "".join(f"  {neuron_t[name, n] * 1e3:9.2f}" for n in args.threads)
        print(f"{name:24s}{cols}  {mem[name]:8.1f} MiB        {agree[name]:.4%}")
    first = next(iter(variants))
    for other in variants:
        if other == first:
            continue
        r = "  ".join(f"{n} thr x{neuron_t[other, n] / neuron_t[first, n]:.2f}" for n in args.threads)
        print(f"  {first} vs {other}: {r}")
    print(f"\n2./3. default model (cnn, LIF, T=4, batch {B}) and, rows ending in T=8, the sweep's IF SNN (T=8): images/s")
    for wname in work:
        for n in args.threads:
            size = {"PGD-20 member": PB, "PGD-20 member T=8": PB8}.get(wname, B)
            row = {c: size / rt[wname, c, n] for c, _, _ in cases if (wname, c, n) in rt}
            txt = "  ".join(f"{c} {v:7.1f}" for c, v in row.items())
            if "today's path" in row:
                txt += "   ours/today x{:.2f}".format(row["ours"] / row["today's path"])
                if "ours, system malloc" in row:
                    txt += "  allocator alone x{:.2f}".format(row["ours"] / row["ours, system malloc"])
                if "ours, NCHW unfused" in row:
                    txt += "  layout+fusion alone x{:.2f}".format(row["ours"] / row["ours, NCHW unfused"])
                if "ours bf16" in row:
                    txt += "  bf16/today x{:.2f}".format(row["ours bf16"] / row["today's path"])
            print(f"  {wname:15s} {n} thr: {txt}")
    print(f"\n4. compute bound: {flops / 1e9:.3f} GFLOP per image per natural training step (flop_counter)")
    for n in args.threads:
        bound = gf[n] * 1e9 / flops
        best = max(B / rt["train natural", c, n] for c, _, _ in cases if c != "ours bf16")
        print(f"  {n} thr: sgemm {gf[n]:6.1f} GFLOP/s -> bound {bound:6.1f} images/s; "
              f"best fp32 natural {best:6.1f} images/s = bound / {bound / best:.2f}")
        share = gshare[n]
        ips = B / rt["train natural", "ours", n] if ("train natural", "ours", n) in rt else best
        rate = flops * ips / share / 1e9  # GEMM FLOPs per second of the GEMM kernels' share of a step
        print(f"         conv/matmul kernels: {share:.0%} of the step (profiler self time) at {rate:6.1f} GFLOP/s "
              f"= sgemm / {gf[n] / rate:.2f}; the other {1 - share:.0%} (neurons, batch norm, pooling, autograd) "
              f"has no FLOPs in the bound: with it free a step would be bound / {gf[n] / rate:.2f}")
    if autocast is not None:
        torch.set_num_threads(max(args.threads))
        m, xa, ya, what = model, xb, yb, "random cnn, random images"
        try:
            if args.checkpoint:
                m, what = robustsnn.load(args.checkpoint), f"{args.checkpoint}, random images"
            if args.data:
                from robustsnn.evaluate import _as_tensors

                xa, ya, _ = _as_tensors(args.data, args.agree_n)
                what = what.replace("random images", f"{args.data} test images")
        except Exception as e:  # noqa: BLE001 - fall back to random inputs
            print(f"(agreement on random inputs: {e})")
        res = agreement(lambda: autocast("bf16"), m, xa, ya)
        (c32, r32), (c16, r16) = res["fp32"], res["bf16"]
        print(f"\n5. bf16 vs fp32 evaluation on {len(ya)} images ({what}):\n"
              f"  clean accuracy fp32 {c32.float().mean():.1%} bf16 {c16.float().mean():.1%}, "
              f"verdicts agree {(c32 == c16).float().mean():.1%}\n"
              f"  PGD-20 (eps 0.1) accuracy fp32 {r32.float().mean():.1%} bf16 {r16.float().mean():.1%}, "
              f"verdicts agree {(r32 == r16).float().mean():.1%}")


if __name__ == "__main__":
    main()
