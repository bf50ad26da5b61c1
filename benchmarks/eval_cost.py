"""Cost of the standard ensemble (PGD-20 x 19 estimators) with early exit vs every member on every sample.

    python benchmarks/eval_cost.py                       # tiny SNN trained on the spot
    python benchmarks/eval_cost.py --ckpt runs/train/model --n 200 --eps 0.03,0.1

Early exit only attacks samples that no earlier member broke; running every
member on every sample gives the same verdicts for our own attacks (their randomness
is keyed by sample, APGD's starts included) and each member's accuracy on its own.
Square draws its square positions per batch, so a few verdicts may differ with it.
Prints wall times and the ratio (every / early exit) per eps.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from robustsnn.attacks import Ensemble, preset_members
from robustsnn.attacks.toy import toy_data, trained_toy_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="checkpoint to evaluate (default: a tiny SNN trained here in seconds)")
    ap.add_argument("--n", type=int, default=128, help="test images")
    ap.add_argument("--eps", default="0.03,0.1", help="budgets, comma-separated")
    ap.add_argument("--preset", default="standard")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()

    if args.ckpt:
        from robustsnn import checkpoint
        from robustsnn.data import load_dataset

        model = checkpoint.load(args.ckpt)
        ds = load_dataset(checkpoint.read_meta(args.ckpt).get("dataset") or "fashion-mnist", "test")
        x, y = ds.images[: args.n].float() / 255, ds.labels[: args.n]
        source = args.ckpt
    else:
        model = trained_toy_model("snn")
        x, y = toy_data("test", args.n)
        source = "toy SNN (cnn width 0.25, T=2, trained on 3000 Fashion-MNIST images)"
    members = preset_members(args.preset, model)
    print(f"model: {source}; preset {args.preset}: {len(members)} members; n={len(y)}; threads={torch.get_num_threads()}")
    rows = []
    for eps in [float(e) for e in args.eps.split(",")]:
        times, runs = {}, {}
        for early in (True, False):
            t = time.perf_counter()
            runs[early] = Ensemble(model, members, eps=eps, early_exit=early, batch_size=args.batch_size).run(x, y)
            times[early] = time.perf_counter() - t
        same = torch.equal(runs[True].robust, runs[False].robust)
        differ = int((runs[True].robust != runs[False].robust).sum())
        ratio = times[False] / times[True]
        attacked = (sum(r.attacked for r in runs[True].members), sum(r.attacked for r in runs[False].members))
        rows.append({"eps": eps, "robust_acc": runs[True].robust_acc, "early_exit_s": times[True], "every_member_s": times[False],
                     "ratio": ratio, "same_verdicts": same, "differing_verdicts": differ, "attacked_early": attacked[0], "attacked_every": attacked[1]})
        print(
            f"eps={eps:g}: robust {runs[True].robust_acc:.1%}  early exit {times[True]:.1f} s "
            f"({attacked[0]} sample-attacks)  every member {times[False]:.1f} s ({attacked[1]})  "
            f"ratio {ratio:.2f}x  same verdicts: {same} ({differ} differ)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"source": source, "preset": args.preset, "n": len(y), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
