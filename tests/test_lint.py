"""ruff passes over amsr/, export/, runtime/, plugins/, scripts/ and tests/ (rules: [tool.ruff] in
pyproject.toml)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                    reason="ruff is not installed (it is in the test extra: pip install -e '.[test]')")
def test_ruff_passes() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "amsr", "export", "runtime", "plugins", "scripts",
                           "tests"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"ruff failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
