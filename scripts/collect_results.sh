#!/usr/bin/env bash
# Copy the small, durable artefacts of finished runs from runs/ into results/ (committed):
# every JSON result, log, and the checkpoint of the model that was evaluated
# (config.json + weights.safetensors, no optimiser state). .gitignore keeps the weights and
# the generated reports out of git except the model zoo listed in the README.
#   scripts/collect_results.sh && python scripts/results_table.py --runs results
set -euo pipefail
cd "$(dirname "$0")/.."
for run in runs/fmnist/* runs/fmnist_full/* runs/pipeline/*; do
  [ -d "$run" ] || continue
  dest="results/${run#runs/}"
  mkdir -p "$dest"
  find "$run" -maxdepth 1 -type f \( -name '*.json' -o -name '*.md' -o -name '*.html' \) -exec cp {} "$dest/" \;
  [ -f "$run.log" ] && cp "$run.log" "$dest/run.log"
  for ckpt in model ann/model finetune/model baseline/model; do
    # an ANN taken from elsewhere (pipeline --ann) stays where it came from
    if [ "$ckpt" = ann/model ] && grep -q '"source"' "$run/$ckpt/config.json" 2>/dev/null; then continue; fi
    if [ -f "$run/$ckpt/config.json" ]; then
      mkdir -p "$dest/$ckpt"; cp "$run/$ckpt/config.json" "$run/$ckpt/weights.safetensors" "$dest/$ckpt/"
    fi
  done
  for sub in ann prune snn finetune baseline; do
    [ -f "$run/$sub/log.json" ] && { mkdir -p "$dest/$sub"; cp "$run/$sub/log.json" "$dest/$sub/"; }
  done
  [ -d "$run/report_files" ] && cp -r "$run/report_files" "$dest/"
  true
done
echo "collected into results/"
