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

``check_fidelity`` is the whole check over a set of LR images (``amsr-parity --fidelity``,
``scripts/photos_fidelity.py``); ``compare_with_dense`` scores one written output (``amsr-upscale --compare``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

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
    tiled_vs_untiled_max_levels: int | None = None  # None: not measured

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


def dense_reference(model: Callable[..., torch.Tensor], lr: np.ndarray, min_size: int = 1) -> np.ndarray:
    """The dense PyTorch model on an N×3×H×W float32 image, in ``REFERENCE_TILE`` tiles with a
    ``REFERENCE_MARGIN`` margin (bounded memory; equal to the whole-image run for networks whose receptive
    radius is below the margin)."""
    import torch

    def run(t: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(t)).numpy()

    from amsr.runtime.tiling import crop_runner, run_tiled

    if max(lr.shape[-2:]) <= REFERENCE_TILE:
        return run(np.ascontiguousarray(lr))
    return run_tiled(crop_runner(run, lr), lr.shape[-2:], REFERENCE_TILE, REFERENCE_MARGIN, min_size)


def to_u8(y: np.ndarray) -> np.ndarray:
    """A 1×3×H×W float output → H×W×3 uint8, clamped and rounded as ``Upscaler`` does."""
    return np.rint(np.clip(y[0], 0.0, 1.0).transpose(1, 2, 0) * 255.0).astype(np.uint8)


def production_tile(lr_size: tuple[int, int], tile: int) -> int:
    """``tile``, or half the longer side when the image fits one tile: the check always runs tiled."""
    longest = max(lr_size)
    return tile if longest > tile else max(1, -(-longest // 2))


def contact_sheet(dense: np.ndarray, accelerated: np.ndarray, blocks: tuple[Block, ...], gain: float = 8.0,
                  block: int = BLOCK, zoom: int = 4, reference: np.ndarray | None = None) -> np.ndarray:
    """A uint8 RGB sheet: one row per block, ``dense | accelerated | |Δ|×gain`` (then ``reference``, e.g. the
    HR image, when given), each crop zoomed ``zoom``× (nearest) and separated by a 4-px grey gutter."""
    def rgb(a: np.ndarray) -> np.ndarray:
        return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]

    d, a = rgb(dense), rgb(accelerated)
    ref = None if reference is None else rgb(reference)
    gutter = 4
    cell = block * zoom
    rows, columns = max(1, len(blocks)), 3 if ref is None else 4
    sheet = np.full((rows * (cell + gutter) + gutter, columns * (cell + gutter) + gutter, 3), 128, np.uint8)
    for r, b in enumerate(blocks):
        cd = d[b.y:b.y + block, b.x:b.x + block]
        ca = a[b.y:b.y + block, b.x:b.x + block]
        diff = np.clip(np.abs(cd.astype(np.float64) - ca.astype(np.float64)) * gain, 0, 255).astype(np.uint8)
        crops = (cd, ca, diff) if ref is None else (cd, ca, diff, ref[b.y:b.y + block, b.x:b.x + block])
        for c, crop in enumerate(crops):
            big = np.repeat(np.repeat(crop, zoom, axis=0), zoom, axis=1)
            y0, x0 = gutter + r * (cell + gutter), gutter + c * (cell + gutter)
            sheet[y0:y0 + big.shape[0], x0:x0 + big.shape[1]] = big
    return sheet


def check_fidelity(onnx_path: str | Path, lr_images: Iterable[Path], dense_model: Callable[..., torch.Tensor],
                   tile: int = 512, threads: int | None = None, providers: str | Sequence[str] | None = None,
                   sheets: Path | None = None) -> Iterator[ImageFidelity]:
    """The graph run as ``amsr-upscale`` runs it, scored against ``dense_model``, one 8-bit RGB LR image at a time.

    Per image: ``Upscaler`` with ``tile = production_tile(lr_size, tile)`` (so ≥ 2 tiles) and the default
    overlap, against ``dense_reference(dense_model)``; the flat region from the graph's output mask
    (``mask/output``, else ``mask``; none for a dense graph) and max |tiled − untiled| in 8-bit levels.
    Yields each ``ImageFidelity`` as it is scored; ``sheets``: also writes ``<stem>_sheet.png`` there.

    Raises:
        InputImageError: an image that is not 8-bit RGB (``read_rgb8``); and as ``OrtUpscaler``.
    """
    from amsr.io.images import read_rgb8, save_png
    from amsr.runtime.onnxrt import OrtUpscaler
    from amsr.runtime.upscaler import RunOptions, Upscaler

    ort = OrtUpscaler(onnx_path, providers=list(providers) if isinstance(providers, (list, tuple)) else providers,
                      threads=threads)  # one session for every tile size (``Upscaler`` shares its runner)
    whole = Upscaler(ort, RunOptions())
    tiled: dict[int, Upscaler] = {}
    for path in lr_images:
        lr = read_rgb8(path)
        t = production_tile(lr.shape[:2], tile)
        if t not in tiled:
            tiled[t] = Upscaler(ort, RunOptions(tile=t))
        acc = tiled[t](lr)
        levels = int(np.abs(acc.astype(np.int16) - whole(lr).astype(np.int16)).max())
        x = lr.transpose(2, 0, 1)[None].astype(np.float32) / 255
        dense = to_u8(dense_reference(dense_model, x, ort.min_input_size))
        flat = None
        if ort.accelerated:
            masks = ort.masks(x)
            flat = masks.get("mask/output", masks["mask"])[0, 0] == 0
        r = score_image(path.name, acc, dense, flat, dense.shape[0] // lr.shape[0], t)
        if sheets is not None:
            save_png(sheets / f"{path.stem}_sheet.png", contact_sheet(dense, acc, r.worst_blocks))
        yield replace(r, tiled_vs_untiled_max_levels=levels)


def fidelity_line(r: ImageFidelity, t: FidelityThresholds) -> str:
    """One report line: sizes, tiled vs untiled, PSNR vs dense (whole, flat), the worst block, the verdict."""
    h, w = r.lr_size
    flat = "n/a" if r.flat_psnr_db is None else f"{r.flat_psnr_db:.2f} dB ({r.flat_fraction:.2f} of px)"
    levels = "" if r.tiled_vs_untiled_max_levels is None else \
        f"tiled vs untiled max {r.tiled_vs_untiled_max_levels} level(s); "
    fails = r.failures(t)
    return (f"{r.name} {w}×{h} tile {r.tile}: {levels}vs dense {r.psnr_db:.2f} dB, flat {flat}; worst block "
            f"{_block_text(r)} {'PASSED' if not fails else 'FAILED: ' + '; '.join(fails)}")


def _block_text(r: ImageFidelity) -> str:
    if not r.worst_blocks:
        return "none (identical)"
    b = r.worst_blocks[0]
    return f"({b.y},{b.x}) {b.psnr_db:.2f} dB"


def fidelity_report(rows: Sequence[ImageFidelity], t: FidelityThresholds) -> dict[str, Any]:
    """The JSON report: overall verdict, thresholds, and per image its scores, verdict and failures."""
    images = [{**r.to_json(), "passed": not r.failures(t), "failures": r.failures(t)} for r in rows]
    return {"passed": all(i["passed"] for i in images), "thresholds": asdict(t), "images": images}


def compare_with_dense(name: str, image: np.ndarray, output: np.ndarray, dense_model: Callable[..., torch.Tensor],
                       tile: int, min_size: int = 1) -> tuple[ImageFidelity, np.ndarray]:
    """Score an upscaled ``output`` (as ``amsr-upscale`` wrote it) against the dense model run on the same
    ``image`` (H×W[×C], uint8 or uint16; alpha ignored; gray compared as gray), on 8 bits; with its contact
    sheet (``contact_sheet`` of the worst blocks)."""
    unit = image.astype(np.float32) / np.float32(65535.0 if image.dtype == np.uint16 else 255.0)
    gray = unit.ndim == 2 or unit.shape[2] == 1
    rgb = np.repeat(unit.reshape(*unit.shape[:2], 1), 3, axis=2) if gray else unit[..., :3]
    dense_f = np.clip(dense_reference(dense_model, np.ascontiguousarray(rgb.transpose(2, 0, 1)[None]), min_size)[0],
                      0.0, 1.0).transpose(1, 2, 0)
    if gray:
        dense_f = dense_f.mean(axis=2)  # as Upscaler returns a gray image
    dense = np.rint(dense_f * 255.0).astype(np.uint8)
    acc = as_u8(output)
    if acc.ndim == 3 and gray:
        acc = acc[..., 0]
    elif acc.ndim == 3:
        acc = acc[..., :3]
    r = score_image(name, acc, dense, None, dense.shape[0] // image.shape[0], tile)
    return r, contact_sheet(dense, acc, r.worst_blocks)


def as_u8(img: np.ndarray) -> np.ndarray:
    """uint8 as is; uint16 to the nearest 8-bit level."""
    return img if img.dtype == np.uint8 else np.rint(img.astype(np.float64) / 257.0).astype(np.uint8)
