#!/usr/bin/env bash
# The test command (README, .ci/run): set up .venv, then run the whole suite on the CPU, in 2 pytest-xdist
# workers (AMSR_TEST_WORKERS; 1: in this process). The suite's bulk is ONNX exports, single-threaded Python:
# on the 2-core CI machine 2 workers take it from 20 to 9–10 min. Whole files go to one worker (loadfile), so a
# module's fixtures are built once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
WORKERS="${AMSR_TEST_WORKERS:-2}"
PARALLEL=()
if [ "$WORKERS" != 1 ]; then
    PARALLEL=(-n "$WORKERS" --dist loadfile)
fi
exec "${AMSR_VENV:-$ROOT/.venv}/bin/python" -m pytest -q -ra "${PARALLEL[@]}" "$@"
