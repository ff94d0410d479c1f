"""The one tile loop: an image run in overlapping tiles whose context margins are cropped from the output.

Used by ``OrtUpscaler.tiles`` / ``upscale_tiled`` (production, also borrowed by ``TrtUpscaler``) and by the
dense reference of ``runtime.fidelity``. A tile runs with ``overlap`` px of real neighbouring context on every
inner side; the output equals the whole-image run once ``overlap`` ≥ the network's receptive radius (CARN-M
x4: 21 LR px) and every whole-image decision (the masks) is taken on the whole image, not per tile.

``iter_tiles`` yields each tile's output without its context (``Tile``) as soon as it is computed, so a caller
can convert it and write it into its final array (``Upscaler`` writes uint8 straight away: a float32 HR image
is 4 bytes per HR px and channel, 2.3 GB for a 4000×3000 LR photo at x4); ``run_tiled`` assembles them into
one float array.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

#: ``run(rows, cols)`` upscales the LR region ``x[:, :, rows, cols]`` (N×C'×s·h×s·w).
TileRun = Callable[[slice, slice], np.ndarray]


@dataclass(frozen=True)
class Tile:
    """One tile's output without its context: ``sr`` (N×C'×s·h×s·w, a view) covers the LR ``rows``×``cols``."""

    rows: slice
    cols: slice
    scale: int
    sr: np.ndarray

    @classmethod
    def whole(cls, sr: np.ndarray, size: tuple[int, int]) -> Tile:
        """The one tile of an image of LR ``size`` (H, W) run whole."""
        return cls(slice(0, size[0]), slice(0, size[1]), upscale_factor(sr, *size), sr)

    @property
    def hr(self) -> tuple[slice, slice]:
        """The HR rows and columns ``sr`` covers."""
        s = self.scale
        return slice(self.rows.start * s, self.rows.stop * s), slice(self.cols.start * s, self.cols.stop * s)


def tile_bounds(size: int, tile: int) -> list[tuple[int, int]]:
    """Split ``[0, size)`` into ``ceil(size / tile)`` contiguous spans of near-equal length (each ≤ ``tile``)."""
    n = max(1, math.ceil(size / tile))
    cuts = [round(i * size / n) for i in range(n + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(n)]


def context(a: int, b: int, size: int, overlap: int, min_size: int = 1) -> tuple[int, int]:
    """``[a, b)`` widened by ``overlap`` on each side within ``[0, size)``, and to at least ``min_size``."""
    lo, hi = max(0, a - overlap), min(size, b + overlap)
    short = min_size - (hi - lo)
    if short > 0:  # a thin border tile: borrow more context so the model accepts it
        lo = max(0, lo - short)
        hi = min(size, lo + min_size)
    return lo, hi


def upscale_factor(sr: np.ndarray, h: int, w: int) -> int:
    """The integer factor that maps an ``h``×``w`` LR region to ``sr`` (…×s·h×s·w); RuntimeError otherwise."""
    s = sr.shape[-1] // w
    if s < 1 or sr.shape[-2] != s * h or sr.shape[-1] != s * w:
        raise RuntimeError(f"output {sr.shape} is not an integer upscale of a {h}×{w} tile")
    return s


def iter_tiles(run: TileRun, size: tuple[int, int], tile: int, overlap: int, min_size: int = 1) -> Iterator[Tile]:
    """``run`` over an LR image of ``size`` (H, W) in tiles of at most ``tile`` px with ``overlap`` px of
    context, row by row; each ``Tile`` holds the output of its own LR span only."""
    h, w = size
    for y0, y1 in tile_bounds(h, tile):
        for x0, x1 in tile_bounds(w, tile):
            ty0, ty1 = context(y0, y1, h, overlap, min_size)
            tx0, tx1 = context(x0, x1, w, overlap, min_size)
            sr = run(slice(ty0, ty1), slice(tx0, tx1))
            s = upscale_factor(sr, ty1 - ty0, tx1 - tx0)
            core = sr[:, :, (y0 - ty0) * s:(y1 - ty0) * s, (x0 - tx0) * s:(x1 - tx0) * s]
            yield Tile(slice(y0, y1), slice(x0, x1), s, core)


def assemble(tiles: Iterable[Tile], size: tuple[int, int]) -> np.ndarray:
    """The N×C'×s·H×s·W array of ``tiles`` covering an LR image of ``size`` (dtype of the first tile)."""
    out: np.ndarray | None = None
    for t in tiles:
        if out is None and t.rows == slice(0, size[0]) and t.cols == slice(0, size[1]):
            return t.sr  # ``Tile.whole``: the image in one run, no copy
        if out is None:
            out = np.empty((*t.sr.shape[:2], size[0] * t.scale, size[1] * t.scale), dtype=t.sr.dtype)
        rows, cols = t.hr
        out[:, :, rows, cols] = t.sr
    assert out is not None
    return out


def run_tiled(run: TileRun, size: tuple[int, int], tile: int, overlap: int, min_size: int = 1,
              on_tile: Callable[[], None] | None = None) -> np.ndarray:
    """``iter_tiles`` assembled into one array; ``on_tile`` is called after each tile (progress)."""
    def counted() -> Iterator[Tile]:
        for t in iter_tiles(run, size, tile, overlap, min_size):
            yield t
            if on_tile is not None:
                on_tile()

    return assemble(counted(), size)


def crop_runner(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> TileRun:
    """A ``TileRun`` that calls ``fn`` on the contiguous crop of ``x``."""
    return lambda rows, cols: fn(np.ascontiguousarray(x[:, :, rows, cols]))
