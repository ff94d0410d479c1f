"""The one image lister: the files of a folder with an image suffix, sorted by path, hidden files left out
(``._photo.jpg`` beside every image on a macOS-copied drive). The benchmark reader lists what it reads
(``amsr.io.images.IMAGE_SUFFIXES``), ``amsr-upscale`` what its reader decodes (``amsr.io.user_images``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from amsr.core.errors import InputImageError

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")


def list_images(folder: str | os.PathLike[str], recursive: bool = False,
                suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files directly in ``folder`` (and in its subfolders if ``recursive``), sorted by path; a suffix
    matches in any case.

    Raises:
        InputImageError: ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputImageError(f"{folder}: no such folder")
    wanted = {s.lower() for s in suffixes}
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix.lower() in wanted and not p.name.startswith(".") and p.is_file())
