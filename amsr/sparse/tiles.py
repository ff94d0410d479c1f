"""Tile-level execution of masked 3×3 convs (SBNet-style): gather active T×T tiles with a 1-px halo, run the
original dense ``nn.Conv2d`` on that batch (padding 0), scatter the T×T results back.

Semantics (exact, tested): with ``tile_mask(mask, T)`` = "tile contains at least one masked-in pixel",
upsampled back to pixels (``tile_upsampled_mask``), a ``TileMaskedConv2d`` computes exactly
``MaskedConv2d`` under the tile-upsampled mask:

    y = conv(x)  on every pixel of an active tile     (⊇ the pixel mask, so quality ≥ the pixel path)
    y = x        elsewhere (identity)

Grid: tiles start at (0, 0); H and W are zero-padded at the bottom/right to a multiple of T (the padded
pixels are computed but cropped, so they never reach the output; the conv's own zero padding is the 1-px
halo taken from the zero-padded map). Work ∝ (active tiles) × T²: a tile counts in full in
``effective_macs`` (its padded pixels included), which is what the hardware does.

All index arithmetic is written with ops that the dynamo ONNX exporter maps to standard ONNX (NonZero, Gather on
a flat NHWC view, a batched Conv, ScatterND with unique indices, via ``index_copy``), with no data-dependent
Python branches, so the same forward serves eager PyTorch and ONNX export with H×W dynamic. The tile indices
are computed once per mask and shared by every tile layer (``TileIndices``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from amsr.core.module_swap import swap_modules
from amsr.sparse.pixel import MaskContext, MaskedConv2d, MaskIndexCache
from amsr.core.tracing import is_tracing

DEFAULT_TILE = 16


def tile_mask(mask: torch.Tensor, tile: int) -> torch.Tensor:
    """N×1×Ht×Wt float (0/1): a tile is active when any pixel of it is masked in (grid from (0, 0), ceil)."""
    h, w = mask.shape[-2:]
    ph, pw = (tile - h % tile) % tile, (tile - w % tile) % tile
    m = F.pad((mask > 0.5).to(mask.dtype), (0, pw, 0, ph))
    return F.max_pool2d(m, tile, tile)


def tile_upsampled_mask(mask: torch.Tensor, tile: int) -> torch.Tensor:
    """The pixel mask a tile layer effectively uses: every pixel of an active tile is 1 (N×1×H×W)."""
    h, w = mask.shape[-2:]
    tm = tile_mask(mask, tile)
    up = tm.repeat_interleave(tile, dim=2).repeat_interleave(tile, dim=3)
    return up[..., :h, :w]


def active_tile_fraction(mask: torch.Tensor, tile: int) -> float:
    """Active tiles / all tiles (the fraction of tile work done relative to the padded dense map)."""
    return float(tile_mask(mask, tile).mean())


class TileIndices:
    """Tile coordinates of the active tiles of one mask, shared by every tile layer reading that mask.

    ``of(mask, tile)`` → K×3 int64 rows (n, ti, tj) in row-major order; kept under ``MaskIndexCache``'s rule
    (same mask tensor, unmodified, same tile size).
    """

    def __init__(self) -> None:
        self._cache = MaskIndexCache()

    def of(self, mask: torch.Tensor, tile: int) -> torch.Tensor:
        return self._cache.get(mask, tile, lambda m: torch.nonzero(tile_mask(m, tile)[:, 0] > 0.5))


def tile_conv(x: torch.Tensor, tiles: torch.Tensor, conv: nn.Conv2d, tile: int) -> torch.Tensor:
    """``conv`` (3×3, padding 1) on the active tiles ``tiles`` (K×3 rows (n, ti, tj)), identity elsewhere.

    Gather: one Gather of (T+2)² NHWC rows per tile from the zero-padded map → K×C×(T+2)×(T+2) → ``conv``
    with padding 0 → K×C×T×T → one index_copy (ScatterND) of the K·T² rows into the same padded NHWC map,
    cropped back (one Pad and one NHWC Transpose of the full map per stage; a first version padded twice).
    """
    n, c, h, w = x.shape
    t = tile
    ph = (t - h % t) % t
    pw = (t - w % t) % t
    hp, wp = h + ph, w + pw
    k = tiles.shape[0]
    ni, ti, tj = tiles[:, 0], tiles[:, 1], tiles[:, 2]
    dev = x.device
    # Gather the haloed tiles from the map padded by 1 (conv padding) plus the grid padding.
    xh = F.pad(x, (1, 1 + pw, 1, 1 + ph)).permute(0, 2, 3, 1).reshape(n * (hp + 2) * (wp + 2), c)
    ar = torch.arange(t + 2, device=dev)
    halo = (ar[:, None] * (wp + 2) + ar[None, :]).reshape(1, (t + 2) * (t + 2))
    base = ni * ((hp + 2) * (wp + 2)) + ti * (t * (wp + 2)) + tj * t
    rows = (base[:, None] + halo).reshape(k * (t + 2) * (t + 2))
    patches = xh.index_select(0, rows).reshape(k, t + 2, t + 2, c).permute(0, 3, 1, 2)
    y = F.conv2d(patches, conv.weight, conv.bias, stride=1, padding=0, groups=conv.groups)  # K×C×T×T
    # Scatter the T×T results into the same padded NHWC map (one Pad + one Transpose per stage), then crop.
    ai = torch.arange(1, t + 1, device=dev)
    inner = (ai[:, None] * (wp + 2) + ai[None, :]).reshape(1, t * t)
    orows = (base[:, None] + inner).reshape(k * t * t)
    out = xh.index_copy(0, orows, y.permute(0, 2, 3, 1).reshape(k * t * t, conv.out_channels))
    return out.reshape(n, hp + 2, wp + 2, c)[:, 1:h + 1, 1:w + 1].permute(0, 3, 1, 2)


class TileMaskedConv2d(nn.Module):
    """A pretrained 3×3 conv computed on the active T×T tiles of the mask only; identity elsewhere.

    Same contract as ``MaskedConv2d`` (holds the original conv as ``conv``, reads the model's ``MaskContext``)
    with the tile-upsampled mask; ``mode="dense"`` is the reference (``MaskedConv2d``'s dense path under the
    tile-upsampled mask).
    """

    def __init__(self, masked: MaskedConv2d, tile: int = DEFAULT_TILE, indices: TileIndices | None = None) -> None:
        super().__init__()
        if tile < 1:
            raise ValueError(f"tile must be ≥ 1, got {tile}")
        self.conv = masked.conv
        self.context: MaskContext = masked.context
        self.name = masked.name
        self.tile = int(tile)
        self.indices = indices if indices is not None else TileIndices()
        self.mode = "sparse"
        self.last_active = 0  # pixels computed in the last call (active tiles × T², padding included)
        self.last_total = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.context.mask_for(x, self.name)
        tiles = self.indices.of(mask, self.tile)
        if not is_tracing():
            self.last_total = x.shape[0] * x.shape[2] * x.shape[3]
            self.last_active = int(tiles.shape[0]) * self.tile * self.tile
        if self.mode == "dense":
            return torch.where(tile_upsampled_mask(mask, self.tile) > 0.5, self.conv(x), x)
        return tile_conv(x, tiles, self.conv, self.tile)

    def effective_macs(self) -> int:
        per_pixel = self.conv.out_channels * (self.conv.in_channels // self.conv.groups) * 9
        return self.last_active * per_pixel

    def extra_repr(self) -> str:
        return f"tile={self.tile}, mode={self.mode}"


def to_tiles(model: nn.Module, tile: int = DEFAULT_TILE, inplace: bool = False) -> nn.Module:
    """A copy of an accelerated model with every ``MaskedConv2d`` replaced by a ``TileMaskedConv2d``.

    Modules called several times (CARN-M) are replaced once, so sharing is kept; all tile layers share one
    ``TileIndices`` (one NonZero per forward in an exported graph).
    """
    model = model if inplace else copy.deepcopy(model)
    indices = TileIndices()
    model = swap_modules(model, lambda m: TileMaskedConv2d(m, tile, indices) if isinstance(m, MaskedConv2d) else None)
    if not any(isinstance(m, TileMaskedConv2d) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no MaskedConv2d to run in tiles")
    return model
