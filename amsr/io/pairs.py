"""The one pairing rule of a benchmark folder: ``DIR/HR/x.png`` ↔ ``DIR/LR/x.png``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from amsr.core.errors import InputImageError
from amsr.io.listing import list_images


@dataclass(frozen=True)
class ImagePair:
    name: str
    lr: Path
    hr: Path


def find_pairs(data_dir: str | os.PathLike[str]) -> list[ImagePair]:
    """HR/LR pairs of a benchmark folder (``DIR/HR/x.png`` ↔ ``DIR/LR/x.png``).

    Raises:
        InputImageError: no HR/ or LR/ folder, no images, or a file present on one side only.
    """
    root = Path(data_dir)
    hr_dir, lr_dir = root / "HR", root / "LR"
    for d in (hr_dir, lr_dir):
        if not d.is_dir():
            raise InputImageError(f"{root}: expected folders HR/ and LR/ with the same file names; {d.name}/ is missing")
    hr = {p.name: p for p in list_images(hr_dir)}
    lr = {p.name: p for p in list_images(lr_dir)}
    if not lr:
        raise InputImageError(f"{lr_dir}: no images")
    unpaired = sorted(set(hr) ^ set(lr))
    if unpaired:
        raise InputImageError(f"{root}: {len(unpaired)} image(s) without a partner in HR/ or LR/: "
                              + ", ".join(unpaired[:5]))
    return [ImagePair(n, lr[n], hr[n]) for n in sorted(lr)]
