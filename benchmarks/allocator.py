"""glibc's default malloc against robustsnn.tune_allocator(), each in fresh processes.

    python benchmarks/allocator.py [--rounds 3] [--threads 1]

benchmarks/speed.py switches the allocator inside one process, where glibc's dynamic
thresholds, once set, cannot come back: its "system malloc" is glibc's best steady state.
Here every measurement is a new process (alternating system / tuned, ``--rounds`` times,
minimum taken), so "system" is exactly what a user's process gets without the tuning:

- training steps of the T = 8 sweep's SNN (cnn, IF, T = 8, batch 64, TRADES with an
  R+FGSM inner step) and of the default SNN (cnn, LIF, T = 4, natural),
- one PGD-20 member on 128 images against the T = 8 SNN (eval mode; it attacks the model's
  own predictions at eps = 0, so that every image gets all 20 gradient steps),

with the peak resident memory of each process. Process CPU time (``--clock cpu``, the
default) is insensitive to other jobs on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

WORKER = r"""
import json, resource, sys, time, torch, robustsnn
from robustsnn.attacks.pgd import PGD
from robustsnn.train.objectives import make_objective
mode, threads, clock = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "tuned":
    assert robustsnn.tune_allocator()
torch.set_num_threads(threads)
now = time.process_time if clock == "cpu" else time.perf_counter
out = {}
for name, T, neuron, obj, steps in (("train TRADES T=8", 8, "if", "trades", 3), ("train natural T=4", 4, "lif", "natural", 6)):
    torch.manual_seed(0)
    m = robustsnn.build("cnn", kind="snn", neuron=neuron, time_steps=T)
    o = make_objective("trades", eps=0.1, beta=2.0, inner="rfgsm") if obj == "trades" else make_objective("natural")
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    def step():
        opt.zero_grad(set_to_none=True); loss, _ = o(m, x, y); loss.backward(); opt.step()
    step()
    t = now()
    for _ in range(steps):
        step()
    out[name] = 64 * steps / (now() - t)
torch.manual_seed(0)
m = robustsnn.build("cnn", kind="snn", neuron="if", time_steps=8)
x = torch.rand(128, 1, 28, 28)
m.eval()
with torch.no_grad():
    y = m(x).argmax(1)  # its own predictions at eps = 0: no image breaks early, all 20 steps run
atk = PGD(m, 0.0, steps=20)
atk(x[:16], y[:16])
t = now()
atk(x, y)
out["PGD-20 member T=8"] = 128 / (now() - t)
out["peak RSS MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def run(mode: str, threads: int, clock: str) -> dict:
    env = {"OMP_NUM_THREADS": str(threads), "PATH": "/usr/bin:/bin", "ROBUSTSNN_MALLOC": "system"}
    res = subprocess.run([sys.executable, "-c", WORKER, mode, str(threads), clock], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()
    best: dict = {"system": {}, "tuned": {}}
    t0 = time.perf_counter()
    for _ in range(args.rounds):
        for mode in ("system", "tuned"):
            for k, v in run(mode, args.threads, args.clock).items():
                keep = min if k == "peak RSS MiB" else max
                best[mode][k] = keep(best[mode].get(k, v), v)
    print(f"fresh processes, {args.rounds} rounds alternating, {args.threads} thread(s), {args.clock} clock, "
          f"best of rounds ({time.perf_counter() - t0:.0f} s)")
    print(f"{'':22s} {'glibc default':>14s} {'tuned':>10s} {'ratio':>7s}")
    for k in best["system"]:
        s, t = best["system"][k], best["tuned"][k]
        unit = "" if k == "peak RSS MiB" else " img/s"
        print(f"{k:22s} {s:>14.1f} {t:>10.1f} {t / s:>6.2f}x{unit}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": args.rounds, "threads": args.threads, "clock": args.clock, **best}, f, indent=2)


if __name__ == "__main__":
    main()
