"""Tiled output of the shipped default operating point against untiled and against the dense model, on a real
photo (issue #13: the blend mask was recomputed per tile and drew colour-shifted patches in flat areas)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amsr.images import read_rgb8
from amsr.runtime.fidelity import (
    Block,
    FidelityThresholds,
    block_psnrs,
    contact_sheet,
    dense_reference,
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
                                                            weights_dir: Path) -> None:
    """The check ``amsr-parity --fidelity`` runs, on a crop CI can afford: tiled as amsr-upscale tiles."""
    from amsr.runtime.onnxrt import OrtUpscaler
    from amsr.runtime.upscaler import Upscaler
    from tests.onnx_exports import carn_m_x4

    acc = Upscaler.from_onnx(blend_onnx, threads=1, tile=TILE)(photo_crop)
    x = photo_crop.transpose(2, 0, 1)[None].astype(np.float32) / 255
    dense = dense_reference(carn_m_x4(weight_file(weights_dir, "carn_m.pth")).dense(), x)
    dense_u8 = np.rint(np.clip(dense[0], 0, 1).transpose(1, 2, 0) * 255).astype(np.uint8)
    flat = OrtUpscaler(blend_onnx, threads=1).masks(x)["mask/output"][0, 0] == 0
    r = score_image("img_012 crop", acc, dense_u8, flat, scale=4, tile=TILE)
    assert 0.2 < r.flat_fraction < 0.95  # the crop has both kinds of area
    assert r.failures(FidelityThresholds()) == [], r
    assert r.flat_psnr_db is not None and r.flat_psnr_db >= 45


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
