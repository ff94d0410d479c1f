"""Reading benchmark images strictly: 8-bit RGB in, float NCHW [0, 1] out.

The evaluation path refuses what it cannot score honestly (alpha, 16-bit, palette, CMYK) instead of
converting silently; Pillow would otherwise truncate a 16-bit RGB PNG to 8 bits without a word.
8-bit grayscale is the one exception: Set14 ships two grayscale images and the standard protocol scores them
as RGB with three equal channels, so they are replicated (and the Y-PSNR is then that of the gray image).
Image size follows ``amsr.io.user_images``'s one policy (``pixel_limit``: 64 MP or ``$AMSR_MAX_PIXELS``), checked from
the header before decoding.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from amsr.core.errors import InputImageError
from amsr.io.listing import IMAGE_SUFFIXES, list_images
from amsr.io.user_images import check_image_size, png_header

__all__ = ["IMAGE_SUFFIXES", "list_images", "lr_images", "read_rgb8", "save_png", "to_tensor", "to_uint8"]



def _png_header(path: Path) -> tuple[int, int, int] | None:
    """(width, height, bit depth per channel) from a PNG's IHDR chunk, or None for other formats."""
    with open(path, "rb") as f:
        return png_header(f.read(26))


def read_rgb8(path: str | os.PathLike[str], max_pixels: int | None = None) -> np.ndarray:
    """Read an 8-bit RGB (or grayscale, replicated) image as an ``H×W×3`` uint8 array.

    ``max_pixels`` overrides the size limit (``amsr.io.user_images.pixel_limit``), checked before decoding.

    Raises:
        InputImageError: missing/unreadable file, too many pixels, or a mode other than 8-bit RGB (named in
            the message).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputImageError(f"{path}: no such image file")
    png = _png_header(path)
    if png is not None:
        check_image_size(path, png[0], png[1], max_pixels)
        if png[2] != 8:
            raise InputImageError(f"{path}: {png[2]}-bit PNG; amsr-eval scores 8-bit RGB images only")
    try:
        with Image.open(path) as im:  # lazy: header only, so the size is checked before decoding
            check_image_size(path, im.width, im.height, max_pixels)
            im.load()
            mode = im.mode
            if mode == "L":
                return np.repeat(np.asarray(im, dtype=np.uint8)[..., None], 3, axis=2)
            if mode != "RGB":
                kind = {"LA": "grayscale+alpha", "RGBA": "RGBA (alpha channel)", "P": "palette",
                        "I;16": "16-bit grayscale", "I": "32-bit integer", "F": "float", "1": "1-bit",
                        "CMYK": "CMYK"}.get(mode, mode)
                raise InputImageError(f"{path}: {kind} image; amsr needs 8-bit RGB or grayscale (convert it first)")
            return np.asarray(im, dtype=np.uint8).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # Pillow's check runs in open
        raise InputImageError(f"{path}: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputImageError(f"{path}: cannot decode image ({e})") from None


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """``H×W×3`` uint8 → ``1×3×H×W`` float32 in [0, 1]."""
    return torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """``1×3×H×W`` float (any range) → ``H×W×3`` uint8, clamped to [0, 1] and rounded (the SR convention)."""
    if t.dim() != 4 or t.shape[0] != 1:
        raise ValueError(f"expected a 1×C×H×W tensor, got {tuple(t.shape)}")
    arr = t[0].detach().float().clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(arr)


def save_png(dest: str | os.PathLike[str], img: np.ndarray) -> Path:
    """Write an uint8 or uint16 ``H×W[×C]`` array as PNG, atomically."""
    from PIL import Image

    from amsr.core.files import atomic_path

    with atomic_path(dest) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    return Path(dest)


def lr_images(data: str | os.PathLike[str]) -> list[Path]:
    """The LR images of a data folder: ``data/LR/*`` when it has an LR/ folder, else ``data/*``.

    Raises:
        InputImageError: no such folder, or no images in it.
    """
    data = Path(data)
    folder = data / "LR" if (data / "LR").is_dir() else data
    images = list_images(folder)
    if not images:
        raise InputImageError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images
