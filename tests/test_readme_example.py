"""The README's "Your own network" block runs as written: accelerate → calibrate → count → export → parity."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("**Your own network**")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match is not None, "the README's user-network example has no python block"
    return match.group(1)


def test_readme_user_network_example_runs(data_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    for module in ("onnxruntime", "onnxscript", "onnx_graphsurgeon"):
        pytest.importorskip(module)
    if not (data_dir / "train").is_dir():
        pytest.skip(f"{data_dir / 'train'} not found (set AMSR_DATA_DIR)")
    code = _example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 25  # short, as promised
    scope: dict[str, object] = {"DATA": data_dir, "OUT": tmp_path}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 — the README's own code
    printed = capsys.readouterr().out
    assert "4 masked conv(s)" in printed and "dense: head" in printed and "dense: up.0" in printed
    ratio = float(printed.split("GMACs ratio")[1].split()[0])
    assert 0 < ratio < 1
    assert (tmp_path / "tiny_sparse.onnx").is_file()
