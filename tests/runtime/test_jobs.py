"""runtime/jobs.py: output names and clashes, and which failures stop a batch (bugs) and which do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amsr.core.errors import AmsrError, InputImageError
from amsr.io.user_images import write_png
from amsr.runtime.jobs import Job, plan_jobs, run_job


class _Raising:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __call__(self, image: np.ndarray) -> np.ndarray:
        raise self.error


def _png(path: Path) -> Path:
    write_png(path, np.zeros((4, 4, 3), np.uint8))
    return path


def test_user_and_runtime_failures_are_results_and_bugs_raise(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime")
    job = Job(_png(tmp_path / "a.png"), tmp_path / "out" / "a.png")
    fail = ort.capi.onnxruntime_pybind11_state.Fail("bad allocation")
    cases: list[tuple[BaseException, str]] = [
        (InputImageError("image 4×4 is smaller than this model's minimum 8×8"), "minimum 8×8"),
        (fail, "Fail: bad allocation"), (MemoryError("out of memory"), "MemoryError")]
    for error, text in cases:
        r = run_job(_Raising(error), job)  # type: ignore[arg-type]
        assert not r.ok and r.error is not None and text in r.error and r.error.startswith(str(job.src))
    with pytest.raises(ZeroDivisionError):
        run_job(_Raising(ZeroDivisionError()), job)  # type: ignore[arg-type]
    assert not job.dest.exists()


def test_plan_names_skips_and_refuses(tmp_path: Path) -> None:
    a, b = _png(tmp_path / "a.png"), _png(tmp_path / "b.jpeg.png")
    out = tmp_path / "out"
    _png(out / "a.png")
    plan = plan_jobs([a, b, a], out)
    assert [j.dest.name for j in plan.todo] == ["b.jpeg.png"] and [j.src for j in plan.existing] == [a]
    assert [j.src for j in plan_jobs([a, b], out, overwrite=True).todo] == [a, b]
    in_place = plan_jobs([a], tmp_path, overwrite=True)
    assert not in_place.todo and "replace the input" in (in_place.failed[0].error or "")
    _png(tmp_path / "sub" / "a.png")
    with pytest.raises(AmsrError, match="would all be written to"):
        plan_jobs([a, tmp_path / "sub"], out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AmsrError, match="no input images"):
        plan_jobs([tmp_path / "empty"], out)
