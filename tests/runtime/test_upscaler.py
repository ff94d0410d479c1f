"""runtime/upscaler.py: dtype and channel round trips, tiling, thread safety and the export cache, on the
dense FSRCNN x2 graph (tiny: each run takes milliseconds)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from amsr.core.errors import CheckpointError, InputImageError
from amsr.runtime.upscaler import RunOptions, Upscaler, export_cache_path, upscale_alpha
from tests.conftest import weight_file


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A float32 H×W×3 test picture in [0, 1]: smooth gradients plus edges and a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w, yy / h, 0.5 + 0.4 * np.sin(xx / 3) * np.cos(yy / 4)], axis=2)
    img[h // 3: h // 2, w // 4: w // 2] = 0.9  # a bright block: edges for the network to work on
    img += rng.normal(0, 0.01, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def _graph_out(up: Upscaler, rgb: np.ndarray) -> np.ndarray:
    """The raw graph on a float H×W×3 image: sH×sW×3 float32 clamped to [0, 1]."""
    y = up._ort(np.ascontiguousarray(rgb.transpose(2, 0, 1)[None]))
    return np.clip(y[0], 0, 1).transpose(1, 2, 0)


@pytest.fixture(scope="module")
def up(fsrcnn_x2_onnx: Path) -> Upscaler:
    return Upscaler.from_onnx(fsrcnn_x2_onnx, threads=1)


def test_uint8_rgb(up: Upscaler) -> None:
    img = np.rint(_image(20, 28) * 255).astype(np.uint8)
    out = up(img)
    assert out.dtype == np.uint8 and out.shape == (40, 56, 3) and up.scale == 2
    expected = np.rint(_graph_out(up, img.astype(np.float32) / 255) * 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_uint16_keeps_its_low_bits(up: Upscaler) -> None:
    img = np.rint(_image(20, 28, seed=1) * 65535).astype(np.uint16)
    assert img.max() > 255 and np.count_nonzero(img % 257) > 0.9 * img.size  # not an 8-bit image scaled up
    out = up(img)
    assert out.dtype == np.uint16 and out.shape == (40, 56, 3)
    # Same as the float path to within one 16-bit level: nothing went through 8 bits on the way.
    ref = _graph_out(up, img.astype(np.float32) / 65535) * 65535
    assert np.abs(out.astype(np.float64) - ref).max() <= 1.0
    assert np.count_nonzero(out % 257) > 0.9 * out.size
    # And the network kept the picture: 2×2 means of the output are close to the input.
    pooled = out.astype(np.float64).reshape(20, 2, 28, 2, 3).mean(axis=(1, 3))
    assert np.abs(pooled - img).mean() < 0.01 * 65535


def test_rgba_alpha_is_upscaled_bicubic_beside_the_rgb(up: Upscaler) -> None:
    rgb = np.rint(_image(16, 24, seed=2) * 255).astype(np.uint8)
    alpha = np.zeros((16, 24), np.uint8)
    alpha[4:12, 6:18] = 255
    out = up(np.dstack([rgb, alpha]))
    assert out.shape == (32, 48, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., :3], up(rgb))
    expected_alpha = np.rint(upscale_alpha(alpha.astype(np.float32) / 255, 2) * 255).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 3], expected_alpha)
    assert out[..., 3].min() == 0 and out[..., 3].max() == 255  # clamped: no bicubic overshoot wraps around
    assert np.all(out[12:20, 18:30, 3] == 255) and np.all(out[:4, :4, 3] == 0)


def test_grayscale_comes_back_with_one_channel(up: Upscaler) -> None:
    gray = np.rint(_image(18, 22, seed=3)[..., 1] * 255).astype(np.uint8)
    out3 = up(gray[..., None])
    out2 = up(gray)
    assert out3.shape == (36, 44, 1) and out2.shape == (36, 44)
    np.testing.assert_array_equal(out3[..., 0], out2)
    rgb_out = _graph_out(up, np.repeat(gray[..., None], 3, axis=2).astype(np.float32) / 255)
    expected = np.rint(rgb_out.mean(axis=2) * 255).astype(np.uint8)
    np.testing.assert_array_equal(out2, expected)


def test_float32_and_input_checks(up: Upscaler) -> None:
    img = _image(12, 14)
    out = up(img)
    assert out.dtype == np.float32 and out.shape == (24, 28, 3) and 0 <= out.min() and out.max() <= 1
    bad = [(img * 2, "\\[0, 1\\]"), (np.full_like(img, np.nan), "\\[0, 1\\]"), (img.astype(np.float64), "float64"),
           (np.zeros((8, 8, 2), np.uint8), "C = 1, 3 or 4"), (np.zeros((1, 8, 8, 3), np.uint8), "shape"),
           ([[0, 1]], "numpy array")]
    for arr, msg in bad:
        with pytest.raises(InputImageError, match=msg):
            up(arr)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tile"):
        RunOptions(tile=0)
    with pytest.raises(CheckpointError, match="not found"):
        Upscaler.from_onnx("/nonexistent/model.onnx")


def test_tiled_equals_untiled_for_the_dense_model(fsrcnn_x2_onnx: Path) -> None:
    img = _image(40, 52, seed=4)
    whole = Upscaler.from_onnx(fsrcnn_x2_onnx, threads=1)(img)
    tiled = Upscaler.from_onnx(fsrcnn_x2_onnx, threads=1, tile=16, overlap=16)(img)  # 3×4 tiles
    assert tiled.shape == whole.shape
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)
    # Without context each tile's border sees zero padding instead of its neighbours: visibly different.
    seams = Upscaler.from_onnx(fsrcnn_x2_onnx, threads=1, tile=16, overlap=0)(img)
    assert np.abs(seams - whole).max() > 1e-3


def test_concurrent_calls_match_sequential_ones(fsrcnn_x2_onnx: Path) -> None:
    up = Upscaler.from_onnx(fsrcnn_x2_onnx, threads=1, tile=24, overlap=8)
    images = [np.rint(_image(20 + 6 * i, 30 + 4 * i, seed=i) * 255).astype(np.uint8) for i in range(8)]
    sequential = [up(im) for im in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(up, images * 2))
    for got, want in zip(concurrent, sequential * 2):
        np.testing.assert_array_equal(got, want)


def test_exif_rotated_jpeg_comes_out_rotated(up: Upscaler, tmp_path: Path) -> None:
    from PIL import Image

    from amsr.io.user_images import read_image

    stored = np.rint(_image(12, 20, seed=5) * 255).astype(np.uint8)  # landscape as stored
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the camera was held upright
    im.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    img = read_image(tmp_path / "photo.jpg")
    assert img.shape == (20, 12, 3)  # upright: portrait
    decoded = np.asarray(Image.open(tmp_path / "photo.jpg"))
    np.testing.assert_array_equal(img, np.rot90(decoded, -1))
    assert up(img).shape == (40, 24, 3)


def test_export_cache_is_named_after_what_changes_the_graph(weights_dir: Path, fsrcnn_x2_onnx: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from amsr.masking.mask import MaskConfig

    w = weight_file(weights_dir, "fsrcnn_y_x2.pth")
    cache = fsrcnn_x2_onnx.parent

    def name(**kw: object) -> str:
        return export_cache_path("fsrcnn", 2, weights=w, cache_dir=cache, **kw).name  # type: ignore[arg-type]

    assert name(accelerated=False) == fsrcnn_x2_onnx.name
    assert name(accelerated=False).startswith("fsrcnn_x2_dense_w") and "_op17_" in name(accelerated=False)
    variants = {name(accelerated=False), name(accelerated=True), name(accelerated=True, dilation=2),
                name(accelerated=True, mask=MaskConfig(blur_sigma=2.0)), name(accelerated=False, opset=18),
                export_cache_path("fsrcnn", 3, weights=weight_file(weights_dir, "fsrcnn_y_x3.pth"),
                                  cache_dir=cache, accelerated=False).name}
    assert len(variants) == 6
    assert "amsr-d2-" in name(accelerated=True, dilation=2)

    import amsr.export.onnx_export

    def no_export(*a: object, **k: object) -> None:
        raise AssertionError("a cached export was exported again")

    monkeypatch.setattr(amsr.export.onnx_export, "export_onnx", no_export)
    again = Upscaler.from_model("fsrcnn", 2, accelerated=False, weights=w, cache_dir=cache, threads=1)
    assert again.onnx_path == fsrcnn_x2_onnx and not again.accelerated


def test_from_model_exports_the_accelerated_network_with_its_mask_settings(
        weights_dir: Path, tmp_path: Path, fsrcnn_x2_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``from_model`` hands the exporter (the export itself is covered by tests/export)."""
    import shutil

    import amsr.export.onnx_export
    from amsr.models import unwrap_accelerated

    exported: list[tuple[object, Path, int]] = []

    def fake_export(module: object, out: Path, opset: int, verify: object) -> Path:
        assert verify is not None  # the cache keeps only graphs the runtime checked against PyTorch
        exported.append((module, Path(out), opset))
        shutil.copyfile(fsrcnn_x2_onnx, out)
        return Path(out)

    monkeypatch.setattr(amsr.export.onnx_export, "export_onnx", fake_export)
    w = weight_file(weights_dir, "fsrcnn_y_x2.pth")
    up = Upscaler.from_model("fsrcnn", 2, dilation=2, weights=w, cache_dir=tmp_path, threads=1)
    (module, out, opset), = exported
    assert unwrap_accelerated(module).config.dilation == 2  # type: ignore[arg-type]
    assert out == up.onnx_path and out.parent == tmp_path and "_amsr-d2-" in out.name and opset == 17


@pytest.mark.slow
def test_accelerated_graph_tiles_under_the_whole_image_mask(weights_dir: Path) -> None:
    """CARN-M x4 AMSR graph (the export tests/export and tests/runtime share): tiled equals untiled, also when
    the first tiled calls race to build the mask sessions."""
    for module in ("onnxscript", "onnx_graphsurgeon"):
        pytest.importorskip(module, reason=f"needs {module} (pip install 'amsr[onnx]')")
    from tests.onnx_exports import exported

    path = exported("accelerated", weight_file(weights_dir, "carn_m.pth"))
    whole = Upscaler.from_onnx(path, threads=1)
    tiled = Upscaler.from_onnx(path, threads=1, tile=20, overlap=24)  # CARN-M's receptive radius: 21 px
    assert whole.accelerated and tiled.accelerated
    images = [np.rint(_image(30, 36, seed=s) * 255).astype(np.uint8) for s in range(3)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(tiled, images))
    for g, im in zip(got, images):
        np.testing.assert_array_equal(g, whole(im))
