#!/usr/bin/env bash
# Run pipeline configs in order; the first one's robust ANN is reused by the rest (--ann).
#   scripts/run_pipelines.sh configs/pipeline/fmnist_hydra_s90.yaml configs/pipeline/fmnist_baseline_random_s90.yaml ...
# Each run lives in runs/pipeline/<config name>; re-running continues unfinished stages.
# ANN=RUN/ann/model reuses that robust ANN for every config (e.g. the sweep's first one).
set -uo pipefail
ann="${ANN:-}"
for cfg in "$@"; do
  name=$(basename "$cfg" .yaml); out="runs/pipeline/$name"
  extra=""; [ -n "$ann" ] && extra="--ann $ann"
  echo "run $cfg -> $out $extra"
  robustsnn pipeline --config "$cfg" --out "$out" $extra --no-progress >> "$out.log" 2>&1 || echo "FAILED $cfg (see $out.log)"
  if [ -z "$ann" ] && [ -f "$out/ann/model/config.json" ]; then ann="$out/ann/model"; fi
done
