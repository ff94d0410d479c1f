"""Tiled output of the shipped default operating point against untiled and against the dense model, on a real
photo (issue #13: the blend mask was recomputed per tile and drew colour-shifted patches in flat areas)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amsr.io.images import read_rgb8
from amsr.runtime.fidelity import (
    Block,
    FidelityThresholds,
    ImageFidelity,
    block_psnrs,
    check_fidelity,
    compare_with_dense,
    contact_sheet,
    fidelity_line,
    fidelity_report,
    production_tile,
    psnr_u8,
    score_image,
)
from tests.conftest import weight_file

pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install 'amsr[onnx]')")
pytest.importorskip("onnx_graphsurgeon", reason="needs onnx-graphsurgeon (pip install 'amsr[onnx]')")

TILE = 64  # the crop below is 160×200 LR: 3×4 tiles


@pytest.fixture(scope="module")
def photo_crop(data_dir: Path) -> np.ndarray:
    """A 160×200 LR crop of a Photos2K photo (dark bokeh beside petals): flat and textured areas, > 2 tiles."""
    path = data_dir / "Photos2K" / "x4" / "LR" / "img_012.png"
    if not path.is_file():
        pytest.skip(f"{path} not found (set AMSR_DATA_DIR)")
    return read_rgb8(path)[40:200, 100:300]


@pytest.fixture(scope="module")
def blend_onnx(weights_dir: Path) -> Path:
    from tests.onnx_exports import exported_blend

    return exported_blend(weight_file(weights_dir, "carn_m.pth"))


def test_default_operating_point_tiled_equals_untiled_on_a_photo(blend_onnx: Path, photo_crop: np.ndarray) -> None:
    from amsr.runtime.onnxrt import OrtUpscaler

    up = OrtUpscaler(blend_onnx, threads=1)
    masks = up.masks(photo_crop.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    assert set(masks) == {"mask", "mask/output"}  # both are whole-image 2-means decisions
    x = photo_crop.transpose(2, 0, 1)[None].astype(np.float32) / 255
    whole = up(x)
    tiled = up.upscale_tiled(x, tile=TILE, overlap=24)  # ≥ CARN-M's 21-px receptive radius: exact
    np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=0)
    # The production overlap (16 px) is within float noise of it (README: ≤ 2e-5 for dense graphs).
    np.testing.assert_allclose(up.upscale_tiled(x, tile=TILE), whole, atol=1e-4, rtol=0)


def test_default_operating_point_tiled_is_faithful_to_dense(blend_onnx: Path, photo_crop: np.ndarray,
                                                            weights_dir: Path, tmp_path: Path) -> None:
    """The check ``amsr-parity --fidelity`` runs (``check_fidelity``), on a crop CI can afford."""
    from amsr.io.images import save_png
    from tests.onnx_exports import carn_m_x4

    lr = save_png(tmp_path / "crop.png", photo_crop)
    dense = carn_m_x4(weight_file(weights_dir, "carn_m.pth")).dense()
    (r,) = check_fidelity(blend_onnx, [lr], dense, tile=TILE, threads=1, sheets=tmp_path / "sheets")
    assert r.tile == TILE and r.lr_size == (160, 200)
    assert 0.2 < r.flat_fraction < 0.95  # the crop has both kinds of area
    assert r.failures(FidelityThresholds()) == [], r
    assert r.flat_psnr_db is not None and r.flat_psnr_db >= 45
    assert r.tiled_vs_untiled_max_levels is not None and r.tiled_vs_untiled_max_levels <= 1
    assert (tmp_path / "sheets" / "crop_sheet.png").is_file()


def test_per_tile_masks_are_what_the_check_catches(blend_onnx: Path, photo_crop: np.ndarray) -> None:
    """Per-tile masks (the old default for the blend mask) move the output far more than float noise."""
    from amsr.runtime.upscaler import Upscaler

    whole = Upscaler.from_onnx(blend_onnx, threads=1)(photo_crop)
    per_tile = Upscaler.from_onnx(blend_onnx, threads=1, tile=TILE, per_tile_mask=True)(photo_crop)
    assert psnr_u8(per_tile, whole) < psnr_u8(Upscaler.from_onnx(blend_onnx, threads=1, tile=TILE)(photo_crop),
                                              whole)


def test_block_scores_and_sheet() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (70, 100, 3), dtype=np.uint8)
    b = a.copy()
    b[40:50, 66:70] ^= 0x10  # one local defect
    grid = block_psnrs(a, b)
    assert grid.shape == (3, 4) and np.isinf(grid).sum() == 11
    r = score_image("x", b, a, None, scale=1, tile=8)
    assert r.worst_blocks[0] == Block(32, 64, float(grid[1, 2]))
    assert r.flat_psnr_db is None and np.isfinite(r.psnr_db)
    assert r.failures(FidelityThresholds(min_psnr_db=99)) and not r.failures(FidelityThresholds(0, 0, 0))
    sheet = contact_sheet(a, b, r.worst_blocks, zoom=2)
    assert sheet.shape == (4 + 64 + 4, 4 + 3 * (64 + 4), 3) and sheet.dtype == np.uint8
    assert sheet[4:68, 4 + 2 * 68:4 + 2 * 68 + 64].any()  # the |Δ| column shows the defect


def test_production_tile_always_tiles() -> None:
    assert production_tile((400, 640), 512) == 512
    assert production_tile((300, 400), 512) == 200


def test_report_line_and_json() -> None:
    r = ImageFidelity("a.png", (10, 20), 5, 50.0, None, 0.0, (Block(0, 32, 40.0),), tiled_vs_untiled_max_levels=1)
    ok, strict = FidelityThresholds(), FidelityThresholds(min_block_psnr_db=41)
    assert fidelity_line(r, ok) == ("a.png 20×10 tile 5: tiled vs untiled max 1 level(s); vs dense 50.00 dB, flat "
                                    "n/a; worst block (0,32) 40.00 dB PASSED")
    assert fidelity_line(r, strict).endswith("FAILED: block at (0, 32) 40.00 < 41 dB")
    report = fidelity_report([r], strict)
    assert not report["passed"] and report["thresholds"]["min_block_psnr_db"] == 41
    assert report["images"][0]["failures"] == r.failures(strict) and report["images"][0]["lr_size"] == (10, 20)


def test_compare_with_dense_scores_what_was_written() -> None:
    """``amsr-upscale --compare``: 8-bit, 16-bit, gray and RGBA outputs against the dense model of the input."""
    import torch

    def nearest(t: torch.Tensor) -> torch.Tensor:  # a "dense model" whose output is known exactly
        return torch.nn.functional.interpolate(t, scale_factor=2, mode="nearest")

    def up(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)

    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    r, sheet = compare_with_dense("rgb", rgb, up(rgb), nearest, tile=0)
    assert np.isinf(r.psnr_db) and r.worst_blocks == () and sheet.dtype == np.uint8
    gray = rgb[..., :1]
    assert np.isinf(compare_with_dense("gray", gray, up(gray), nearest, tile=0)[0].psnr_db)
    rgba16 = np.concatenate([rgb.astype(np.uint16) * 257, np.full((20, 30, 1), 9, np.uint16)], axis=2)
    out = up(rgba16)
    out[32:40, 40:48, :3] = 0  # a defect in the HR block at (32, 32); alpha differs and is ignored
    r, sheet = compare_with_dense("rgba16", rgba16, out, nearest, tile=0)
    assert r.lr_size == (20, 30) and r.worst_blocks[0].y == 32 and r.worst_blocks[0].x == 32
    assert np.isfinite(r.psnr_db) and len(r.worst_blocks) == 1
    assert sheet.shape == (4 + 128 + 4, 4 + 3 * (128 + 4), 3)
