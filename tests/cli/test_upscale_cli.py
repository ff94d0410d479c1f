"""``amsr-upscale``: skips, --overwrite, a corrupt file among good ones, atomic outputs, argument errors
(dense FSRCNN x2 graph; the Ray path is in tests/runtime/test_ray_pipeline.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amsr.cli.upscale import main

pytest.importorskip("cv2", reason="16-bit PNG support needs opencv-python-headless (pip install 'amsr[png16]')")


def _inputs(folder: Path) -> list[Path]:
    """Three good images (8-bit RGB, RGBA, 16-bit RGB) and a corrupt one, in ``folder``."""
    from amsr.io.user_images import write_png

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    write_png(folder / "a.png", rng.integers(0, 256, (14, 18, 3), dtype=np.uint8))
    write_png(folder / "b.png", rng.integers(0, 256, (12, 10, 4), dtype=np.uint8))
    write_png(folder / "c.png", rng.integers(0, 65536, (10, 12, 3), dtype=np.uint16))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return [folder / n for n in ("a.png", "b.png", "c.png", "broken.jpg")]


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, list[str]]:
    rc = main([str(a) for a in argv] + ["--no-progress"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err.strip().splitlines()


def test_corrupt_file_among_good_ones(tmp_path: Path, fsrcnn_x2_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _inputs(tmp_path / "in")
    out = tmp_path / "out"
    rc, lines = _run(capsys, tmp_path / "in", "--out", out, "--onnx", fsrcnn_x2_onnx, "--threads", 1)
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]  # and no temporary files
    failures = [line for line in lines if "broken.jpg" in line]
    assert len(failures) == 1 and failures[0].startswith("amsr-upscale: failed: ")
    assert lines[-1] == f"amsr-upscale: 3 written to {out}, 1 failed"
    with Image.open(out / "a.png") as a, Image.open(out / "b.png") as b:
        assert a.size == (36, 28) and a.mode == "RGB"
        assert b.size == (20, 24) and b.mode == "RGBA"
    c = Image.open(out / "c.png")
    assert c.size == (24, 20)
    from amsr.io.user_images import read_image

    assert read_image(out / "c.png").dtype == np.uint16


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path: Path, fsrcnn_x2_onnx: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    a, b, *_ = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"placeholder")
    rc, lines = _run(capsys, a, b, "--out", out, "--onnx", fsrcnn_x2_onnx, "--threads", 1)
    assert rc == 0
    assert (out / "a.png").read_bytes() == b"placeholder"
    assert lines[-1] == f"amsr-upscale: 1 written to {out}, 1 skipped (output exists; --overwrite to redo)"
    b_bytes = (out / "b.png").read_bytes()

    rc, lines = _run(capsys, a, b, "--out", out, "--onnx", fsrcnn_x2_onnx, "--threads", 1, "--overwrite")
    assert rc == 0 and lines[-1] == f"amsr-upscale: 2 written to {out}"
    assert (out / "a.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "b.png").read_bytes() == b_bytes  # deterministic


def test_threads_write_the_same_bytes_as_one_worker(tmp_path: Path, fsrcnn_x2_onnx: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _inputs(tmp_path / "in")
    common = ["--onnx", fsrcnn_x2_onnx, "--threads", 1, "--tile", 8, "--overlap", 4]
    assert _run(capsys, tmp_path / "in", "--out", tmp_path / "one", *common)[0] == 1
    assert _run(capsys, tmp_path / "in", "--out", tmp_path / "four", "--workers", 4, *common)[0] == 1
    for name in ("a.png", "b.png", "c.png"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "four" / name).read_bytes()


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path, fsrcnn_x2_onnx: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    a, *_ = _inputs(tmp_path / "in")

    def half_written(self: Image.Image, fp: object, *args: object, **kw: object) -> None:
        Path(str(fp)).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_written)
    rc, lines = _run(capsys, a, "--out", tmp_path / "out", "--onnx", fsrcnn_x2_onnx)
    assert rc == 1
    assert list((tmp_path / "out").iterdir()) == []
    assert any("No space left on device" in line and str(a) in line for line in lines)


def test_user_errors_are_one_line(tmp_path: Path, fsrcnn_x2_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, *_ = _inputs(tmp_path / "in")
    rc, lines = _run(capsys, a, "--out", tmp_path / "o", "--onnx", tmp_path / "missing.onnx")
    assert rc == 1 and lines == [f"amsr-upscale: error: ONNX model not found: {tmp_path / 'missing.onnx'}"]

    (tmp_path / "in2").mkdir()
    (tmp_path / "in2" / "a.jpg").write_bytes((tmp_path / "in" / "a.png").read_bytes())
    rc, lines = _run(capsys, a, tmp_path / "in2", "--out", tmp_path / "o", "--onnx", fsrcnn_x2_onnx)
    assert rc == 1 and len(lines) == 1 and "would all be written to" in lines[0]

    rc, lines = _run(capsys, tmp_path / "nothing-here", a, "--out", tmp_path / "o", "--onnx", fsrcnn_x2_onnx)
    assert rc == 1 and "nothing-here: no such file or folder" in lines[0]
    assert lines[-1] == f"amsr-upscale: 1 written to {tmp_path / 'o'}, 1 failed"
    for argv in (["--onnx", fsrcnn_x2_onnx, "--model", "fsrcnn"], [], ["--model", "fsrcnn"],
                 ["--onnx", fsrcnn_x2_onnx, "--scale", "2"], ["--onnx", fsrcnn_x2_onnx, "--tile", "-1"],
                 ["--onnx", fsrcnn_x2_onnx, "--operating-point", "default"]):
        with pytest.raises(SystemExit) as e:
            main([str(a), "--out", str(tmp_path / "o"), *map(str, argv)])
        assert e.value.code == 2
        assert "amsr-upscale: error:" in capsys.readouterr().err


def test_model_at_the_default_operating_point(tmp_path: Path, weights_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The production path for the shipped default: export once (output blend, verified against PyTorch
    before it is written), cache, upscale. The cache is the test run's (tests/onnx_exports.py): the tests that
    use this graph share one export."""
    import json

    from amsr.export.metadata import read_metadata
    from amsr.operating_point import default_operating_point
    from amsr.runtime.upscaler import export_cache_path
    from tests.onnx_exports import export_cache

    weights = weights_dir / "carn_m.pth"
    monkeypatch.setenv("AMSR_CACHE_DIR", str(export_cache().parent))
    before = set(export_cache().glob("*.onnx"))  # what other tests of the run exported
    a, *_ = _inputs(tmp_path / "in")
    rc, lines = _run(capsys, a, "--out", tmp_path / "o", "--model", "carn_m", "--scale", "4",
                     "--weights", weights, "--operating-point", "default")
    assert rc == 0, lines
    assert Image.open(tmp_path / "o" / "a.png").size == (18 * 4, 14 * 4)
    cfg = default_operating_point("carn_m", 4)
    assert cfg is not None
    # The row graph, and the dense graph ``auto`` runs for images denser than DENSE_ABOVE_DENSITY.
    graph = export_cache_path("carn_m", 4, mask=cfg, weights=weights, cache_dir=export_cache())
    dense = export_cache_path("carn_m", 4, accelerated=False, weights=weights, cache_dir=export_cache())
    assert set(export_cache().glob("*.onnx")) - before <= {graph, dense}  # no other graph exported
    assert read_metadata(graph)["amsr.kind"] == "accelerated" and read_metadata(dense)["amsr.kind"] == "dense"
    assert read_metadata(graph)["amsr.execution"] == "rows"
    assert json.loads(read_metadata(graph)["amsr.mask_config"]) == vars(cfg)
