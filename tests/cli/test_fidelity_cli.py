"""Issue #13 at the command line: ``amsr-parity --fidelity`` and ``amsr-upscale --compare`` on a Photos2K crop
(CARN-M x4 at its shipped default, real weights; skipped without the data or the checkpoint), the one-line
refusals of ``--compare`` for dense models, and the defaults paragraph of every tool's ``--help``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amsr.cli.parity import main as parity_main
from amsr.cli.upscale import main as upscale_main
from amsr.runtime.fidelity import FidelityThresholds
from tests.conftest import weight_file

pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install 'amsr[onnx]')")
pytest.importorskip("onnx_graphsurgeon", reason="needs onnx-graphsurgeon (pip install 'amsr[onnx]')")

TILE = 64  # the crop is 160×200 LR: 3×4 tiles
CROP = "img_012_crop.png"


def _photo_crop(data_dir: Path, folder: Path, rows: slice, cols: slice) -> Path:
    from amsr.io.images import read_rgb8, save_png

    src = data_dir / "Photos2K" / "x4" / "LR" / "img_012.png"
    if not src.is_file():
        pytest.skip(f"{src} not found (set AMSR_DATA_DIR)")
    save_png(folder / CROP, read_rgb8(src)[rows, cols])
    return folder


@pytest.fixture(scope="module")
def photo_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``DIR/LR/img_012_crop.png``: the 160×200 LR crop of tests/runtime/test_fidelity.py (bokeh and petals)."""
    d = tmp_path_factory.mktemp("photos")
    _photo_crop(data_dir, d / "LR", slice(40, 200), slice(100, 300))
    return d


@pytest.fixture(scope="module")
def carn_m(weights_dir: Path) -> Path:
    return weight_file(weights_dir, "carn_m.pth")


