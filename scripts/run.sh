#!/usr/bin/env bash
# The main job (README): set up .venv, then score dense vs AMSR for every zoo model with local weights
# on Set5 and Set14 (x2/x3/x4, dilation sweep). Data and weights: $AMSR_DATA_DIR / $AMSR_WEIGHTS_DIR
# (default ../shared/data and ../shared/weights beside the checkout). Extra arguments go to eval_table.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "${AMSR_VENV:-$ROOT/.venv}/bin/python" scripts/eval_table.py "$@"
