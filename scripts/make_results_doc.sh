#!/usr/bin/env bash
# Rebuild docs/results.md: the header, the tables generated from results/, and the notes.
set -euo pipefail
cd "$(dirname "$0")/.."
{ cat docs/results_header.md; python3 scripts/results_table.py --runs results; echo; cat docs/results_notes.md; } > docs/results.md
echo "wrote docs/results.md"
