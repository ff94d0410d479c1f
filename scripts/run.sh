#!/usr/bin/env bash
# The main job (README): set up .venv, then demonstrate amsr end to end on its shipped defaults (scripts/demo.py,
# a few minutes on 2 cores): export CARN-M x4's default operating point and the dense graph to ONNX, check them
# against PyTorch, upscale Photos2K photos and Set5 dense vs accelerated with onnxruntime (timed interleaved),
# and write a report to out/demo/ (report.md, report.json, worst_blocks.png; untracked).
# Data and weights: $AMSR_DATA_DIR / $AMSR_WEIGHTS_DIR (default ../shared/data and ../shared/weights beside the
# checkout). Extra arguments go to demo.py (--help lists them). The full research sweep is scripts/sweep.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
start=$SECONDS
echo "run.sh: setting up ${AMSR_VENV:-$ROOT/.venv} (scripts/setup_env.sh)"
bash "$ROOT/scripts/setup_env.sh"
echo "run.sh: environment ready ($((SECONDS - start)) s)"
cd "$ROOT"
exec "${AMSR_VENV:-$ROOT/.venv}/bin/python" scripts/demo.py "$@"
