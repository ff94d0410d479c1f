"""mypy passes over amsr/, export/, runtime/ and plugins/ ([tool.mypy] in pyproject.toml).

Run through scripts/typecheck.py, which gives export/, runtime/ and plugins/ their installed names (amsr.export,
...): plain ``python -m mypy`` cannot follow the editable install's package-dir mapping. mypy's incremental
cache (.mypy_cache/ at the repository root) makes a warm run a few seconds; a cold one takes under a minute
on 2 cores."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (it is in the test extra: pip install -e '.[test]')")
def test_mypy_passes() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "typecheck.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mypy failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
