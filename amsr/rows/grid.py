"""Row layout: the active pixels of a feature map as the rows of one P×C matrix, with 3×3 neighbour tables.

A masked CNN computes a pixel's output from its 3×3 neighbourhood. Kept as NCHW maps, every sparse stage
moves the whole map between layouts (the pixel path's Transpose was 88 % of its stage time, results/README.md §5).
Here the pixels that matter are gathered once into rows (P×C, one row per pixel, in ``nonzero`` order) and
stay rows through the network: a 3×3 conv is one Gather of the 9 neighbour rows (a P×9 index table, the
rows of absent neighbours pointing at an appended zero row, as zero padding would) and one MatMul; a 1×1
conv, an activation, a residual add or a channel concat is a row op. Work follows the row count.

Grids at several resolutions (the tail after each pixel shuffle): the rows of a fine grid read a coarse
grid's rows through the shuffle's channel order, ``row · r² + sub-pixel``, so no full map is ever built.
All index arithmetic is int64 and traceable (``torch.onnx.export``: NonZero, Gather, ScatterND).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F

# The 3×3 taps in row-major order: (dy, dx) of tap t.
_TAP_DY = (-1, -1, -1, 0, 0, 0, 1, 1, 1)
_TAP_DX = (-1, 0, 1, -1, 0, 1, -1, 0, 1)


def pixels_of(mask: torch.Tensor) -> torch.Tensor:
    """(n, y, x) of the pixels where ``mask`` (N×1×H×W, 0/1) is 1, row-major: P×3 int64."""
    return torch.nonzero(mask[:, 0] > 0.5)


@dataclass
class Grid:
    """A set of pixels at one resolution held as rows: ``pixels`` P×3 (n, y, x) and the lookup from a
    position of the 1-px padded map to its row (``index``: flat (N·(H+2)·(W+2)), P where the pixel is absent,
    i.e. the appended zero row)."""

    pixels: torch.Tensor
    index: torch.Tensor
    height: int | torch.Tensor
    width: int | torch.Tensor


def grid_of(pixels: torch.Tensor, batch: int | torch.Tensor, height: int | torch.Tensor,
            width: int | torch.Tensor) -> Grid:
    """The ``Grid`` of ``pixels`` (P×3, distinct) on an N×H×W map."""
    hp, wp = height + 2, width + 2
    p = pixels.shape[0]
    size = cast(int, batch * hp * wp)  # a traced scalar under export
    index = torch.full((size,), 0, dtype=torch.int64, device=pixels.device) + p
    flat = (pixels[:, 0] * hp + pixels[:, 1] + 1) * wp + pixels[:, 2] + 1
    index = index.index_put((flat,), torch.arange(p, device=pixels.device))
    return Grid(pixels, index, height, width)


def taps(out: torch.Tensor, source: Grid, factor: int = 1) -> torch.Tensor:
    """P×9 rows of ``source`` read by a 3×3 conv at the pixels ``out`` (P×3 on a grid ``factor``× finer).

    ``factor`` = 1: the neighbours' rows in ``source`` (its zero row, P_source, outside it). ``factor`` = r:
    ``source`` holds the features *before* a pixel shuffle by r (rows of C·r² channels); the fine neighbour
    (Y, X) is sub-pixel ((Y mod r)·r + X mod r) of coarse pixel (Y div r, X div r), i.e. row
    ``coarse_row · r² + sub`` of the source features viewed as (P_source·r²)×C, and the zero row of the source
    maps to ``P_source·r² + sub``, which must be zero too (``carn.RowTailConv`` appends r² zero rows).
    """
    hp, wp = source.height + 2, source.width + 2
    dy = torch.tensor(_TAP_DY, device=out.device)
    dx = torch.tensor(_TAP_DX, device=out.device)
    # Shift by r so that the coarse coordinate of the 1-px padded map is (Y + dy + r) div r (non-negative).
    yy = out[:, 1:2] + dy + factor
    xx = out[:, 2:3] + dx + factor
    flat = (out[:, 0:1] * hp + torch.div(yy, factor, rounding_mode="floor")) * wp + torch.div(
        xx, factor, rounding_mode="floor")
    rows = torch.index_select(source.index, 0, flat.reshape(-1)).reshape(flat.shape)
    if factor == 1:
        return rows
    return rows * (factor * factor) + torch.remainder(yy, factor) * factor + torch.remainder(xx, factor)


def _block_positions(block: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(row a, column b) of the block² fine pixels of a block, in the order a·block + b."""
    return (torch.arange(block, device=device).repeat_interleave(block),
            torch.arange(block, device=device).repeat(block))


