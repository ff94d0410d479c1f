"""runtime/ray_pipeline.py: outputs byte-identical to the single-process path, failures reported per file, the
CLI's --ray, and a clear error without Ray. Ray runs locally with 2 CPUs and no dashboard, started once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amsr.core.errors import BackendUnavailableError
from amsr.runtime.jobs import plan_jobs, run_job
from amsr.runtime.ray_pipeline import import_ray, upscale_files_ray
from amsr.runtime.upscaler import RunOptions, Upscaler


@pytest.fixture(scope="module")
def ray_local() -> Any:
    """A local Ray (num_cpus=2, no dashboard) for this module; skipped with the reason when it cannot start."""
    pytest.importorskip("ray.data", reason="needs Ray Data (pip install 'amsr[ray]')")
    import ray

    # ray.init must run on the main thread (it installs signal handlers), so its own start-up timeouts bound
    # the wait; any failure to start becomes the skip reason.
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    except Exception as e:
        pytest.skip(f"a local Ray instance cannot start here ({type(e).__name__}: {e})")
    yield ray
    ray.shutdown()


def _inputs(folder: Path) -> None:
    from amsr.io.user_images import write_png

    rng = np.random.default_rng(1)
    folder.mkdir()
    write_png(folder / "rgb.png", rng.integers(0, 256, (14, 18, 3), dtype=np.uint8))
    write_png(folder / "rgba.png", rng.integers(0, 256, (12, 10, 4), dtype=np.uint8))
    write_png(folder / "deep.png", rng.integers(0, 65536, (10, 12, 3), dtype=np.uint16))
    write_png(folder / "gray.png", rng.integers(0, 256, (9, 11, 1), dtype=np.uint8))
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")


def test_ray_outputs_are_byte_identical_to_one_process(ray_local: Any, tmp_path: Path, fsrcnn_x2_onnx: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("cv2", reason="16-bit PNG support needs opencv-python-headless")
    _inputs(tmp_path / "in")
    options = RunOptions(threads=1, tile=8, overlap=4)

    local = plan_jobs([tmp_path / "in"], tmp_path / "local")
    upscaler = Upscaler.from_options(fsrcnn_x2_onnx, options)
    local_results = {r.src.name: r for r in (run_job(upscaler, j) for j in local.todo)}

    plan = plan_jobs([tmp_path / "in"], tmp_path / "ray")
    ray_results = {r.src.name: r for r in upscale_files_ray(plan.todo, fsrcnn_x2_onnx, options, workers=2)}
    assert ray_local.is_initialized()  # the running Ray was reused, not shut down

    assert set(ray_results) == set(local_results) == {"rgb.png", "rgba.png", "deep.png", "gray.png", "corrupt.png"}
    assert not ray_results["corrupt.png"].ok and "corrupt.png" in (ray_results["corrupt.png"].error or "")
    good = sorted(n for n, r in ray_results.items() if r.ok)
    assert good == ["deep.png", "gray.png", "rgb.png", "rgba.png"]
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == good  # no temporary files left
    for name in good:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name

    # The CLI's --ray path (reusing the running Ray) writes the same files and reports the corrupt one.
    from amsr.cli.upscale import main

    rc = main([str(tmp_path / "in"), "--out", str(tmp_path / "cli"), "--onnx", str(fsrcnn_x2_onnx), "--ray",
               "--workers", "2", "--threads", "1", "--tile", "8", "--overlap", "4", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert sum("corrupt.png" in line for line in err.splitlines()) == 1
    for name in good:
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name


def test_without_ray_the_error_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install 'ray\[data\]'"):
        import_ray()
    from amsr.runtime.jobs import Job

    jobs = [Job(tmp_path / "a.png", tmp_path / "out" / "a.png")]
    with pytest.raises(BackendUnavailableError, match="ray"):
        list(upscale_files_ray(jobs, tmp_path / "m.onnx"))
