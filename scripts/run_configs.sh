#!/usr/bin/env bash
# Run training configs one after another, resumably:
#   scripts/run_configs.sh configs/fmnist/lif_natural.yaml configs/fmnist/lif_rfgsm_mppd1.yaml ...
# A config whose run directory already holds every eval-*.json it asks for is skipped;
# one whose checkpoint exists is resumed (--resume) and then evaluated.
# EVAL_PRESET=fgsm,quick overrides the configs' eval_preset (e.g. to leave the ensemble for later).
set -uo pipefail
for cfg in "$@"; do
  out=$(python3 -c "import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))['out'])" "$cfg")
  presets=${EVAL_PRESET:-$(python3 -c "import sys,yaml; print(yaml.safe_load(open(sys.argv[1])).get('eval_preset') or '')" "$cfg")}
  override=""; [ -n "${EVAL_PRESET:-}" ] && override="--eval-preset $EVAL_PRESET"
  done=1
  for p in ${presets//,/ }; do [ -f "$out/eval-$p.json" ] || done=0; done
  if [ -f "$out/model/config.json" ] && [ $done = 1 ]; then echo "skip $cfg (done)"; continue; fi
  resume=""; [ -f "$out/model/config.json" ] && resume="--resume"
  echo "run $cfg $resume"
  robustsnn train --config "$cfg" $resume $override --no-progress >> "${out}.log" 2>&1 || echo "FAILED $cfg (see ${out}.log)"
done
