"""scripts/eval_table.py (the research sweep, ``bash scripts/sweep.sh``): untracked output by default, resumable,
and the tracked results refreshed only when asked — on FSRCNN x2 / Set5 (13K parameters: seconds)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_script, weight_file

ROOT = Path(__file__).resolve().parent.parent


def _eval_table() -> ModuleType:
    return load_script("eval_table")


def test_sweep_resumes_and_refreshes_results_only_when_asked(data_dir: Path, weights_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    weight_file(weights_dir, "fsrcnn_y_x2.pth")
    if not (data_dir / "Set5" / "x2").is_dir():
        pytest.skip(f"{data_dir / 'Set5' / 'x2'} not found (set AMSR_DATA_DIR)")
    main = _eval_table().main
    out, results = tmp_path / "sweep", tmp_path / "results"
    base = ["--models", "fsrcnn", "--scales", "2", "--sets", "Set5", "--out", str(out)]
    row = out / "eval" / "fsrcnn_x2_Set5.json"

    assert main([*base, "--dilations", "1"]) == 0
    first = json.loads(row.read_text())
    assert [s["dilation"] for s in first["sweep"]] == [1] and first["images"] == 5
    assert (out / "eval_table.md").is_file() and not results.exists()
    assert f"wrote {row}" in capsys.readouterr().err

    stamp = row.stat().st_mtime_ns
    assert main([*base, "--dilations", "1"]) == 0  # resumed: read back, not recomputed
    assert f"reusing {row}" in capsys.readouterr().err and row.stat().st_mtime_ns == stamp

    # Another row already published in the tracked folder stays in its rebuilt table.
    other = dict(first, model="carn_m", scale=4)
    (results / "eval").mkdir(parents=True)
    (results / "eval" / "carn_m_x4_Set5.json").write_text(json.dumps(other))
    assert main([*base, "--dilations", "1", "2", "--refresh-results", "--results", str(results)]) == 0
    err = capsys.readouterr().err
    assert "recomputing" in err and "dilations [1]" in err  # another sweep than the stored row: recomputed
    published = json.loads((results / "eval" / "fsrcnn_x2_Set5.json").read_text())
    assert [s["dilation"] for s in published["sweep"]] == [1, 2]
    table = (results / "eval_table.md").read_text()
    assert "| fsrcnn | x2 | Set5 |" in table and "| carn_m | x4 | Set5 |" in table
    assert table.index("| carn_m |") < table.index("| fsrcnn |")  # DEFAULT_MODELS order
