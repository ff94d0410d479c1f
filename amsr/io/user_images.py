"""Reading and writing user images for ``amsr-upscale``: what a production upscaler meets, not the benchmark.

``amsr.io.images`` is the strict benchmark reader (8-bit RGB only). This module accepts what users have:

- formats: PNG, JPEG (including phones' MPO), WebP and BMP; animated files give their first frame (with a
  warning); anything else is an ``InputImageError`` naming the path;
- EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), so a portrait phone photo comes out upright;
- 8-bit images come back as ``uint8``; 16-bit PNGs as ``uint16``, decoded by OpenCV: Pillow opens a 16-bit
  RGB PNG as 8-bit RGB, silently dropping the low byte, so those files never go through Pillow;
- channels: always ``H×W×C`` with C = 1 (gray), 3 (RGB) or 4 (RGBA). Gray+alpha, palettes with transparency
  and RGB with a ``tRNS`` colour key become RGBA; CMYK/YCbCr become RGB;
- size: an image declaring more than ``pixel_limit()`` pixels (default ``DEFAULT_MAX_PIXELS``, environment
  ``AMSR_MAX_PIXELS``) is refused from its header, before anything is decoded (a decompression bomb: a few
  hundred bytes of PNG can declare 30000×30000). ``amsr.io.images`` (the benchmark reader) uses the same policy.

Output is PNG only: ``uint16`` in gives a 16-bit PNG, alpha is kept, and the file appears atomically
(``amsr.core.files``). ICC profiles and other metadata are not carried over.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from amsr.core.errors import AmsrError, BackendUnavailableError, InputImageError
from amsr.core.files import atomic_path, save_bytes
from amsr.io.listing import list_images

log = logging.getLogger(__name__)

#: Suffixes picked up when a folder is given; a file named explicitly is tried whatever its suffix.
INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
#: Pillow format names read by ``read_image`` (MPO: the multi-picture JPEG many phones write).
_PIL_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "DIB"}
_EXIF_ORIENTATION = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Largest image (width × height) read by default: 64 MP takes 50 MP phone photos (8160×6120) and 8K frames
#: (33 MP) and bounds a decoded 16-bit RGBA image to 512 MB (8 bytes a pixel); it stays below Pillow's own
#: DecompressionBombWarning threshold (89.5 MP), so Pillow never warns about an image amsr accepts.
DEFAULT_MAX_PIXELS = 64_000_000
#: Environment variable overriding ``DEFAULT_MAX_PIXELS`` (a positive integer number of pixels).
MAX_PIXELS_ENV = "AMSR_MAX_PIXELS"


def pixel_limit(override: int | None = None) -> int:
    """The pixel limit in force: ``override`` if given, else ``$AMSR_MAX_PIXELS``, else ``DEFAULT_MAX_PIXELS``.

    Raises:
        AmsrError: the override or the environment variable is not a positive integer.
    """
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, int) or override < 1:
            raise AmsrError(f"max_pixels must be a positive integer, got {override!r}")
        return override
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise AmsrError(f"{MAX_PIXELS_ENV}={raw!r}: expected a positive integer number of pixels "
                        f"(default {DEFAULT_MAX_PIXELS})")
    return value


def check_image_size(path: Path | str, width: int, height: int, limit: int | None = None) -> None:
    """Refuse an image whose header declares more than ``pixel_limit(limit)`` pixels (before decoding it).

    Raises:
        InputImageError: too many pixels (the message gives the size, the limit and how to raise it).
    """
    allowed = pixel_limit(limit)
    if width * height > allowed:
        raise InputImageError(f"{path}: {width}×{height} image ({width * height / 1e6:.1f} MP) is over the "
                              f"{allowed / 1e6:g} MP limit (set {MAX_PIXELS_ENV} to raise it)")


def png_header(head: bytes) -> tuple[int, int, int] | None:
    """(width, height, bit depth per channel) from a PNG's IHDR chunk (its first 26 bytes), None if not PNG."""
    if len(head) >= 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        width, height, depth = struct.unpack(">IIB", head[16:25])
        return width, height, depth
    return None


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise BackendUnavailableError("16-bit PNG files need OpenCV: pip install opencv-python-headless "
                                      "(or pip install 'amsr[png16]')") from None
    return cv2


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """``img`` (H×W[×C]) turned upright for an EXIF orientation value (1–8), as ``ImageOps.exif_transpose``."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],                       # mirror left-right
        3: lambda a: a[::-1, ::-1],                    # rotate 180
        4: lambda a: a[::-1],                          # mirror top-bottom
        5: lambda a: a.swapaxes(0, 1),                 # transpose
        6: lambda a: np.rot90(a, -1),                  # rotate 90 clockwise
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),     # transverse
        8: lambda a: np.rot90(a, 1),                   # rotate 90 counter-clockwise
    }
    op = ops.get(int(orientation), ops[1])
    return np.ascontiguousarray(op(img))


def _read_16bit_png(path: Path, data: bytes) -> np.ndarray:
    cv2 = _cv2()
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise InputImageError(f"{path}: cannot decode 16-bit PNG")
    if arr.ndim == 2:
        arr = arr[..., None]
    elif arr.shape[2] == 3:
        arr = arr[..., ::-1]  # BGR → RGB
    elif arr.shape[2] == 4:
        arr = arr[..., [2, 1, 0, 3]]  # BGRA → RGBA
    # PNG may carry orientation in an eXIf chunk; OpenCV ignores it, Pillow can still read the tag.
    orientation = _pil_orientation(path, data)
    return apply_orientation(arr, orientation) if orientation > 1 else np.ascontiguousarray(arr)


def _pil_orientation(path: Path, data: bytes) -> int:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # not an EXIF problem
        raise InputImageError(f"{path}: {e}") from None
    except Exception:  # a broken EXIF block must not fail a file OpenCV decoded: treat it as upright
        log.warning("%s: unreadable EXIF data ignored", path)
        return 1


def _pil_to_array(path: Path, im: Any) -> np.ndarray:
    mode = im.mode
    if mode in ("PA", "LA") or (mode in ("P", "L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA")
    elif mode == "P":
        im = im.convert("RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "RGBX", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode not in ("L", "RGB", "RGBA"):
        raise InputImageError(f"{path}: unsupported {mode} image (amsr reads 8-bit gray/RGB/RGBA and 16-bit PNG)")
    arr = np.asarray(im, dtype=np.uint8)
    return np.ascontiguousarray(arr[..., None] if arr.ndim == 2 else arr)


def read_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as ``H×W×C`` (C = 1, 3 or 4) ``uint8``, or ``uint16`` for 16-bit PNGs, upright.

    ``max_pixels`` overrides the size limit (``pixel_limit``: ``$AMSR_MAX_PIXELS`` or 64 MP), checked
    from the header before decoding.

    Raises:
        InputImageError: missing, corrupt, unsupported or too large file (the message names the path).
        BackendUnavailableError: a 16-bit PNG and OpenCV is not installed.
        AmsrError: ``max_pixels`` / ``$AMSR_MAX_PIXELS`` is not a positive integer.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        raise InputImageError(f"{path}: is a folder, not an image") from None
    except OSError as e:
        raise InputImageError(f"{path}: cannot read ({e.strerror or e})") from None
    png = png_header(data[:26])
    if png is not None:  # OpenCV (16-bit) checks nothing below 2^30 pixels: check before either decoder
        check_image_size(path, png[0], png[1], max_pixels)
    if png is not None and png[2] == 16:
        return _read_16bit_png(path, data)
    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: the header is parsed, no pixel decoded yet
            check_image_size(path, im.width, im.height, max_pixels)
            if im.format not in _PIL_FORMATS:
                raise InputImageError(f"{path}: {im.format} files are not supported "
                                      "(use PNG, JPEG, WebP or BMP)")
            if getattr(im, "n_frames", 1) > 1 and im.format != "MPO":
                log.warning("%s: animated image, using its first frame", path)
            im.load()
            try:
                upright = ImageOps.exif_transpose(im)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise
            except Exception as e:  # malformed EXIF raises many types; the pixels are still good
                log.warning("%s: unreadable EXIF data ignored (%s)", path, e)
                upright = im
            return _pil_to_array(path, upright)
    except InputImageError:
        raise
    except UnidentifiedImageError:
        raise InputImageError(f"{path}: not an image file Pillow recognises "
                              "(corrupt, or not PNG/JPEG/WebP/BMP)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # Pillow's check runs in open
        raise InputImageError(f"{path}: {e} (Pillow's limit, refused before amsr's {pixel_limit(max_pixels)} "
                              "pixels)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt data
        raise InputImageError(f"{path}: cannot decode image ({e})") from None


def write_png(dest: str | os.PathLike[str], img: np.ndarray) -> Path:
    """Write ``img`` (H×W or H×W×C with C = 1, 3, 4; ``uint8`` or ``uint16``) as PNG, atomically.

    ``uint16`` is written as a 16-bit PNG (OpenCV: Pillow cannot write 16-bit RGB), ``uint8`` through Pillow.
    """
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise ValueError(f"expected H×W or H×W×{{1,3,4}}, got shape {img.shape}")
    if img.dtype == np.uint16:
        cv2 = _cv2()
        if img.ndim == 3:
            img = img[..., [2, 1, 0, 3]] if img.shape[2] == 4 else img[..., ::-1]
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(img))
        if not ok:
            raise OSError(f"{dest}: OpenCV could not encode a 16-bit PNG of shape {img.shape}")
        return save_bytes(dest, buf.tobytes())
    if img.dtype != np.uint8:
        raise ValueError(f"expected uint8 or uint16, got {img.dtype}")
    from PIL import Image

    with atomic_path(dest) as tmp:
        Image.fromarray(np.ascontiguousarray(img)).save(tmp, format="PNG")
    return Path(dest)


def find_images(inputs: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Path]]:
    """Expand command-line inputs: files as given, folders to their images (not recursive).

    A folder contributes the files directly inside it with a suffix in ``INPUT_SUFFIXES`` (any case),
    hidden files excluded, sorted by name; subfolders are not entered, so outputs cannot clash across
    them. Paths listed twice are kept once.

    Returns:
        ``(images, missing)``: the image paths in order, and inputs that do not exist.
    """
    images: list[Path] = []
    missing: list[Path] = []
    seen: set[Path] = set()
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = list_images(p, suffixes=INPUT_SUFFIXES)
            if not found:
                log.warning("%s: no %s files in this folder", p, "/".join(s[1:] for s in INPUT_SUFFIXES))
        elif p.exists():
            found = [p]
        else:
            missing.append(p)
            continue
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                images.append(f)
    return images, missing
