"""amsr/io/user_images.py: formats, modes, 16-bit PNG both ways, EXIF orientation, atomic writes, typed errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from amsr.core.errors import BackendUnavailableError, InputImageError
from amsr.io.user_images import apply_orientation, find_images, read_image, write_png

cv2 = pytest.importorskip("cv2", reason="16-bit PNG support needs opencv-python-headless (pip install 'amsr[png16]')")

RNG = np.random.default_rng(0)


def test_16bit_png_round_trips_without_truncation(tmp_path: Path) -> None:
    for channels in (1, 3, 4):
        img = RNG.integers(0, 65536, (5, 7, channels), dtype=np.uint16)
        write_png(tmp_path / f"c{channels}.png", img)
        back = read_image(tmp_path / f"c{channels}.png")
        assert back.dtype == np.uint16 and back.shape == (5, 7, channels)
        np.testing.assert_array_equal(back, img)
    # The reason for OpenCV: Pillow reads the same 16-bit RGB file as 8 bits.
    assert Image.open(tmp_path / "c3.png").mode == "RGB"
    # Channel order is RGB(A) on both sides, checked against an independent decoder (OpenCV gives BGR).
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "c3.png"), cv2.IMREAD_UNCHANGED)[..., ::-1],
                                  read_image(tmp_path / "c3.png"))


def _with_transparency(im: Image.Image) -> Image.Image:
    im.info["transparency"] = 0
    return im


def test_8bit_modes(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    cases = {
        "rgb.png": (Image.fromarray(rgb), (6, 9, 3)),
        "rgba.webp": (Image.fromarray(np.dstack([rgb, rgb[..., 0]]), "RGBA"), (6, 9, 4)),
        "gray.bmp": (Image.fromarray(rgb[..., 0]), (6, 9, 1)),
        "la.png": (Image.fromarray(rgb[..., :2].copy(), "LA"), (6, 9, 4)),
        "palette.png": (Image.fromarray(rgb).convert("P"), (6, 9, 3)),
        "palette_transparent.png": (_with_transparency(Image.fromarray(rgb).convert("P")), (6, 9, 4)),
        "photo.jpg": (Image.fromarray(rgb), (6, 9, 3)),
    }
    for name, (im, shape) in cases.items():
        kw = {"lossless": True} if name.endswith(".webp") else {}
        im.save(tmp_path / name, **kw)
        got = read_image(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == shape, name
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.webp")[..., 3], rgb[..., 0])
    la = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(la[..., 0], la[..., 2])  # gray replicated, alpha kept
    np.testing.assert_array_equal(la[..., 3], rgb[..., 1])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    stored = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.jpg", exif=exif, quality=100)
    with Image.open(tmp_path / "o.jpg") as f:
        expected = np.asarray(ImageOps.exif_transpose(f))
        decoded = np.asarray(f)
    np.testing.assert_array_equal(read_image(tmp_path / "o.jpg"), expected)
    np.testing.assert_array_equal(apply_orientation(decoded, orientation), expected)  # the 16-bit path's twin


def test_16bit_png_orientation_from_exif_chunk(tmp_path: Path) -> None:
    img = RNG.integers(0, 65536, (4, 6, 3), dtype=np.uint16)
    write_png(tmp_path / "plain.png", img)
    # Add an eXIf chunk (orientation 6) with Pillow's encoder of the tag block, after IHDR.
    exif = Image.Exif()
    exif[0x0112] = 6
    data = (tmp_path / "plain.png").read_bytes()
    import struct
    import zlib

    payload = exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif\x00\x00") else exif.tobytes()
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    (tmp_path / "rot.png").write_bytes(data[:33] + chunk + data[33:])
    got = read_image(tmp_path / "rot.png")
    assert got.dtype == np.uint16 and got.shape == (6, 4, 3)
    np.testing.assert_array_equal(got, np.rot90(img, -1))


def test_bad_files_raise_input_image_error_with_the_path(tmp_path: Path) -> None:
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "full.png").read_bytes()[:200])
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "anim.gif")
    for name, msg in [("text.png", "not an image file"), ("truncated.png", "cannot decode"),
                      ("missing.png", "cannot read"), ("anim.gif", "GIF files are not supported")]:
        with pytest.raises(InputImageError, match=msg) as e:
            read_image(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)


def test_16bit_without_opencv_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_png(tmp_path / "16.png", np.zeros((2, 2, 3), np.uint16))
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(BackendUnavailableError, match="opencv-python-headless"):
        read_image(tmp_path / "16.png")
    with pytest.raises(BackendUnavailableError, match="opencv-python-headless"):
        write_png(tmp_path / "out.png", np.zeros((2, 2, 3), np.uint16))


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "out" / "a.png"
    write_png(dest, np.zeros((3, 3, 3), np.uint8))
    before = dest.read_bytes()

    def failing_save(self: Image.Image, fp: object, *a: object, **k: object) -> None:
        Path(str(fp)).write_bytes(b"half a PNG")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_png(dest, np.full((3, 3, 3), 255, np.uint8))
    assert dest.read_bytes() == before
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.png"]  # no temporary file left


def test_find_images_is_flat_sorted_and_deduplicated(tmp_path: Path) -> None:
    for name in ("b.png", "a.JPG", ".hidden.png", "notes.txt", "sub/c.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    images, missing = find_images([tmp_path, tmp_path / "b.png", tmp_path / "sub" / "c.png", tmp_path / "nope.png"])
    assert [p.name for p in images] == ["a.JPG", "b.png", "c.png"]
    assert missing == [tmp_path / "nope.png"]
