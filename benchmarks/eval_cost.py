"""Cost of the evaluation presets, and of early exit vs every member on every sample.

    python benchmarks/eval_cost.py --presets quick,pgd-ens,standard,strongest --n 200
    python benchmarks/eval_cost.py --presets pgd-ens,strongest,autoattack --ckpt RUN/model --n 200
    python benchmarks/eval_cost.py --presets pgd-ens,strongest,autoattack --ckpt RUN/model --n 200 \
        --eps 0.1 --save-dir RUN --json results/eval_cost/RUN.json   # keep every result
    python benchmarks/eval_cost.py                       # early exit vs every member, tiny SNN
    python benchmarks/eval_cost.py --ckpt runs/train/model --n 200 --eps 0.03,0.1

``--presets``: one ``robustsnn.evaluate`` per preset on the same images (diagnostics
off), printing robust accuracy, seconds and the cost ratio against pgd-ens, then
every member of the last ordered preset (``strongest``) with its seconds, and
whether ``strongest`` is at or below every other preset on those images, and how
many samples another preset broke that ``strongest`` left standing (per sample).
``--save-dir`` writes each preset's full result as ``eval-<preset>.json`` there
(what ``scripts/results_table.py`` reads); ``--json`` the summary with every member.
``--reuse autoattack`` reads that preset's saved result instead of running it again
(same images, eps and seed checked; its seconds are the earlier run's, marked ``reused``).
``--clock cpu`` times each preset by the process's CPU time instead of the wall clock: at one thread
(OMP_NUM_THREADS=1) other jobs on the machine do not change it, so ratios from a busy machine hold. Default
checkpoint: results/fmnist/lif_rfgsm_parseval_mppd1/model (a robust Fashion-MNIST SNN).

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
from pathlib import Path

import torch

from robustsnn.attacks import Ensemble, preset_members
from robustsnn.attacks.toy import toy_data, trained_toy_model


ROBUST_CKPT = Path(__file__).resolve().parent.parent / "results/fmnist/lif_rfgsm_parseval_mppd1/model"


def _load(ckpt: str, n: int):
    from robustsnn import checkpoint
    from robustsnn.data import load_dataset

    model = checkpoint.load(ckpt)
    ds = load_dataset(checkpoint.read_meta(ckpt).get("dataset") or "fashion-mnist", "test")
    return model, ds.images[:n].float() / 255, ds.labels[:n]


def compare_presets(args) -> None:
    """One evaluate() per preset on the same images; robust accuracy, seconds, ratio vs pgd-ens."""
    import warnings

    import robustsnn

    ckpt = args.ckpt or str(ROBUST_CKPT)
    model, x, y = _load(ckpt, args.n)
    eps = float(args.eps.split(",")[0])
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"model: {ckpt}; n={len(y)}; eps={eps:g}; threads={torch.get_num_threads()}; "
          f"{'process CPU' if args.clock == 'cpu' else 'wall'} seconds")
    rows, results = [], {}
    reuse = {p.strip() for p in (args.reuse or "").split(",") if p.strip()}
    for p in presets:
        saved = Path(args.save_dir or ".") / f"eval-{p}.json"
        if p in reuse:
            res = _saved_result(saved, p, len(y), eps, args.seed)
            sec = res.timings.get("total") or res.results[0].seconds
        else:
            t = clock()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = robustsnn.evaluate(model, (x, y), preset=p, eps=eps, n=args.n, diagnostics=False,
                                         batch_size=args.batch_size, seed=args.seed)
            sec = clock() - t
            if args.save_dir:
                res.save(saved)
        results[p] = res
        rows.append({"preset": p, "robust_acc": res.robust_acc, "seconds": sec, "clean_acc": res.clean_acc,
                     "reused": p in reuse})
        print(f"  {p}: robust {res.robust_acc:.1%} in {sec:.1f} s" + (f" (reused {saved})" if p in reuse else ""),
              flush=True)
    base = next((r["seconds"] for r in rows if r["preset"] == "pgd-ens"), None)
    print(f"{'preset':<12} {'robust':>8} {'seconds':>9} {'x pgd-ens':>10}")
    for r in rows:
        r["ratio_vs_pgd_ens"] = r["seconds"] / base if base else None
        ratio = f"{r['ratio_vs_pgd_ens']:.2f}" if base else "-"
        print(f"{r['preset']:<12} {r['robust_acc']:>8.1%} {r['seconds']:>9.1f} {ratio:>10}")
    summary = {"source": ckpt, "n": len(y), "eps": eps, "threads": torch.get_num_threads(), "clock": args.clock,
               "rows": rows}
    if "strongest" in results:
        res = results["strongest"]
        summary["strongest_members"] = [
            {k: m.get(k) for k in ("label", "attacked", "broke", "seconds")}
            | {"calibration_broke": (m.get("calibration") or {}).get("broke"),
               "dropped": bool((m.get("calibration") or {}).get("pruned"))}
            for m in res.results[0].members]
        summary["checks"] = {}
        print("strongest, member by member (seconds over both phases; cal = calibration batch):")
        for m in res.results[0].members:
            cal = m.get("calibration") or {}
            tag = "  (dropped after calibration)" if cal.get("pruned") else ""
            print(f"  {m['label']:<44} attacked {m['attacked']:>5}  broke {m['broke']:>4}  {m['seconds']:>8.1f} s"
                  f"  cal broke {cal.get('broke', 0)}{tag}")
        for p, other in results.items():
            if p != "strongest":
                ok = res.robust_acc <= other.robust_acc + 1e-12
                only = _broken_only_by(other, res)
                print(f"strongest {res.robust_acc:.1%} {'<=' if ok else '>'} {p} {other.robust_acc:.1%}; "
                      f"samples {p} broke and strongest did not: {only}")
                summary["checks"][p] = {"strongest_at_or_below": ok, "broken_only_by_other": only}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


def _saved_result(path: Path, preset: str, n: int, eps: float, seed: int):
    """The result ``--save-dir`` kept for ``preset``; exits with one line if it is missing or for other images."""
    from robustsnn.evaluate import EvalResult

    if not path.is_file():
        raise SystemExit(f"--reuse {preset}: no saved result {path}; run once without --reuse {preset}")
    res = EvalResult.load(path)
    if res.n != n or res.seed != seed or abs(res.results[0].eps - eps) > 1e-12:
        raise SystemExit(f"--reuse {preset}: {path} is for n={res.n}, seed={res.seed}, eps={res.results[0].eps:g}, "
                         f"not n={n}, seed={seed}, eps={eps:g}; run it again without --reuse")
    return res


def _broken_only_by(other, res) -> int:
    """Samples clean-correct in both results that ``other`` broke and ``res`` left robust (breaker -1)."""
    a, b = other.results[0].breaker, res.results[0].breaker
    return sum(1 for i, j in zip(a, b) if i >= 0 and j == -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="checkpoint to evaluate (default: a tiny SNN trained here in seconds)")
    ap.add_argument("--n", type=int, default=128, help="test images")
    ap.add_argument("--eps", default="0.03,0.1", help="budgets, comma-separated")
    ap.add_argument("--preset", default="standard")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--presets", help="compare these presets (comma-separated) with one evaluate() each")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-dir", help="with --presets: write each preset's result as eval-<preset>.json here")
    ap.add_argument("--reuse", help="with --presets and --save-dir: read these presets' results (comma-separated) "
                    "from the save dir instead of running them again (same images, eps and seed; their seconds are "
                    "from that earlier run)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="with --presets: wall time, or the process's CPU time (insensitive to other jobs on the "
                         "machine; meaningful at one thread, OMP_NUM_THREADS=1). Members' own seconds stay wall time.")
    args = ap.parse_args()
    if args.presets:
        compare_presets(args)
        return

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
