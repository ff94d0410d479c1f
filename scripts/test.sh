#!/usr/bin/env bash
# The test command (README, .ci/run): set up .venv, then run the whole suite on the CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "${AMSR_VENV:-$ROOT/.venv}/bin/python" -m pytest -q -ra "$@"