@pytest.fixture(scope="module")
def blend_graph(carn_m: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped-default CARN-M x4 graph with the identity amsr-export records (model, variant, checkpoint)."""
    from amsr.export.metadata import add_metadata
    from amsr.weights import sha256_of
    from tests.onnx_exports import exported_blend

    out = tmp_path_factory.mktemp("graph") / "carn_m_x4_default.onnx"
    shutil.copy(exported_blend(carn_m), out)
    add_metadata(out, {"amsr.model": "carn_m", "amsr.variant": "", "amsr.weights_sha256": sha256_of(carn_m)})
    return out


def test_parity_fidelity_passes_on_a_photo_crop(blend_graph: Path, photo_dir: Path, carn_m: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    report, sheets = tmp_path / "fidelity.json", tmp_path / "sheets"
    rc = parity_main([str(a) for a in ("--onnx", blend_graph, "--data", photo_dir, "--fidelity", "--tile", TILE,
                                       "--threads", 1, "--weights", carn_m, "--json", report, "--sheets", sheets)])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0, out
    assert out[-1].startswith("PASSED: 1/1 images") and CROP in out[0] and out[0].endswith("PASSED")
    r = json.loads(report.read_text())
    assert r["passed"] and r["model"] == "carn_m" and r["scale"] == 4 and r["kind"] == "accelerated"
    assert r["thresholds"] == asdict(FidelityThresholds()) and r["tile"] == TILE
    (img,) = r["images"]
    assert img["name"] == CROP and img["lr_size"] == [160, 200] and img["tile"] == TILE
    assert img["passed"] and img["failures"] == []
    assert img["psnr_db"] >= 45 and img["flat_psnr_db"] >= 45 and 0.2 < img["flat_fraction"] < 0.95
    assert len(img["worst_blocks"]) == 4 and img["worst_blocks"][0]["psnr_db"] >= 30
    assert img["tiled_vs_untiled_max_levels"] <= 1  # one whole-image mask for every tile (issue #13)
    with Image.open(sheets / "img_012_crop_sheet.png") as im:
        assert im.mode == "RGB" and im.size == (4 + 3 * (128 + 4), 4 + 4 * (128 + 4))


def test_parity_fidelity_fails_below_the_thresholds(blend_graph: Path, data_dir: Path, carn_m: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import amsr.runtime.fidelity

    monkeypatch.setattr(amsr.runtime.fidelity, "FidelityThresholds", lambda: FidelityThresholds(min_psnr_db=99))
    small = _photo_crop(data_dir, tmp_path / "lr", slice(100, 160), slice(150, 230))  # no LR/: --data is the folder
    rc = parity_main([str(a) for a in ("--onnx", blend_graph, "--data", small, "--fidelity", "--threads", 1,
                                       "--weights", carn_m)])  # --tile 512 > 80 px: halved, so still 2×1 tiles
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 1 and out[-1].startswith("FAILED: 0/1 images") and "FAILED: PSNR" in out[0]
    assert f"{CROP} 80×60 tile 40:" in out[0]


def test_upscale_compare_writes_a_contact_sheet(blend_graph: Path, photo_dir: Path, carn_m: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    sheets = tmp_path / "compare"
    rc = upscale_main([str(a) for a in (photo_dir / "LR", "--out", tmp_path / "up", "--onnx", blend_graph,
                                        "--weights", carn_m, "--tile", TILE, "--threads", 1, "--compare", sheets,
                                        "--no-progress")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    (line,) = captured.out.strip().splitlines()
    assert line.startswith(f"{CROP}: ") and "dB vs dense, worst 32×32 block (" in line
    assert float(line.split(": ")[1].split(" dB")[0]) >= 45
    assert [p.name for p in sheets.iterdir()] == ["img_012_crop_compare.png"]  # and no temporary file
    with Image.open(sheets / "img_012_crop_compare.png") as im:
        assert im.mode == "RGB" and im.size == (4 + 3 * (128 + 4), 4 + 4 * (128 + 4))
        assert np.asarray(im)[4:132, 4 + 2 * 132:4 + 2 * 132 + 128].any()  # the |diff| column of the worst block


def _tiny_png(tmp_path: Path) -> Path:
    from amsr.io.user_images import write_png

    return write_png(tmp_path / "a.png", np.zeros((12, 14, 3), np.uint8))


def _one_line_usage_error(capsys: pytest.CaptureFixture[str], rc: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("amsr-upscale: error: --compare compares an accelerated model with its dense network")
    return err[0]


def test_compare_with_dense_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = upscale_main([str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--model", "fsrcnn", "--scale", "2",
                       "--dense", "--compare", str(tmp_path / "c")])
    assert _one_line_usage_error(capsys, rc).endswith(": drop --dense")
    # A zoo model whose default is the dense network: refused before any export.
    rc = upscale_main([str(_tiny_png(tmp_path)), "--out", str(tmp_path / "o"), "--model", "ngswin", "--scale", "2",
                       "--compare", str(tmp_path / "c"), "--no-progress"])
    assert "ngswin x2 runs the dense model (" in _one_line_usage_error(capsys, rc)
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_compare_with_a_dense_graph_is_one_line(fsrcnn_x2_onnx: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    rc = upscale_main([str(_tiny_png(tmp_path)), "--out", str(tmp_path / "o"), "--onnx", str(fsrcnn_x2_onnx),
                       "--compare", str(tmp_path / "c")])
    assert _one_line_usage_error(capsys, rc).endswith("is a dense graph")


def _mains() -> list[Callable[[list[str]], int]]:
    from amsr.cli import bench, calibrate, eval, export, parity, upscale

    return [m.main for m in (upscale, export, eval, bench, parity, calibrate)]


@pytest.mark.parametrize("main", _mains(), ids=["upscale", "export", "eval", "bench", "parity", "calibrate"])
def test_every_help_says_what_the_defaults_run(main: Callable[[list[str]], int],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0
    assert "runs its shipped quality operating point" in out and "≤ 0.05 dB" in out
    assert "the dense network where none is calibrated" in out
    assert "--dilation alone) run the paper's raw in-network skip, which is lossy" in out
