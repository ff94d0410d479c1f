"""Scoring dense vs accelerated models on an HR/LR benchmark folder (the ``amsr-eval`` contract)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from amsr.core.cost import run_counting_macs
from amsr.core.errors import InputImageError
from amsr.io.images import read_rgb8, to_tensor, to_uint8
from amsr.io.metrics import psnr_y, ssim_y
from amsr.io.pairs import ImagePair, find_pairs

__all__ = ["EvalReport", "ImagePair", "ImageResult", "Scores", "evaluate", "find_pairs", "load_pair", "score"]

# SSIM's 11×11 window must fit after shaving ``scale`` pixels at each border.
_SSIM_WINDOW = 11


def load_pair(pair: ImagePair, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one pair and check it fits ``scale`` and is large enough to score."""
    lr, hr = read_rgb8(pair.lr), read_rgb8(pair.hr)
    (h, w), (H, W) = lr.shape[:2], hr.shape[:2]
    if (H, W) != (h * scale, w * scale):
        raise InputImageError(f"{pair.name}: HR is {W}×{H} but LR {w}×{h} ×{scale} is {w * scale}×{h * scale}"
                              " (wrong --scale, or HR not cropped to a multiple of the scale?)")
    if min(H, W) - 2 * scale < _SSIM_WINDOW:
        raise InputImageError(f"{pair.name}: LR {w}×{h} is too small to score at x{scale} "
                              f"(needs ≥ {-(-(_SSIM_WINDOW + 2 * scale) // scale)} px per side)")
    return lr, hr


@dataclass
class Scores:
    psnr_y: float
    ssim_y: float
    gmacs: float
    density: float | None = None
    windows: float | None = None  # selected / all windows of the masked transformer blocks (None: none)


@dataclass
class ImageResult:
    name: str
    dense: Scores
    amsr: Scores


@dataclass
class EvalReport:
    model: str
    scale: int
    images: int
    settings: dict[str, object]
    dense: Scores
    amsr: Scores
    per_image: list[ImageResult] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        for scores in (d["dense"], d["amsr"], *(s for row in d["per_image"] for s in (row["dense"], row["amsr"]))):
            for key in ("density", "windows"):
                if scores.get(key) is None:
                    scores.pop(key, None)
        return d


def score(model: nn.Module, lr: np.ndarray, hr: np.ndarray, scale: int,
          density_of: Callable[[], float] | None = None,
          windows_of: Callable[[], float | None] | None = None) -> Scores:
    """Run ``model`` on one LR image and score it against HR."""
    sr, macs = run_counting_macs(model, to_tensor(lr))
    out = to_uint8(sr)
    return Scores(psnr_y(out, hr, scale), ssim_y(out, hr, scale), macs / 1e9,
                  density_of() if density_of else None, windows_of() if windows_of else None)


def _mean(rows: Iterable[Scores]) -> Scores:
    rows = list(rows)
    dens = [r.density for r in rows if r.density is not None]
    wins = [r.windows for r in rows if r.windows is not None]
    return Scores(float(np.mean([r.psnr_y for r in rows])), float(np.mean([r.ssim_y for r in rows])),
                  float(np.mean([r.gmacs for r in rows])), float(np.mean(dens)) if dens else None,
                  float(np.mean(wins)) if wins else None)


@torch.no_grad()
def evaluate(name: str, scale: int, dense: nn.Module, accelerated: nn.Module, density_of: Callable[[], float],
             pairs: list[ImagePair], settings: dict[str, object],
             progress: Callable[[Iterable[ImagePair]], Iterable[ImagePair]] = iter,
             windows_of: Callable[[], float | None] | None = None) -> EvalReport:
    """Score ``dense`` and ``accelerated`` on every pair; ``density_of()`` reads the last mask's density and
    ``windows_of()`` (optional) the fraction of transformer windows computed in the last forward."""
    for pair in pairs:  # fail on a bad pair before spending minutes on the good ones
        load_pair(pair, scale)
    rows = []
    for pair in progress(pairs):
        lr, hr = load_pair(pair, scale)
        rows.append(ImageResult(pair.name, score(dense, lr, hr, scale),
                                score(accelerated, lr, hr, scale, density_of, windows_of)))
    return EvalReport(name, scale, len(rows), settings, _mean(r.dense for r in rows), _mean(r.amsr for r in rows), rows)
