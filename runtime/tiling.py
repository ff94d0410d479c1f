"""The one tile loop: an image run in overlapping tiles whose context margins are cropped from the output.

Used by ``OrtUpscaler.upscale_tiled`` (production, also borrowed by ``TrtUpscaler``) and by the dense
reference of ``runtime.fidelity``. A tile runs with ``overlap`` px of real neighbouring context on every inner
side; the output equals the whole-image run once ``overlap`` ≥ the network's receptive radius (CARN-M x4: 21
LR px) and every whole-image decision (the masks) is taken on the whole image, not per tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

#: ``run(rows, cols)`` upscales the LR region ``x[:, :, rows, cols]`` (N×C'×s·h×s·w).
TileRun = Callable[[slice, slice], np.ndarray]


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


def run_tiled(run: TileRun, size: tuple[int, int], tile: int, overlap: int, min_size: int = 1,
              on_tile: Callable[[], None] | None = None) -> np.ndarray:
    """Assemble ``run`` over an LR image of ``size`` (H, W) in tiles of at most ``tile`` px with ``overlap`` px
    of context; ``on_tile`` is called after each tile (progress)."""
    h, w = size
    out: np.ndarray | None = None
    s = 0
    for y0, y1 in tile_bounds(h, tile):
        for x0, x1 in tile_bounds(w, tile):
            ty0, ty1 = context(y0, y1, h, overlap, min_size)
            tx0, tx1 = context(x0, x1, w, overlap, min_size)
            sr = run(slice(ty0, ty1), slice(tx0, tx1))
            if out is None:
                s = sr.shape[-1] // (tx1 - tx0)
                if sr.shape[-2] != s * (ty1 - ty0) or sr.shape[-1] != s * (tx1 - tx0):
                    raise RuntimeError(f"output {sr.shape} is not an integer upscale of a "
                                       f"{ty1 - ty0}×{tx1 - tx0} tile")
                out = np.empty((sr.shape[0], sr.shape[1], h * s, w * s), dtype=sr.dtype)
            out[:, :, y0 * s:y1 * s, x0 * s:x1 * s] = sr[:, :, (y0 - ty0) * s:(y1 - ty0) * s,
                                                          (x0 - tx0) * s:(x1 - tx0) * s]
            if on_tile is not None:
                on_tile()
    assert out is not None
    return out


def crop_runner(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> TileRun:
    """A ``TileRun`` that calls ``fn`` on the contiguous crop of ``x``."""
    return lambda rows, cols: fn(np.ascontiguousarray(x[:, :, rows, cols]))