def _block_tables(block: int, factor: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For fine pixel (a, b) of a ``block``×``block`` block and tap t: the coarse-row and coarse-column offset
    (1-px padded source grid, ``factor``× coarser) and the sub-pixel, each (block², 9). Constants."""
    a, b = _block_positions(block, torch.device("cpu"))
    yy, xx = a[:, None] + torch.tensor(_TAP_DY) + factor, b[:, None] + torch.tensor(_TAP_DX) + factor
    return yy // factor, xx // factor, (yy % factor) * factor + xx % factor


def block_taps(coarse: torch.Tensor, source: Grid, block: int, factor: int) -> torch.Tensor:
    """``taps`` of every fine pixel of the ``block``×``block`` blocks at ``coarse`` (P×3 on a grid ``block``×
    coarser than the fine one): (P, block², 9), fine pixel (a, b) of a block at a·block + b.

    The same rows as ``taps(fine pixels, source, factor)``, but the index arithmetic runs once per block: with
    fine Y = block·y + a, (Y + dy) div factor = (block/factor)·y + (a + dy) div factor, so a tap is the block's
    base position plus a constant offset, and its sub-pixel is a constant. For the exit conv of CARN-M x4 on a
    Photos2K image (~1 M HR pixels × 9 taps) the per-pixel div/mod/cast/add took ~13 % of the row graph."""
    if block % factor:
        raise ValueError(f"block {block} is not a multiple of the source factor {factor}")
    m = block // factor
    hp, wp = source.height + 2, source.width + 2
    oy, ox, sub = _block_tables(block, factor)
    base = (coarse[:, 0] * hp + coarse[:, 1] * m) * wp + coarse[:, 2] * m
    flat = base[:, None, None] + (oy.to(coarse.device) * wp + ox.to(coarse.device))
    rows = torch.index_select(source.index, 0, flat.reshape(-1)).reshape(flat.shape)
    return rows if factor == 1 else rows * (factor * factor) + sub.to(coarse.device)


def block_pixels_flat(coarse: torch.Tensor, block: int, height: int | torch.Tensor,
                      width: int | torch.Tensor) -> torch.Tensor:
    """Flat positions (P·block²) on the N×(block·H)×(block·W) map of the fine pixels of the blocks at
    ``coarse`` (P×3 on N×H×W), in ``block_taps`` order."""
    fw = width * block
    base = (coarse[:, 0] * (height * block) + coarse[:, 1] * block) * fw + coarse[:, 2] * block
    a, b = _block_positions(block, coarse.device)
    return (base[:, None] + a * fw + b).reshape(-1)


def with_zero_row(features: torch.Tensor, count: int = 1) -> torch.Tensor:
    """``features`` (P×C, or group-major g×P×C/g) with ``count`` zero rows appended: what ``taps`` points
    absent neighbours at."""
    zeros = features.new_zeros(*features.shape[:-2], count, features.shape[-1])
    return torch.cat([features, zeros], dim=-2)


def group_major(rows: torch.Tensor, groups: int) -> torch.Tensor:
    """Rows P×C as g×P×(C/g): each group's channels contiguous per row, the layout ``grouped_conv3x3_rows``
    reads and writes."""
    if groups == 1:
        return rows.unsqueeze(0)
    p, c = rows.shape
    return rows.reshape(p, groups, c // groups).permute(1, 0, 2)


def pixel_major(grouped: torch.Tensor) -> torch.Tensor:
    """g×P×(C/g) back to rows P×C."""
    g, p, cg = grouped.shape
    if g == 1:
        return grouped[0]
    return grouped.permute(1, 0, 2).reshape(p, g * cg)


def grouped_conv3x3_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped conv's weight (O×I/g×3×3) as g×(9·I/g)×(O/g), tap-major per group: the batched MatMul
    of ``grouped_conv3x3_rows``."""
    o, ig = weight.shape[0], weight.shape[1]
    return weight.reshape(groups, o // groups, ig, 3, 3).permute(0, 3, 4, 2, 1).reshape(groups, 9 * ig, o // groups)


def grouped_conv3x3_rows(source: torch.Tensor, tap_rows: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None) -> torch.Tensor:
    """A grouped 3×3 conv at P pixels on group-major rows: ``source`` g×P_s×(I/g) (zero row(s) appended),
    ``tap_rows`` P×9, ``weight`` from ``grouped_conv3x3_weight``, ``bias`` g×1×(O/g); → g×P×(O/g).

    One Gather on the row axis and one batched MatMul with the grouped weight, no Transpose: a 64-channel
    group-4 conv at 80 000 rows (onnxruntime CPU, 2 threads) gathers in 80 ms and multiplies in 70 ms, where
    one MatMul with the block-diagonal 576×64 weight (4× the multiplies) took 156 ms after a 65 ms gather
    (``scripts/bench_row_conv.py``). Group-major stays group-major, so two convs in a row share the layout."""
    g = source.shape[0]
    patches = torch.index_select(source, 1, tap_rows.reshape(-1)).reshape(g, tap_rows.shape[0], -1)
    y = torch.matmul(patches, weight)
    return y if bias is None else y + bias


def conv3x3_weight(weight: torch.Tensor) -> torch.Tensor:
    """A 3×3 conv's dense weight (O×I×3×3) as O×(9·I), tap-major: the rows of ``F.linear`` over gathered
    tap rows (P×9×I flattened)."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


def conv3x3_rows(source: torch.Tensor, tap_rows: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> torch.Tensor:
    """The conv at P pixels: ``source`` rows with zero row(s) appended, ``tap_rows`` P×9, ``weight`` from
    ``conv3x3_weight``. One Gather, one Gemm."""
    patches = torch.index_select(source, 0, tap_rows.reshape(-1)).reshape(tap_rows.shape[0], -1)
    return F.linear(patches, weight, bias)


def conv1x1_rows(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1×1 conv (weight O×I×1×1) on rows P×I."""
    return F.linear(features, weight[:, :, 0, 0], bias)


def padded_pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` zero-padded by 1 px as (N·(H+2)·(W+2))×C rows: the source of a 3×3 conv read straight from an
    NCHW input (``full_taps``)."""
    c = x.shape[1]
    return F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1).reshape(-1, c)


def full_taps(out: torch.Tensor, height: int | torch.Tensor, width: int | torch.Tensor) -> torch.Tensor:
    """P×9 rows of ``padded_pixel_rows`` read by a 3×3 conv at the pixels ``out`` of an H×W input."""
    hp, wp = height + 2, width + 2
    dy = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2], device=out.device)
    dx = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2], device=out.device)
    return (out[:, 0:1] * hp + out[:, 1:2] + dy) * wp + out[:, 2:3] + dx
