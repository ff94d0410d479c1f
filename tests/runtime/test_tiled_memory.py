"""Tiled runs in memory bounded by the tile (issue #14): the mask's high-frequency map computed in bands, tiles
written straight into the integer result, alpha upscaled per tile. Each must give the bytes of the whole-image
computation it replaces, on real Photos2K photos."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from amsr.io.images import read_rgb8
from amsr.runtime.tiling import run_tiled
from amsr.runtime.upscaler import Upscaler, upscale_alpha, upscale_alpha_region
from tests.runtime.test_fidelity import TILE, blend_onnx, photo_crop  # noqa: F401  (fixtures)


def _chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255)


def _whole_stage(up: object, edit: object) -> object:
    return up._derived_session(edit)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def photo(data_dir: Path) -> np.ndarray:
    """A whole Photos2K x4 LR photo (400×640: bokeh, petals)."""
    path = data_dir / "Photos2K" / "x4" / "LR" / "img_012.png"
    if not path.is_file():
        pytest.skip(f"{path} not found (set AMSR_DATA_DIR)")
    return read_rgb8(path)


def test_banded_mask_equals_the_whole_image_mask(blend_onnx: Path, photo: np.ndarray) -> None:  # noqa: F811
    from amsr.export.passes import extract_mask_subgraph
    from amsr.runtime.onnxrt import OrtUpscaler, mask_head

    up = OrtUpscaler(blend_onnx, threads=2)
    x = _chw(photo)
    whole = _whole_stage(up, extract_mask_subgraph)
    names = [o.name for o in whole.get_outputs()]
    want = dict(zip(names, whole.run(names, {"lr": x}), strict=True))
    hf_want = _whole_stage(up, mask_head).run(None, {"lr": x})[0]
    assert up._blur_radius == 0 and up._hf_session is None  # built on first use
    for band_px in (512 * 512, 640 * 7, 1):  # one band; 7-row bands (2-px halo); single rows
        got = up.masks(x, band_px=band_px)
        np.testing.assert_array_equal(up._high_frequency(x, band_px), hf_want)
        assert set(got) == {"mask", "mask/output"}
        for name in names:
            np.testing.assert_array_equal(got[name], want[name])
    assert up._blur_radius == 2 and up._hf_session is not None  # 5×5 blur, split graph
    assert 0.1 < float(want["mask/output"].mean()) < 0.9  # both kinds of area: the threshold matters


def test_unsplittable_graph_computes_its_mask_whole(blend_onnx: Path, photo_crop: np.ndarray,  # noqa: F811
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import amsr.runtime.onnxrt as onnxrt
    from amsr.core.errors import ExportError

    x = _chw(photo_crop)
    want = onnxrt.OrtUpscaler(blend_onnx, threads=1).masks(x)

    def refuse(graph: object) -> object:
        raise ExportError("no high-frequency map")

    monkeypatch.setattr(onnxrt, "mask_head", refuse)
    up = onnxrt.OrtUpscaler(blend_onnx, threads=1)
    got = up.masks(x)
    assert up._hf_session is None
    for name, m in want.items():
        np.testing.assert_array_equal(got[name], m)


def _old_tiled_u8(up: Upscaler, img: np.ndarray, tile: int, overlap: int) -> np.ndarray:
    """What ``Upscaler`` returned for a tiled uint8 RGB image before issue #14: the float32 HR image assembled
    under the masks of the whole mask stage run on the whole image, then clamped, rounded and converted."""
    from amsr.export.passes import extract_mask_subgraph, mask_as_input

    ort, x = up._ort, _chw(img)
    whole = _whole_stage(ort, extract_mask_subgraph)
    names = [o.name for o in whole.get_outputs()]
    masks = dict(zip(names, whole.run(names, {"lr": x}), strict=True))
    session = _whole_stage(ort, mask_as_input)

    def run(rows: slice, cols: slice) -> np.ndarray:
        return session.run(None, {"lr": np.ascontiguousarray(x[:, :, rows, cols]),
                                  **{n: np.ascontiguousarray(m[:, :, rows, cols]) for n, m in masks.items()}})[0]

    y = run_tiled(run, x.shape[-2:], tile, overlap)
    return np.rint(np.clip(y[0], 0.0, 1.0).transpose(1, 2, 0) * 255.0).astype(np.uint8)


def test_tiled_result_has_the_bytes_of_before(blend_onnx: Path, photo_crop: np.ndarray) -> None:  # noqa: F811
    up = Upscaler.from_onnx(blend_onnx, threads=2, tile=TILE)
    got = up(photo_crop)
    assert got.dtype == np.uint8 and got.shape == (4 * 160, 4 * 200, 3)
    np.testing.assert_array_equal(got, _old_tiled_u8(up, photo_crop, TILE, 16))
    # Gray and RGBA run the same tiles: the gray result is the channel mean of the RGB one, alpha beside RGB.
    gray = photo_crop[..., 1]
    y = up._ort.upscale_tiled(_chw(np.dstack([gray] * 3)), tile=TILE)
    want_gray = np.rint(np.clip(y[0], 0.0, 1.0).transpose(1, 2, 0).mean(axis=2) * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(up(gray), want_gray)
    alpha = np.where(photo_crop[..., 0] > 128, 255, photo_crop[..., 2]).astype(np.uint8)
    rgba = up(np.dstack([photo_crop, alpha]))
    np.testing.assert_array_equal(rgba[..., :3], got)
    np.testing.assert_array_equal(rgba[..., 3], np.rint(upscale_alpha(alpha.astype(np.float32) / 255, 4) * 255))


def test_alpha_per_tile_equals_the_whole_image_at_power_of_two_scales(photo: np.ndarray) -> None:
    alpha = photo[..., 1]
    h, w = alpha.shape
    regions = [(0, 64, 0, 100), (50, 131, 37, 211), (300, 400, 500, 640), (7, 9, 3, 640), (399, 400, 0, 1)]
    for s in (2, 4):
        whole = upscale_alpha(alpha.astype(np.float32) / 255, s)
        for y0, y1, x0, x1 in regions:
            got = upscale_alpha_region(alpha, slice(y0, y1), slice(x0, x1), s)
            np.testing.assert_array_equal(got, whole[y0 * s:y1 * s, x0 * s:x1 * s])
    # At x3 the sampling positions of a tile differ in the last bits: Upscaler upscales alpha whole there.
    whole = upscale_alpha(alpha.astype(np.float32) / 255, 3)
    assert not np.array_equal(upscale_alpha_region(alpha, slice(50, 131), slice(37, 211), 3),
                              whole[150:393, 111:633])


def test_tiled_run_holds_no_float_image_of_the_output(fsrcnn_x2_onnx: Path, photo: np.ndarray) -> None:
    """Python-side allocations (numpy: the result, the LR input, one tile) stay below one float32 HR image."""
    up = Upscaler.from_onnx(fsrcnn_x2_onnx, threads=2, tile=64)
    want = Upscaler.from_onnx(fsrcnn_x2_onnx, threads=2)(photo)  # untiled: the same bytes (dense, overlap 16)
    float_hr = 4 * want.size  # 800×1280×3 float32: 12.3 MB; the uint8 result is 3.1 MB
    tracemalloc.start()
    try:
        got = up(photo)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.abs(got.astype(np.int16) - want).max() <= 1
    assert peak < 0.75 * float_hr, f"peak {peak / 1e6:.1f} MB"
