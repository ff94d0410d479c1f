#!/usr/bin/env bash
# The full research sweep (hours on 2 cores): set up .venv, then score dense vs AMSR for every zoo model with
# local weights on Set5 and Set14 at x2/x3/x4 with a dilation sweep (scripts/eval_table.py).
# Writes out/sweep/eval/*.json and out/sweep/eval_table.md (untracked); resumable: rows whose JSON exists there
# are read back (--force recomputes them). The tracked results/ is refreshed only with --refresh-results.
# Data and weights: $AMSR_DATA_DIR / $AMSR_WEIGHTS_DIR (default ../shared/data and ../shared/weights).
# Arguments go to eval_table.py, e.g.: bash scripts/sweep.sh --models carn_m --scales 4 --refresh-results
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "${AMSR_VENV:-$ROOT/.venv}/bin/python" scripts/eval_table.py "$@"
