#!/usr/bin/env bash
# Issue 14: the `strongest` preset on rows of the robust-stable matrix (configs/fmnist), first N test images.
#   scripts/strongest_rows.sh lif_rfgsm_mppd0 lif_rfgsm_mppd1 ...      (N=200 by default)
# A row whose checkpoint is not in runs/fmnist/ is trained again from its config (seeded: the same
# weights as the run behind docs/results.md; its final test accuracy is in its config.json to compare).
# Results go to results/eval_cost/fmnist_<row>/eval-strongest.json, which scripts/results_table.py reads.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${N:-200}"
for row in "$@"; do
  run="runs/fmnist/$row"
  if [ ! -f "$run/model/config.json" ]; then
    robustsnn train --config "configs/fmnist/$row.yaml" --out "$run" --eval-preset "" --no-progress
  fi
  out="results/eval_cost/fmnist_$row"
  if [ ! -f "$out/eval-strongest.json" ]; then
    robustsnn evaluate "$run/model" --preset strongest --n "$n" --out "$out/eval-strongest.json" --no-progress
  fi
done
