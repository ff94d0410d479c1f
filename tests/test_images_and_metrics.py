"""Strict image reading and the standard Y-channel metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amsr.core.errors import InputImageError
from amsr.io.images import read_rgb8, save_png, to_tensor, to_uint8
from amsr.io.metrics import psnr_y, rgb_to_y, ssim_y


def _rgb(h: int = 16, w: int = 20) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode, msg", [("RGBA", "alpha"), ("LA", "alpha"), ("P", "palette"), ("CMYK", "CMYK")])
def test_unsupported_modes_are_refused(tmp_path: Path, mode: str, msg: str) -> None:
    f = tmp_path / ("x.png" if mode != "CMYK" else "x.jpg")
    Image.fromarray(_rgb()).convert(mode).save(f)
    with pytest.raises(InputImageError, match=msg):
        read_rgb8(f)


def test_16bit_png_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(f)
    with pytest.raises(InputImageError, match="16-bit"):
        read_rgb8(f)


def test_grayscale_is_replicated(tmp_path: Path) -> None:
    f = tmp_path / "g.png"
    gray = _rgb()[..., 0]
    Image.fromarray(gray).save(f)
    img = read_rgb8(f)
    assert img.shape == (16, 20, 3) and all(np.array_equal(img[..., c], gray) for c in range(3))


def test_corrupt_and_missing_files(tmp_path: Path) -> None:
    f = tmp_path / "broken.png"
    f.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(InputImageError, match="broken.png"):
        read_rgb8(f)
    with pytest.raises(InputImageError, match="no such"):
        read_rgb8(tmp_path / "absent.png")


def test_roundtrip_and_atomic_save(tmp_path: Path) -> None:
    img = _rgb()
    out = save_png(tmp_path / "o.png", img)
    assert np.array_equal(read_rgb8(out), img)
    assert np.array_equal(to_uint8(to_tensor(img)), img)
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


def test_metrics_reference_values() -> None:
    img = _rgb(32, 32)
    assert psnr_y(img, img, 2) == float("inf")
    assert ssim_y(img, img, 2) == pytest.approx(1.0)
    other = img.copy()
    other[..., :] = np.clip(img.astype(int) + 5, 0, 255).astype(np.uint8)
    y_diff = rgb_to_y(other) - rgb_to_y(img)
    expected = 10 * np.log10(255**2 / np.mean(y_diff[2:-2, 2:-2] ** 2))
    assert psnr_y(other, img, 2) == pytest.approx(expected)
    assert rgb_to_y(np.zeros((1, 1, 3), np.uint8))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0] == pytest.approx(235.0)


def test_one_image_lister_for_benchmarks_and_upscale(tmp_path: Path) -> None:
    """``list_images`` is the one lister: hidden files never count, suffixes match in any case; the upscaler
    lists only what its reader decodes (no TIFF), the benchmark reader its own suffixes (TIFF too)."""
    from amsr.io.listing import list_images
    from amsr.io.user_images import INPUT_SUFFIXES, find_images

    for name in ("a.png", "B.JPG", "c.tif", "._a.png", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["B.JPG", "a.png", "c.tif"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["B.JPG", "a.png", "c.tif", "d.png"]
    assert [p.name for p in list_images(tmp_path, suffixes=INPUT_SUFFIXES)] == ["B.JPG", "a.png"]
    assert [p.name for p in find_images([tmp_path])[0]] == ["B.JPG", "a.png"]
