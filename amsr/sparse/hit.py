"""Window-level token selection for HiT-SRF blocks (``HierarchicalTransformerBlock``).

Windows: the block's own ``window_size`` tiles (4…64 for the published model), anchored at (0, 0) on the map
reflect-padded at the bottom/right to a multiple of the window (``pad_to_windows``), exactly the tiles the
block's spatial-channel correlation works on. HiT-SRF has no shifted windows. The mask (``MaskContext.mask_at``
at the block's H×W, N×1×H×W 0/1) is padded the same way (``pad_to_windows`` on the mask as N×H×W×1, so border
windows see the reflected mask rows/columns they compute on) and averaged per tile:

    selected(window) = mean(padded mask over the tile) ≥ threshold      (compared in float64, as in
                                                                         ``amsr.sparse.window.select_windows``)

so a threshold k/(wh·ww) is met by exactly k masked-in tile positions; 0 selects every window (the exact
block), above 1 none. ``keep`` (B×H×W) marks the tokens of selected windows (the tile grid cropped to H×W).

What a selected window means. Both branches of the block are residual, but neither is window-local:
``correlation.qv`` holds a 3×3 conv over the padded map and ``mlp`` a 5×5 depthwise conv over the H×W map.
The masked block is therefore *defined* as (this is the ``"dense"`` reference path):

    x1  = where(keep, x  + block.attention_branch(x),  x)
    out = where(keep, x1 + block.mlp_branch(x1),       x1)

i.e. a token of a selected window receives both residual increments (the MLP increment computed on x1, in
which only selected windows have been updated); a token of an unselected window passes through unchanged.
With every window selected this is the original block.

The ``"sparse"`` path (inference) computes the same values while doing the window work only on the selected
windows (K of them, gathered into one batch with index tensors; no loop over windows):

1. Attention half. The DFE's first 1×1 conv + LeakyReLU is evaluated once per pixel of the padded map that lies
   in a selected window or its 1-pixel ring (the union over windows, so neighbouring windows share it) and
   scattered into a zero map with a 1-pixel zero border: the zeros are the 3×3 conv's zero padding of that
   *intermediate* activation (LeakyReLU(conv1×1(0)) ≠ 0, so padding the input would be wrong). Per window:
   the (wh+2)×(ww+2) patch → 3×3 conv (padding 0) → LeakyReLU → 1×1, times the ``linear`` 1×1 of the window's
   own tokens = Q/V → ``correlation.correlate`` → for the tokens inside H×W only: ``proj`` → ``norm1`` → added
   to x and scattered into a copy of x (x1).
2. MLP half. ``fc1`` + GELU is evaluated once per pixel of H×W within 2 pixels of a ``keep`` token and
   scattered into a zero map with a 2-pixel border (again the zeros are the depthwise conv's zero padding of the
   hidden activation at the H×W border; the window part beyond H×W reads zeros too). Per window: the
   (wh+4)×(ww+4) hidden patch → 5×5 depthwise conv (padding 0) + GELU, plus the hidden value → for the tokens
   inside H×W: ``fc2`` → ``norm2`` → added to x1 and scattered. Zero selected windows return ``x`` itself.

Effective MACs (``effective_macs()``: what the last call computed; LayerNorm, activations, the element-wise
gate and the position-bias box filter are not counted, as in ``amsr.core.cost``):

* per computed window (L = wh·ww tokens, C channels, ``mid`` = C/5, ``hidden``): the DFE 3×3 conv (9·mid²·L),
  its last 1×1 (mid·C·L), ``linear`` (C²·L) and the ``correlate`` matmuls (``SpatialChannelCorrelation.correlate_macs``: spatial half
  ``spatial_linear`` + Cᵀ·C per head + bias·C + Q·(Cᵀ·C), channel half Qᵀ·V and (·)·Vᵀ);
* per computed window, sparse path: the depthwise 5×5 on its L tokens (hidden·25·L), or on the first H (W)
  rows (columns) only when the map is smaller than the window; border windows of a larger map also
  convolve their padded tokens, which are discarded;
* per token of a computed window inside H×W: ``proj`` (C²) and ``fc2`` (hidden·C); dense path: the depthwise
  5×5 on the H×W tokens;
* per front-end pixel actually evaluated: the DFE's first 1×1 (C·mid) and ``fc1`` (C·hidden), so the halo of
  a selected window costs only where no neighbouring selected window already needs the pixel;
* once per call that computes anything: the dynamic position-bias MLP (``position_bias_macs``).

The dense reference computes the whole block on the whole map and reports exactly that (what
``amsr.core.cost.run_counting_macs`` counts for the original block, plus the ``correlate`` matmuls that it cannot
see); the sparse path with every window selected reports the same number when each of H, W is a multiple of
the window or smaller than it (otherwise slightly more: the padded tokens of border windows in the
depthwise conv).
``window_macs()`` is the cost of one window whose tiles all lie inside the map, its front-end counted on the
tile only (no halo): dense cost of a map tiled exactly = windows × ``window_macs()`` + ``position_bias_macs()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amsr.core.errors import UnsupportedModelError
from amsr.sparse.pixel import ExecutionMode, MaskContext
from amsr.sparse.window import MaskedWindowLayer
from amsr.zoo.hit_srf_arch import (
    HierarchicalTransformerBlock,
    pad_to_windows,
)


def check_hit_block(block: nn.Module, name: str) -> HierarchicalTransformerBlock:
    """Return ``block`` if it is a HiT-SRF ``HierarchicalTransformerBlock``; raise otherwise."""
    if not isinstance(block, HierarchicalTransformerBlock):
        raise UnsupportedModelError(f"{name}: expected a HierarchicalTransformerBlock, found {type(block).__name__}")
    return block


def select_hit_windows(mask: Tensor, window: tuple[int, int], threshold: float) -> Tensor:
    """``(N, nH, nW)`` bool: tiles of the reflect-padded ``mask`` (N×1×H×W, 0/1) whose mean is ≥ ``threshold``."""
    n = mask.shape[0]
    wh, ww = window
    padded = pad_to_windows(mask.permute(0, 2, 3, 1), window)  # N×Hp×Wp×1, padded like the features
    hp, wp = padded.shape[1], padded.shape[2]
    tiles = padded.reshape(n, hp // wh, wh, wp // ww, ww).to(torch.float64)
    return tiles.mean(dim=(2, 4)) >= threshold


def _dilate(m: Tensor, radius: int) -> Tensor:
    """B×H×W bool → pixels within Chebyshev distance ``radius`` of a True pixel (inside H×W)."""
    return F.max_pool2d(m[:, None].to(torch.float32), 2 * radius + 1, 1, radius)[:, 0] > 0


def _patch_rows(b: Tensor, r0: Tensor, c0: Tensor, rows: int, cols: int, ph: int, pw: int) -> Tensor:
    """K×(ph·pw) int64: flat row indices (into a B×rows×cols map) of the ph×pw patches with top-left (r0, c0)."""
    dy = torch.arange(ph, device=b.device)
    dx = torch.arange(pw, device=b.device)
    offs = (dy[:, None] * cols + dx[None, :]).reshape(-1)
    return ((b * rows + r0) * cols + c0)[:, None] + offs[None, :]


def _front_end(values: Tensor, need: Tensor, fn: Callable[[Tensor], Tensor], channels: int,
               size: tuple[int, int], border: int) -> tuple[Tensor, int]:
    """Evaluate the per-pixel ``fn`` on the ``need`` pixels (B×h×w) of ``values`` (B·h·w × C rows) and scatter
    them into a zero map of B×(size[0]+2·border)×(size[1]+2·border) rows, offset by ``border`` (size ≥ h×w).
    The zeros stand for the following conv's zero padding of ``fn``'s output. Returns (map, pixels evaluated)."""
    b, h, w = need.shape
    bi, i, j = need.nonzero(as_tuple=True)
    out = fn(values.index_select(0, (bi * h + i) * w + j))
    rows, cols = size[0] + 2 * border, size[1] + 2 * border
    buf = values.new_zeros(b * rows * cols, channels)
    buf.index_copy_(0, (bi * rows + i + border) * cols + j + border, out)
    return buf, int(bi.numel())


def _positions(valid: Tensor) -> Tensor | None:
    """Flat positions of the True entries of ``valid``; None when all are True (nothing to select)."""
    return None if bool(valid.all()) else valid.reshape(-1).nonzero().squeeze(1)


def _take(t: Tensor, positions: Tensor | None) -> Tensor:
    """``t`` (…×C) as rows, restricted to ``positions`` (all rows when None)."""
    flat = t.reshape(-1, t.shape[-1])
    return flat if positions is None else flat.index_select(0, positions)


class MaskedHiTBlock(MaskedWindowLayer):
    """A pretrained HiT-SRF block computed only on the windows the mask selects; identity on the others.

    Holds the original block as ``block`` (same parameters, no copy) and has its forward signature:
    ``forward(x)`` with tokens ``x: (B, H, W, C)`` → ``(B, H, W, C)``. Semantics and cost: module docstring.

    Args:
        block: the ``HierarchicalTransformerBlock``.
        context: the model's mask (N×1×h×w, resized to H×W with nearest if it differs).
        threshold: a window is computed when its mean (padded) mask is ≥ this (≥ 0).
        mode: ``"sparse"`` (gather the selected windows) or ``"dense"`` (reference: whole block, then select).
        name: used in error messages.
    """

    def __init__(self, block: nn.Module, context: MaskContext, threshold: float = 0.5,
                 mode: ExecutionMode = "sparse", name: str = "block") -> None:
        super().__init__(context, threshold, mode)
        self.block = check_hit_block(block, name)
        # Work of the last call: computed windows, front-end pixels (DFE 1×1, fc1), tokens inside H×W of the
        # computed windows, and tokens the depthwise conv produced.
        self._work = (0, 0, 0, 0, 0)

    # ------------------------------------------------------------------------------------------- forward

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected tokens (B, H, W, C), got {tuple(x.shape)}")
        b, h, w, _ = x.shape
        mask = self.context.mask_at((h, w))
        if mask.shape[0] != b:
            raise ValueError(f"mask batch {mask.shape[0]} does not match the features' batch {b}")
        selected = select_hit_windows(mask, self.block.window_size, self.threshold)
        self.last_total = selected.numel()
        self.last_selected = int(selected.sum())
        if self.mode == "dense":
            self.last_computed = self.last_total
            return self.forward_dense(x, selected)
        self.last_computed = self.last_selected
        return self.forward_sparse(x, selected)

    def keep_tokens(self, selected: Tensor, size: tuple[int, int]) -> Tensor:
        """B×H×W bool: the tokens of the selected windows (``selected``: B×nH×nW)."""
        wh, ww = self.block.window_size
        grid = selected.repeat_interleave(wh, dim=1).repeat_interleave(ww, dim=2)
        return grid[:, : size[0], : size[1]]

    def forward_dense(self, x: Tensor, selected: Tensor) -> Tensor:
        """Reference path: both branches of the original block on the whole map, kept on selected windows."""
        b, h, w, _ = x.shape
        wh, ww = self.block.window_size
        hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
        self._work = (selected.numel(), b * hp * wp, b * h * w, b * h * w, b * h * w)
        keep = self.keep_tokens(selected, (h, w))[..., None]
        x1 = torch.where(keep, x + self.block.attention_branch(x), x)
        return torch.where(keep, x1 + self.block.mlp_branch(x1), x1)

    def forward_sparse(self, x: Tensor, selected: Tensor) -> Tensor:
        """Inference path: gather the selected windows (with their conv halos), compute, scatter."""
        b_idx, r_idx, c_idx = selected.nonzero(as_tuple=True)
        k = int(b_idx.numel())
        if k == 0:
            self._work = (0, 0, 0, 0, 0)
            return x
        blk = self.block
        corr, mlp = blk.correlation, blk.mlp
        # nn.Sequential yields plain Modules: name the layer types the HiT-SRF architecture puts there.
        conv0, act0, conv3, act3, conv1 = cast(
            "tuple[nn.Conv2d, nn.Module, nn.Conv2d, nn.Module, nn.Conv2d]", tuple(corr.qv.conv))
        linear = corr.qv.linear
        dw, dw_act = cast("tuple[nn.Conv2d, nn.Module]", tuple(mlp.dwconv.depthwise_conv))
        b, h, w, c = x.shape
        wh, ww = blk.window_size
        length = wh * ww
        mid, hidden = conv0.out_channels, mlp.fc1.out_features
        r0, c0 = r_idx * wh, c_idx * ww

        # Tokens of the windows that lie inside H×W (``inside``: their positions in the K·L window tokens, None
        # when all are) and their rows in the flat B·H·W×C tokens.
        ry = r0[:, None] + torch.arange(wh, device=x.device)  # K×wh
        cx = c0[:, None] + torch.arange(ww, device=x.device)  # K×ww
        valid = (ry < h)[:, :, None] & (cx < w)[:, None, :]  # K×wh×ww
        inside = _positions(valid)
        rows = _take(((b_idx[:, None, None] * h + ry[:, :, None]) * w + cx[:, None, :]).reshape(-1, 1), inside)[:, 0]
        x_flat = x.reshape(-1, c)

        # --- attention half, on the reflect-padded map
        xp = pad_to_windows(x, blk.window_size)
        hp, wp = xp.shape[1], xp.shape[2]
        xp_flat = xp.reshape(-1, c)
        keep_padded = selected.repeat_interleave(wh, dim=1).repeat_interleave(ww, dim=2)  # B×Hp×Wp
        w0 = conv0.weight.view(mid, c)
        buf, dfe_pixels = _front_end(xp_flat, _dilate(keep_padded, 1), lambda v: act0(F.linear(v, w0, conv0.bias)),
                                     mid, (hp, wp), 1)
        patch = buf.index_select(0, _patch_rows(b_idx, r0, c0, hp + 2, wp + 2, wh + 2, ww + 2).reshape(-1))
        # NHWC patches seen as NCHW (channels-last strides): the conv takes them without a copy.
        patch = patch.view(k, wh + 2, ww + 2, mid).permute(0, 3, 1, 2)
        g = act3(F.conv2d(patch, conv3.weight, conv3.bias))  # K×mid×wh×ww (the halo is the padding)
        g = F.linear(g.permute(0, 2, 3, 1).reshape(k, length, mid), conv1.weight.view(c, mid), conv1.bias)
        xw = xp_flat.index_select(0, _patch_rows(b_idx, r0, c0, hp, wp, wh, ww).reshape(-1)).view(k, length, c)
        qv = g * F.linear(xw, linear.weight.view(c, c), linear.bias)
        y = _take(corr.correlate(qv), inside)  # tokens inside H×W
        x1_flat = x_flat.index_copy(0, rows, _take(xw, inside) + blk.norm1(corr.proj(y)))

        # --- MLP half, on the H×W map (zero padding of the hidden activation at its border)
        keep = keep_padded[:, :h, :w]
        hbuf, mlp_pixels = _front_end(x1_flat, _dilate(keep, 2), lambda v: mlp.act(mlp.fc1(v)), hidden, (hp, wp), 2)
        # A map smaller than the window in a dimension has one window there, valid on its first h (w) tokens:
        # crop the patches to that extent (larger maps: border windows convolve their padded tokens too).
        mh, mw = min(wh, h), min(ww, w)
        hpatch = hbuf.index_select(0, _patch_rows(b_idx, r0, c0, hp + 4, wp + 4, mh + 4, mw + 4).reshape(-1))
        hpatch = hpatch.view(k, mh + 4, mw + 4, hidden).permute(0, 3, 1, 2)
        t = hpatch[:, :, 2:2 + mh, 2:2 + mw] + dw_act(F.conv2d(hpatch, dw.weight, dw.bias, groups=hidden))
        t = _take(t.permute(0, 2, 3, 1), _positions(valid[:, :mh, :mw]))  # same row-major order as ``rows``
        out = x1_flat.index_copy(0, rows, x1_flat.index_select(0, rows) + blk.norm2(mlp.fc2(t)))
        self._work = (k, dfe_pixels, mlp_pixels, int(rows.numel()), k * mh * mw)
        return out.view(b, h, w, c)

    # ------------------------------------------------------------------------------------------- cost

    def position_bias_macs(self) -> int:
        """MACs of the dynamic position-bias MLP, evaluated once per call on (2wh−1)·(2ww−1) offsets."""
        wh, ww = self.block.window_size
        per_offset = sum(m.in_features * m.out_features for m in self.block.correlation.pos.modules()
                         if isinstance(m, nn.Linear))
        return (2 * wh - 1) * (2 * ww - 1) * per_offset

    def _per_window(self) -> int:
        """The window-level part of one window: DFE 3×3 + last 1×1 + ``linear`` + ``correlate``."""
        corr = self.block.correlation
        wh, ww = self.block.window_size
        length, c = wh * ww, corr.dim
        mid = cast(nn.Conv2d, corr.qv.conv[0]).out_channels  # a Sequential item is a Module to mypy
        return length * (9 * mid * mid + mid * c + c * c) + corr.correlate_macs()

    def _per_pixel(self) -> tuple[int, int, int, int]:
        """(DFE first 1×1, fc1, proj + fc2, depthwise 5×5) MACs per pixel/token."""
        c = self.block.correlation.dim
        mid = cast(nn.Conv2d, self.block.correlation.qv.conv[0]).out_channels
        hidden = self.block.mlp.fc1.out_features
        return c * mid, c * hidden, c * c + hidden * c, 25 * hidden

    def window_macs(self) -> int:
        """MACs of the block on one window lying inside the map, front-end on its own tokens (no halo);
        ``position_bias_macs()`` (once per call) not included."""
        wh, ww = self.block.window_size
        return self._per_window() + wh * ww * sum(self._per_pixel())

    def effective_macs(self) -> int:
        """Multiply-accumulates of the last call (see the module docstring for what is counted)."""
        windows, dfe_pixels, mlp_pixels, tokens, dw_tokens = self._work
        if windows == 0:
            return 0
        dfe0, fc1, token_linear, depthwise = self._per_pixel()
        return (windows * self._per_window() + dfe_pixels * dfe0 + mlp_pixels * fc1 + tokens * token_linear
                + dw_tokens * depthwise + self.position_bias_macs())
