"""Visual fidelity: an exported graph run the way ``amsr-upscale`` runs it (tiled), against the dense model.

``amsr-parity`` checks that a graph computes what its PyTorch twin computes, on images smaller than one tile;
that let a blend graph whose output mask was recomputed per tile pass while it wrote blocky patches on photos
(issue #13). This check looks where a user looks:

- the accelerated graph runs through ``Upscaler`` with the production tiling (``tile`` < the image, so at
  least two tiles), output rounded to the image's 8 bits;
- the reference is the dense network in PyTorch (``dense_reference``: tiles with a wide margin, so memory
  stays bounded; CARN-M's receptive radius is 21 LR px, the margin 64);
- scores, on 8-bit RGB: PSNR against dense over the whole image, over the *flat region* (LR pixels where the
  output mask is 0, i.e. where bicubic or skipped features are used), and the worst ``block``×``block`` HR
  block — a local defect (a patch, a seam) hides in a whole-image mean but not there.

Default thresholds (``FidelityThresholds``): 45 dB whole and flat, 30 dB for the worst 32×32 block. Plain
bicubic measured 45.4 dB against dense on a flat photo (issue #13), so below 45 dB the accelerated output is
further from dense than bicubic; the blend at the CARN-M x4 default measured 51–60 dB on Photos2K, ≥ 50.5 dB
over the flat region. ``contact_sheet`` puts dense | accelerated | |Δ|×gain crops of the worst blocks side by
side for a person to look at.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

BLOCK = 32  # HR px: a patch a viewer notices at 100 % zoom
REFERENCE_TILE = 256  # LR px per dense reference tile
REFERENCE_MARGIN = 64  # LR px of context per reference tile (≥ 3× CARN-M's 21 px receptive radius)


@dataclass(frozen=True)
class FidelityThresholds:
    """PASSED needs every image at or above each of these (dB, 8-bit RGB PSNR against the dense model)."""

    min_psnr_db: float = 45.0
    min_flat_psnr_db: float = 45.0
    min_block_psnr_db: float = 30.0


@dataclass(frozen=True)
class Block:
    """One HR block (top-left corner in HR px) and its PSNR against dense."""

    y: int
    x: int
    psnr_db: float


@dataclass(frozen=True)
class ImageFidelity:
    name: str
    lr_size: tuple[int, int]
    tile: int
    psnr_db: float
    flat_psnr_db: float | None  # None: no flat pixel (or a dense graph)
    flat_fraction: float
    worst_blocks: tuple[Block, ...] = field(default_factory=tuple)

    def failures(self, t: FidelityThresholds) -> list[str]:
        """What falls short of ``t`` (empty: passed)."""
        out = []
        if self.psnr_db < t.min_psnr_db:
            out.append(f"PSNR {self.psnr_db:.2f} < {t.min_psnr_db} dB")
        if self.flat_psnr_db is not None and self.flat_psnr_db < t.min_flat_psnr_db:
            out.append(f"flat-region PSNR {self.flat_psnr_db:.2f} < {t.min_flat_psnr_db} dB")
        if self.worst_blocks and self.worst_blocks[0].psnr_db < t.min_block_psnr_db:
            b = self.worst_blocks[0]
            out.append(f"block at ({b.y}, {b.x}) {b.psnr_db:.2f} < {t.min_block_psnr_db} dB")
        return out

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["worst_blocks"] = [asdict(b) for b in self.worst_blocks]
        return d


def psnr_u8(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """PSNR in dB between two uint8 images (all channels), over the H×W pixels where ``where`` is true."""
    if a.shape != b.shape:
        raise ValueError(f"size mismatch: {a.shape} vs {b.shape}")
    d = a.astype(np.float64) - b.astype(np.float64)
    sq = d * d if d.ndim == 2 else (d * d).mean(axis=2)
    if where is not None:
        if not where.any():
            return math.inf
        sq = sq[where]
    mse = float(sq.mean())
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def block_psnrs(a: np.ndarray, b: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """PSNR of every ``block``×``block`` tile of the image (partial tiles at the border included), as a grid."""
    d = a.astype(np.float64) - b.astype(np.float64)
    sq = d * d if d.ndim == 2 else (d * d).mean(axis=2)
    h, w = sq.shape
    gh, gw = -(-h // block), -(-w // block)
    padded = np.full((gh * block, gw * block), np.nan)
    padded[:h, :w] = sq
    mse = np.nanmean(padded.reshape(gh, block, gw, block), axis=(1, 3))
    with np.errstate(divide="ignore"):
        return np.where(mse == 0, np.inf, 10.0 * np.log10(255.0**2 / np.maximum(mse, 1e-300)))


def worst_blocks(a: np.ndarray, b: np.ndarray, k: int = 4, block: int = BLOCK) -> tuple[Block, ...]:
    """The ``k`` blocks with the lowest PSNR, worst first."""
    grid = block_psnrs(a, b, block)
    order = np.argsort(grid, axis=None, kind="stable")[:k]
    return tuple(Block(int(i // grid.shape[1]) * block, int(i % grid.shape[1]) * block, float(grid.flat[i]))
                 for i in order if np.isfinite(grid.flat[i]))


def score_image(name: str, accelerated: np.ndarray, dense: np.ndarray, flat_lr: np.ndarray | None, scale: int,
                tile: int, k: int = 4) -> ImageFidelity:
    """Scores of one image (uint8 H×W×C outputs; ``flat_lr``: LR bool map of the flat region, or None)."""
    flat_hr = None if flat_lr is None else np.repeat(np.repeat(flat_lr, scale, axis=0), scale, axis=1)
    flat_psnr = None if flat_hr is None or not flat_hr.any() else psnr_u8(accelerated, dense, flat_hr)
    return ImageFidelity(name=name, lr_size=(dense.shape[0] // scale, dense.shape[1] // scale), tile=tile,
                         psnr_db=psnr_u8(accelerated, dense), flat_psnr_db=flat_psnr,
                         flat_fraction=0.0 if flat_lr is None else float(flat_lr.mean()),
                         worst_blocks=worst_blocks(accelerated, dense, k))


def dense_reference(model: Callable[..., object], lr: np.ndarray, min_size: int = 1) -> np.ndarray:
    """The dense PyTorch model on an N×3×H×W float32 image, in ``REFERENCE_TILE`` tiles with a
    ``REFERENCE_MARGIN`` margin (bounded memory; equal to the whole-image run for networks whose receptive
    radius is below the margin)."""
    import torch

    def run(t: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(t)).numpy()  # type: ignore[union-attr]

    from amsr.runtime.tiling import crop_runner, run_tiled

    if max(lr.shape[-2:]) <= REFERENCE_TILE:
        return run(np.ascontiguousarray(lr))
    return run_tiled(crop_runner(run, lr), lr.shape[-2:], REFERENCE_TILE, REFERENCE_MARGIN, min_size)


def production_tile(lr_size: tuple[int, int], tile: int) -> int:
    """``tile``, or half the longer side when the image fits one tile: the check always runs tiled."""
    longest = max(lr_size)
    return tile if longest > tile else max(1, -(-longest // 2))


def contact_sheet(dense: np.ndarray, accelerated: np.ndarray, blocks: tuple[Block, ...], gain: float = 8.0,
                  block: int = BLOCK, zoom: int = 4) -> np.ndarray:
    """A uint8 RGB sheet: one row per block, ``dense | accelerated | |Δ|×gain``, each crop zoomed ``zoom``×
    (nearest) and separated by a 4-px grey gutter."""
    def rgb(a: np.ndarray) -> np.ndarray:
        return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]

    d, a = rgb(dense), rgb(accelerated)
    gutter = 4
    cell = block * zoom
    rows = max(1, len(blocks))
    sheet = np.full((rows * (cell + gutter) + gutter, 3 * (cell + gutter) + gutter, 3), 128, np.uint8)
    for r, b in enumerate(blocks):
        cd = d[b.y:b.y + block, b.x:b.x + block]
        ca = a[b.y:b.y + block, b.x:b.x + block]
        diff = np.clip(np.abs(cd.astype(np.float64) - ca.astype(np.float64)) * gain, 0, 255).astype(np.uint8)
        for c, crop in enumerate((cd, ca, diff)):
            big = np.repeat(np.repeat(crop, zoom, axis=0), zoom, axis=1)
            y0, x0 = gutter + r * (cell + gutter), gutter + c * (cell + gutter)
            sheet[y0:y0 + big.shape[0], x0:x0 + big.shape[1]] = big
    return sheet
