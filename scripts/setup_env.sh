#!/usr/bin/env bash
# Create (or reuse) the project virtualenv in .venv with amsr and its test/ONNX extras installed.
# Sourced by scripts/test.sh and scripts/run.sh; safe to run again (pip skips what is installed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AMSR_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
# torch first and pinned: a bare "torch" requirement would pull a multi-GB CUDA build where a CPU one is at hand.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[onnx,test]" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import amsr, torch, onnxruntime, sklearn" 
