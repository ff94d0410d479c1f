"""HiT-SRF (Zhang et al., "HiT-SR: Hierarchical Transformer for Efficient Image Super-Resolution", ECCV 2024),
written against the key layout of the official XiangZ-0/HiT-SR ``basicsr/archs/hit_srf_arch.py`` (the NTIRE 2025
ESR ``team54_HITSR`` model is the same file).

Skeleton: SwinIR-light. ``conv_first`` → ``patch_embed.norm`` → residual groups ``layers.N`` (hierarchical
transformer blocks ``residual_group.blocks.M`` + a 3×3 ``conv``, group residual) → ``norm`` → ``conv_after_body``
(+ shallow features) → upsampler. Input is [0, 1] RGB; the DIV2K mean is subtracted inside (``img_range`` 1).

What differs from SwinIR (and matters to anyone touching the blocks):

* Every block is *post*-norm on its branches: ``x + norm1(SCC(x))`` then ``x + norm2(ConvFFN(x))``.
* Attention is "spatial-channel correlation" (SCC): no softmax, no shift, no attention mask. Half of the
  channels correlate spatially (query tokens against ``base``-cell summaries of the values, with a dynamic
  relative-position bias), the other half correlate channel-to-channel over the whole window.
* Window sizes grow block by block inside a group (``base × (0.5, 1, 2, 4, 6, 8)`` = 4…64 for base 8). Each block
  reflect-pads the feature map at the bottom/right to a multiple of its own window size, so the network
  itself accepts any H×W; only SCC sees the padding (everything is cropped back before ``proj``).
* Q/V come from a conv branch (``DFE``: 1×1 → 3×3 → 1×1 gated by a 1×1) and the FFN has a 5×5 depthwise
  conv, so neither branch is purely window-local: DFE sees a 1-pixel halo, the FFN a 2-pixel one.

The base window size and the per-block ratios have no parameters of their own; they are fixed here to the only
published values (base 8, ratios 0.5…8). The ``spatial_linear`` shapes (window area / base-cell area) depend on
them, so a checkpoint trained with other windows fails strict loading rather than running wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from amsr.core.errors import UnsupportedModelError

# DIV2K RGB mean on [0, 1]: a plain attribute in the official code, so never stored in checkpoints.
DIV2K_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)
BASE_WINDOW: tuple[int, int] = (8, 8)
WINDOW_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 6.0, 8.0)
UPSAMPLERS: tuple[str, ...] = ("pixelshuffledirect", "pixelshuffle")
_CLASSICAL_FEATS = 64  # conv_before_upsample width of the classical ("pixelshuffle") head


@dataclass(frozen=True)
class HiTSRFConfig:
    """Hyper-parameters of one HiT-SRF network (official defaults: the lightweight ×4 model)."""

    scale: int = 4
    in_chans: int = 3
    embed_dim: int = 60
    depths: tuple[int, ...] = (6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6)
    mlp_hidden: int = 120
    base_window: tuple[int, int] = BASE_WINDOW
    window_ratios: tuple[float, ...] = WINDOW_RATIOS
    upsampler: str = "pixelshuffledirect"
    patch_norm: bool = True

    def window_size(self, block: int) -> tuple[int, int]:
        """Window of block ``block`` (its index inside a residual group): ``base × ratio`` (truncated)."""
        r = self.window_ratios[block]
        return int(self.base_window[0] * r), int(self.base_window[1] * r)


# ----------------------------------------------------------------------------------------------- windows

def mirror_index(size: int, target: int, device: torch.device) -> torch.Tensor:
    """Indices ``0…target-1`` folded into ``0…size-1`` by repeated reflection (period ``2·(size-1)``).

    The official block pads by reflection in up to two passes (first by ``size-1``, then the rest); reflecting a
    reflection continues the same zig-zag, so this one gather gives the identical result for every size the
    official code accepts and keeps working (more passes) for the tiny sizes where it would fail.
    """
    i = torch.arange(target, device=device)
    if size == 1:
        return torch.zeros_like(i)  # nothing to reflect: repeat the single row/column
    period = 2 * (size - 1)
    i = i % period
    return torch.where(i < size, i, period - i)


def pad_to_windows(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """Reflect-pad ``x`` (B×H×W×C) at the bottom/right so that H and W are multiples of ``window``."""
    h, w = x.shape[1], x.shape[2]
    hp, wp = -(-h // window[0]) * window[0], -(-w // window[1]) * window[1]
    if hp == h and wp == w:
        return x
    if hp - h < h and wp - w < w:  # one reflection suffices: the cheap path
        return F.pad(x.permute(0, 3, 1, 2), (0, wp - w, 0, hp - h), mode="reflect").permute(0, 2, 3, 1)
    rows = mirror_index(h, hp, x.device)
    cols = mirror_index(w, wp, x.device)
    return x.index_select(1, rows).index_select(2, cols)


def window_partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """B×H×W×C (H, W multiples of ``window``) → (B·nH·nW)×(wh·ww)×C; windows in (batch, row, column) order,
    tokens row-major inside a window."""
    b, h, w, c = x.shape
    wh, ww = window
    x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def window_reverse(windows: torch.Tensor, window: tuple[int, int], h: int, w: int) -> torch.Tensor:
    """Inverse of ``window_partition``: (B·nH·nW)×(wh·ww)×C → B×H×W×C."""
    wh, ww = window
    c = windows.shape[-1]
    x = windows.view(-1, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


# ----------------------------------------------------------------------------------------------- modules

class DualFeatureExtraction(nn.Module):
    """Official ``DFE``: Q/V projection as ``conv(x) * linear(x)`` on the (padded) map; ``conv`` is a
    1×1 → 3×3 → 1×1 bottleneck (width dim // 5) with LeakyReLU(0.2), ``linear`` a 1×1 conv."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        mid = dim // 5
        self.conv = nn.Sequential(nn.Conv2d(dim, mid, 1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(mid, mid, 3, 1, 1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(mid, dim, 1))
        self.linear = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×H×W×C → B×H×W×C."""
        y = x.permute(0, 3, 1, 2)
        return (self.conv(y) * self.linear(y)).permute(0, 2, 3, 1)


class DynamicPosBias(nn.Module):
    """Relative-position bias generated by an MLP from (dy, dx) (CrossFormer style, non-residual form, the
    only one HiT-SRF instantiates): pos_proj → [LN, ReLU, Linear] ×3 → one value per head."""

    def __init__(self, pos_dim: int, num_heads: int) -> None:
        super().__init__()
        self.pos_proj = nn.Linear(2, pos_dim)
        self.pos1 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, pos_dim))
        self.pos2 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, pos_dim))
        self.pos3 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, num_heads))

    def forward(self, offsets: torch.Tensor) -> torch.Tensor:
        """N×2 float (dy, dx) → N×heads."""
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))


class SpatialChannelCorrelation(nn.Module):
    """Official ``SCC`` on windows of ``window_size``; maps B×H×W×C → B×H×W×C for any H, W.

    Steps (each a method, so window-level token selection can run them on a subset of windows):
    ``pad_to_windows`` → ``qv`` (DFE over the whole padded map) → ``window_partition`` → ``correlate`` (per
    window) → ``window_reverse`` → crop to H×W → ``proj`` (per token).

    Inside a window of L = wh·ww tokens the C channels of ``qv`` split into Q (first C/2) and V (last C/2),
    each into ``num_heads`` heads of ``hd = C/(2·heads)`` channels:

    * spatial half: V is summarised per base cell (``base_window`` = min(window, base) cells of
      ``sub = window / base_window`` tokens, mixed by ``spatial_linear`` into C); out = (Q·Cᵀ/hd + bias)·C with
      the relative-position bias averaged over each cell's tokens. No softmax.
    * channel half: single head, out = ((Qᵀ·V)/L · Vᵀ)ᵀ, a C/2 × C/2 correlation per window.
    """

    def __init__(self, dim: int, num_heads: int, window_size: tuple[int, int], base_window: tuple[int, int]) -> None:
        super().__init__()
        if dim % (2 * num_heads):
            raise UnsupportedModelError(f"HiT-SRF: embed_dim {dim} is not divisible by 2 × {num_heads} heads")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.base_window = (min(window_size[0], base_window[0]), min(window_size[1], base_window[1]))
        if window_size[0] % self.base_window[0] or window_size[1] % self.base_window[1]:
            raise UnsupportedModelError(f"HiT-SRF: window {window_size} is not a multiple of base {base_window}")
        self.sub = (window_size[0] // self.base_window[0], window_size[1] // self.base_window[1])
        self.qv = DualFeatureExtraction(dim)
        self.proj = nn.Linear(dim, dim)
        self.spatial_linear = nn.Linear(self.sub[0] * self.sub[1], 1)
        self.pos = DynamicPosBias(dim // 16, num_heads)  # official: DynamicPosBias(dim // 4) → pos_dim // 4

    def position_bias(self) -> torch.Tensor:
        """heads × L × (number of base cells): the official bias, computed without its L×L×heads gather.

        Official: bias[i, cell] = mean over the cell's sub-tokens j of table[pos(i) − pos(j)]. That mean is a
        ``sub``-sized box filter over the (2wh−1)×(2ww−1) table, read at offset ``y − a·sh + wh − sh``.
        """
        (wh, ww), (bh, bw), (sh, sw) = self.window_size, self.base_window, self.sub
        dev = self.spatial_linear.weight.device
        dy = torch.arange(1 - wh, wh, device=dev)
        dx = torch.arange(1 - ww, ww, device=dev)
        offsets = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2)
        table = self.pos(offsets.to(self.spatial_linear.weight.dtype))
        table = table.t().reshape(1, self.num_heads, 2 * wh - 1, 2 * ww - 1)
        pooled = F.avg_pool2d(table, (sh, sw), stride=1)[0]  # heads × (2wh−sh) × (2ww−sw)
        iy = torch.arange(wh, device=dev)[:, None] - torch.arange(bh, device=dev)[None, :] * sh + wh - sh
        ix = torch.arange(ww, device=dev)[:, None] - torch.arange(bw, device=dev)[None, :] * sw + ww - sw
        bias = pooled[:, iy[:, None, :, None], ix[None, :, None, :]]  # heads × wh × ww × bh × bw
        return bias.reshape(self.num_heads, wh * ww, bh * bw)

    def correlate(self, qv: torch.Tensor) -> torch.Tensor:
        """Windows of Q/V features, N×L×C → N×L×C (spatial half, then channel half)."""
        n, length, c = qv.shape
        half, heads = c // 2, self.num_heads
        hd = half // heads
        q = qv[..., :half].reshape(n, length, heads, hd).transpose(1, 2)  # N×heads×L×hd
        v = qv[..., half:].reshape(n, length, heads, hd).transpose(1, 2)
        spatial = self._spatial(q, v).transpose(1, 2).reshape(n, length, half)
        qc, vc = qv[..., :half], qv[..., half:]  # the channel half uses all heads as one
        channel = (qc.transpose(1, 2) @ vc) / length  # N×C/2×C/2
        channel = (channel @ vc.transpose(1, 2)).transpose(1, 2)
        return torch.cat([spatial, channel], dim=-1)

    def _spatial(self, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n, heads, length, hd = v.shape
        (bh, bw), (sh, sw) = self.base_window, self.sub
        # tokens are row-major in the window: row = a·sh + p, col = b·sw + q for cell (a, b)
        cells = v.reshape(n, heads, bh, sh, bw, sw, hd).permute(0, 1, 2, 4, 6, 3, 5)
        cells = self.spatial_linear(cells.reshape(n, heads, bh * bw, hd, sh * sw)).squeeze(-1)  # N×heads×cells×hd
        # Official: (Q·Cᵀ/hd + bias)·C, scaled by hd (not √hd) and without softmax. Being linear, it equals
        # Q·(Cᵀ·C)/hd + bias·C, which never forms the L×cells map per window (~30% faster on CPU).
        gram = cells.transpose(-2, -1) @ cells / hd
        shared = cells.permute(1, 2, 0, 3).reshape(heads, bh * bw, n * hd)  # the bias is the same for all windows
        biased = (self.position_bias() @ shared).view(heads, length, n, hd).permute(2, 0, 1, 3)
        return q @ gram + biased

    def correlate_macs(self) -> int:
        """Multiply-accumulates of ``correlate`` on one window, as implemented (``spatial_linear`` included).

        Spatial half (heads × hd = C/2 channels, ``cells`` base cells, L tokens): ``spatial_linear`` (C/2·L),
        Cᵀ·C per head (heads·hd²·cells), bias·C (C/2·L·cells), Q·(Cᵀ·C) (C/2·L·hd). Channel half: Qᵀ·V and the
        product with Vᵀ, (C/2)²·L each.
        """
        (wh, ww), (bh, bw) = self.window_size, self.base_window
        length, cells = wh * ww, bh * bw
        half = self.dim // 2
        hd = half // self.num_heads
        spatial = half * length + self.num_heads * hd * hd * cells + half * length * cells + half * length * hd
        return spatial + 2 * half * half * length

    def extra_macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        """The window matmuls of one call (``amsr.core.cost``; ``spatial_linear`` and the convs count themselves)."""
        b, h, w = inputs[0].shape[:3]
        (wh, ww) = self.window_size
        windows = b * -(-h // wh) * -(-w // ww)
        return windows * (self.correlate_macs() - self.dim // 2 * wh * ww)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1], x.shape[2]
        qv = self.qv(pad_to_windows(x, self.window_size))
        hp, wp = qv.shape[1], qv.shape[2]
        out = self.correlate(window_partition(qv, self.window_size))
        out = window_reverse(out, self.window_size, hp, wp)[:, :h, :w]
        return self.proj(out)


class DepthwiseConv(nn.Module):
    """5×5 depthwise conv + GELU on B×H×W×C tokens (official ``dwconv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise_conv = nn.Sequential(nn.Conv2d(channels, channels, 5, 1, 2, groups=channels), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.depthwise_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class ConvFFN(nn.Module):
    """fc1 → GELU → (+ depthwise 5×5 branch) → fc2 on B×H×W×C."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.dwconv = DepthwiseConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(x))
        return self.fc2(x + self.dwconv(x))


class HierarchicalTransformerBlock(nn.Module):
    """One HiT-SRF block on B×H×W×C features: ``x + norm1(correlation(x))``, then ``x + norm2(mlp(x))``.

    Windows (for window-level token selection): the block with index ``m`` inside its residual group uses
    ``window_size = base × ratio[m]`` = (4, 8, 16, 32, 48, 64)² for base 8, the same in every group. The map is
    reflect-padded at the bottom/right to the next multiple of ``window_size`` (``pad_to_windows``), then cut
    into non-overlapping tiles anchored at (0, 0): window (r, c) covers rows ``r·wh … r·wh+wh−1`` and columns
    ``c·ww … c·ww+ww−1`` of the padded map; border windows hold reflected rows/columns. There is NO shift
    (no cyclic roll, no attention mask), in any block. A mask is split the same way: pad it like the features
    (or ceil-divide H, W by the window) and pool per tile.

    Only ``correlation.correlate`` is window-local. ``correlation.qv`` has a 3×3 conv and ``mlp`` a 5×5
    depthwise conv, both over the whole map, and ``norm1``/``norm2`` are per token, so a window that "passes
    through" simply skips both residual increments (both branches are residual, so identity is exact).

    Attributes:
        norm1, correlation, norm2, mlp: the official sub-modules (names fixed by the checkpoint).
        window_size: (wh, ww) of this block's tiles.
        base_window: (bh, bw) base cells per window used by the spatial half (min(window, base)).
    """

    def __init__(self, dim: int, num_heads: int, window_size: tuple[int, int], base_window: tuple[int, int],
                 mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.correlation = SpatialChannelCorrelation(dim, num_heads, window_size, base_window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = ConvFFN(dim, mlp_hidden)
        self.window_size = window_size
        self.base_window = self.correlation.base_window

    def attention_branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual increment of the correlation half (post-norm)."""
        return self.norm1(self.correlation(x))

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual increment of the FFN half (post-norm)."""
        return self.norm2(self.mlp(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention_branch(x)
        return x + self.mlp_branch(x)


class HierarchicalLayer(nn.Module):
    """Official ``BasicLayer``: the blocks of one group, windows growing with the block index."""

    def __init__(self, cfg: HiTSRFConfig, depth: int, num_heads: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            HierarchicalTransformerBlock(cfg.embed_dim, num_heads, cfg.window_size(m), cfg.base_window, cfg.mlp_hidden)
            for m in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class ResidualHierarchicalGroup(nn.Module):
    """Official ``RHTB``: ``x + conv3×3(blocks(x))`` on B×H×W×C features."""

    def __init__(self, cfg: HiTSRFConfig, depth: int, num_heads: int) -> None:
        super().__init__()
        self.residual_group = HierarchicalLayer(cfg, depth, num_heads)
        self.conv = nn.Conv2d(cfg.embed_dim, cfg.embed_dim, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.residual_group(x).permute(0, 3, 1, 2)
        return x + self.conv(y).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """Holds only the optional LayerNorm applied to the shallow features (patch size 1: no projection)."""

    def __init__(self, dim: int, norm: bool) -> None:
        super().__init__()
        self.norm: nn.Module = nn.LayerNorm(dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class HiTSRF(nn.Module):
    """HiT-SRF: N×C×H×W in [0, 1] → N×C×sH×sW. Any H, W ≥ 1 works (each block pads to its own windows)."""

    mean: torch.Tensor

    def __init__(self, cfg: HiTSRFConfig) -> None:
        super().__init__()
        if len(cfg.depths) != len(cfg.num_heads):
            raise UnsupportedModelError("HiT-SRF: depths and num_heads differ in length")
        if max(cfg.depths) > len(cfg.window_ratios):
            raise UnsupportedModelError(f"HiT-SRF: at most {len(cfg.window_ratios)} blocks per group")
        if cfg.upsampler not in UPSAMPLERS:
            raise UnsupportedModelError(f"HiT-SRF: upsampler {cfg.upsampler!r} not supported ({', '.join(UPSAMPLERS)})")
        self.cfg = cfg
        self.scale = cfg.scale
        mean = DIV2K_MEAN if cfg.in_chans == 3 else (0.0,) * cfg.in_chans
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        dim = cfg.embed_dim
        self.conv_first = nn.Conv2d(cfg.in_chans, dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(dim, cfg.patch_norm)
        self.layers = nn.ModuleList(ResidualHierarchicalGroup(cfg, d, h)
                                    for d, h in zip(cfg.depths, cfg.num_heads, strict=True))
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, 1, 1)
        self.conv_before_upsample: nn.Module | None = None
        self.conv_last: nn.Module | None = None
        if cfg.upsampler == "pixelshuffledirect":  # lightweight head: one conv + PixelShuffle
            self.upsample = nn.Sequential(nn.Conv2d(dim, cfg.scale ** 2 * cfg.in_chans, 3, 1, 1),
                                          nn.PixelShuffle(cfg.scale))
        else:  # classical head: conv + LeakyReLU(0.01, nn default as in the official code), ×2 steps, conv
            feats = _CLASSICAL_FEATS
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, feats, 3, 1, 1), nn.LeakyReLU())
            self.upsample = _classical_upsample(cfg.scale, feats)
            self.conv_last = nn.Conv2d(feats, cfg.in_chans, 3, 1, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Deep features, N×C×H×W → N×C×H×W."""
        t = self.patch_embed(x.permute(0, 2, 3, 1))
        for layer in self.layers:
            t = layer(t)
        return self.norm(t).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - self.mean
        feat = self.conv_first(x)
        feat = self.conv_after_body(self.forward_features(feat)) + feat
        if self.conv_before_upsample is not None and self.conv_last is not None:
            out = self.conv_last(self.upsample(self.conv_before_upsample(feat)))
        else:
            out = self.upsample(feat)
        return out + self.mean


def _classical_upsample(scale: int, feats: int) -> nn.Sequential:
    """Official ``Upsample``: (conv → PixelShuffle(2)) per factor 2, or one conv → PixelShuffle(3)."""
    steps: list[nn.Module] = []
    if scale >= 2 and scale & (scale - 1) == 0:
        for _ in range(scale.bit_length() - 1):
            steps += [nn.Conv2d(feats, 4 * feats, 3, 1, 1), nn.PixelShuffle(2)]
    elif scale == 3:
        steps += [nn.Conv2d(feats, 9 * feats, 3, 1, 1), nn.PixelShuffle(3)]
    else:
        raise UnsupportedModelError(f"HiT-SRF's classical upsampler supports x2^n and x3, not x{scale}")
    return nn.Sequential(*steps)
