"""SwinIR (Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCVW 2021).

Re-implemented from the official repository JingyunLiang/SwinIR (``models/network_swinir.py``) with the same
module names, so that the official ``.pth`` files load strictly, and the same forward math. Training-only
parts (dropout, stochastic depth, gradient checkpointing, absolute position embedding) are left out: they
own no tensors in the released files and are identities at inference.

Interface used by window-level sparse execution (``SwinTransformerBlock``):

* ``block.norm1``, ``block.attn`` (``WindowAttention``), ``block.norm2``, ``block.mlp``;
* ``block.window_size: int`` (ws) and ``block.shift_size: int`` (0 or ws // 2);
* ``block.shifted_window_mask(h, w, device)``: the ``(nW, ws*ws, ws*ws)`` additive mask (0 / -100) of an
  ``h×w`` map (h, w multiples of ws), or ``None`` when ``shift_size == 0``;
* ``block.attn(x_windows, mask)`` with ``x_windows: (B*nW, ws*ws, C)`` and ``mask: (nW, ws*ws, ws*ws)``;
  windows are ordered as ``window_partition`` produces them (batch-major, then row-major over windows);
* ``block(x, (H, W))`` with tokens ``x: (B, H*W, C)`` in row-major order runs, in this order:
  ``norm1`` → view ``(B, H, W, C)`` → ``roll(-shift)`` → ``window_partition`` → ``attn`` →
  ``window_reverse`` → ``roll(+shift)`` → ``+ shortcut`` → ``x + mlp(norm2(x))``.

Buffers: the official files carry ``attn.relative_position_index`` (a constant function of the window size)
and, for shifted blocks, ``attn_mask`` (the mask for the training patch size). Neither holds learned state.
We rebuild ``relative_position_index`` as a non-persistent buffer and compute masks on demand for any size
(cached), so ``state_dict()`` holds learned tensors only. ``strip_swin_buffers`` checks the file's copies
against the rebuilt ones (a mismatch means a different architecture) and drops them before strict loading;
files saved without the buffers load the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amsr.core.errors import CheckpointError

# The additive value the official code puts between tokens of different shifted regions (not -inf, so
# that fp32 softmax of a fully masked row cannot produce NaN).
MASK_VALUE = -100.0


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """Split ``(B, H, W, C)`` into non-overlapping windows ``(B*nW, ws, ws, C)``, batch-major then row-major."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)


def window_reverse(windows: Tensor, window_size: int, h: int, w: int) -> Tensor:
    """Inverse of ``window_partition``: ``(B*nW, ws, ws, C)`` → ``(B, H, W, C)``."""
    n_windows = (h // window_size) * (w // window_size)
    b = windows.shape[0] // n_windows
    x = windows.reshape(b, h // window_size, w // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def relative_position_index(window_size: int) -> Tensor:
    """``(ws², ws²)`` int64 index into the ``(2ws−1)²``-row bias table, as the official buffer.

    Entry ``[i, j]`` encodes ``(row_i − row_j, col_i − col_j)`` shifted to be non-negative, row-major.
    """
    ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window_size - 1
    dx = xs[:, None] - xs[None, :] + window_size - 1
    return dy * (2 * window_size - 1) + dx


def _region_ids(size: int, window_size: int, shift_size: int) -> Tensor:
    # After the cyclic shift, the last window along an axis mixes pixels from two sides of the image:
    # label [0, size-ws) as 0, [size-ws, size-shift) as 1 and [size-shift, size) as 2 (official slices).
    ids = torch.zeros(size)
    ids[size - window_size: size - shift_size] = 1
    ids[size - shift_size:] = 2
    return ids


@lru_cache(maxsize=64)
def _shift_mask_cached(h: int, w: int, window_size: int, shift_size: int, device: torch.device) -> Tensor:
    labels = _region_ids(h, window_size, shift_size)[:, None] * 3 + _region_ids(w, window_size, shift_size)[None, :]
    windows = window_partition(labels[None, :, :, None], window_size).reshape(-1, window_size * window_size)
    different = windows[:, None, :] != windows[:, :, None]
    mask = torch.zeros(different.shape).masked_fill(different, MASK_VALUE)
    return mask.to(device)


def shifted_window_mask(h: int, w: int, window_size: int, shift_size: int,
                        device: torch.device | str | None = None) -> Tensor | None:
    """Attention mask of shifted-window attention on an ``h×w`` map, or ``None`` when ``shift_size == 0``.

    Returns ``(nW, ws², ws²)`` float32 with 0 where two tokens of a window came from the same region of the
    un-shifted map and ``MASK_VALUE`` elsewhere; equal to the official ``calculate_mask((h, w))``. The tensor
    is cached and shared: do not modify it in place.
    """
    if shift_size == 0:
        return None
    if h % window_size or w % window_size:
        raise ValueError(f"feature map {h}×{w} is not a multiple of the window size {window_size}")
    return _shift_mask_cached(h, w, window_size, shift_size, torch.device(device if device is not None else "cpu"))


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Reflect-pad ``N×C×H×W`` at the bottom/right to a multiple of ``multiple`` (official ``check_image_size``).

    Falls back to replicate when the image is too small to reflect (the official code would fail there).
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class Mlp(nn.Module):
    """Token-wise feed-forward network: Linear → GELU → Linear."""

    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def relative_position_bias(table: Tensor, index: Tensor) -> Tensor:
    """Look up a ``((2ws−1)², heads)`` bias table with a ``(ws², ws²)`` index: ``(heads, ws², ws²)``."""
    n = index.shape[0]
    return table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside square windows, with a learned relative position bias.

    ``forward(x_windows, mask)``: ``x_windows`` is ``(B*nW, ws*ws, C)``; ``mask`` is ``None`` or the additive
    ``(nW, ws*ws, ws*ws)`` mask of shifted windows, where window ``k`` of every image uses ``mask[k]``.
    """

    relative_position_index: Tensor

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # Not persistent: a constant of the window size, rebuilt here (see the module docstring).
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def relative_position_bias(self) -> Tensor:
        """The ``(num_heads, ws², ws²)`` bias added to every window's attention logits."""
        return relative_position_bias(self.relative_position_bias_table, self.relative_position_index)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1) + self.relative_position_bias().unsqueeze(0)
        if mask is not None:
            n_windows = mask.shape[0]
            attn = attn.reshape(bw // n_windows, n_windows, self.num_heads, n, n)
            attn = (attn + mask.to(attn.dtype)[None, :, None]).reshape(bw, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))

    def extra_macs(self, inputs: tuple[Tensor, ...], output: Tensor) -> int:
        """Multiply-accumulates of the two attention matmuls (q·kᵀ and attn·v) of one call, for MAC counting.

        The ``qkv`` and ``proj`` layers are ``nn.Linear`` children and are counted on their own.
        """
        bw, n, c = inputs[0].shape
        return 2 * bw * n * n * c

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention + MLP, both pre-norm and residual; see the module docstring for the
    interface that sparse execution relies on."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, window_size {window_size})")
        self.dim = dim
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def shifted_window_mask(self, h: int, w: int, device: torch.device | str | None = None) -> Tensor | None:
        """Mask for an ``h×w`` map (``None`` for unshifted blocks); cached per size and device."""
        return shifted_window_mask(h, w, self.window_size, self.shift_size, device)

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        h, w = x_size
        b, _, c = x.shape
        ws, s = self.window_size, self.shift_size
        y = self.norm1(x).reshape(b, h, w, c)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(y, ws).reshape(-1, ws * ws, c)
        windows = self.attn(windows, self.shifted_window_mask(h, w, x.device))
        y = window_reverse(windows.reshape(-1, ws, ws, c), ws, h, w)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, shift_size={self.shift_size}"


class BasicLayer(nn.Module):
    """``depth`` Swin blocks; odd blocks shift by ws // 2 unless ``shift`` is False (official rule when the
    training patch is no larger than a window)."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 qkv_bias: bool = True, shift: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, num_heads, window_size,
                                 window_size // 2 if shift and i % 2 == 1 else 0, mlp_ratio, qkv_bias)
            for i in range(depth))

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        for block in self.blocks:
            x = block(x, x_size)
        return x


class PatchEmbed(nn.Module):
    """``(B, C, H, W)`` → tokens ``(B, H*W, C)`` (patch size 1), optionally LayerNorm-ed."""

    def __init__(self, embed_dim: int, norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


class PatchUnEmbed(nn.Module):
    """Tokens ``(B, H*W, C)`` → ``(B, C, H, W)``."""

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        b, _, c = x.shape
        return x.transpose(1, 2).reshape(b, c, x_size[0], x_size[1])


def _resi_conv(dim: int, kind: str) -> nn.Module:
    # '3conv' is the official parameter-saving variant (large real-world model).
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if kind == "3conv":
        return nn.Sequential(nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2),
                             nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(0.2),
                             nn.Conv2d(dim // 4, dim, 3, 1, 1))
    raise ValueError(f"unknown resi_connection {kind!r} (expected '1conv', '3conv' or 'none')")


class RSTB(nn.Module):
    """Residual Swin Transformer Block: ``x + embed(conv(unembed(residual_group(x))))`` on tokens.

    ``resi_connection="none"`` drops the conv (IMDTN's variant of the block: ``x + residual_group(x)``).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 qkv_bias: bool = True, resi_connection: str = "1conv", shift: bool = True) -> None:
        super().__init__()
        self.residual_group = BasicLayer(dim, depth, num_heads, window_size, mlp_ratio, qkv_bias, shift)
        self.conv = None if resi_connection == "none" else _resi_conv(dim, resi_connection)
        self.patch_embed = PatchEmbed(dim, norm=False)
        self.patch_unembed = PatchUnEmbed()

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        y = self.residual_group(x, x_size)
        if self.conv is not None:
            y = self.patch_embed(self.conv(self.patch_unembed(y, x_size)))
        return y + x


class Upsample(nn.Sequential):
    """Classical-SR upsampler: (conv → PixelShuffle(2)) × log2(scale), or one conv → PixelShuffle(3)."""

    def __init__(self, scale: int, num_feat: int) -> None:
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"scale {scale} is not supported by the pixelshuffle upsampler (2^n and 3 are)")
        super().__init__(*layers)


class UpsampleOneStep(nn.Sequential):
    """Lightweight-SR upsampler: one conv to ``scale²·out_ch`` channels → PixelShuffle(scale)."""

    def __init__(self, scale: int, num_feat: int, num_out_ch: int) -> None:
        super().__init__(nn.Conv2d(num_feat, scale * scale * num_out_ch, 3, 1, 1), nn.PixelShuffle(scale))


UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect", "nearest+conv")


@dataclass(frozen=True)
class SwinIRConfig:
    """Hyper-parameters of one SwinIR (the official constructor's, minus training-only ones).

    ``img_size`` is the training patch size; it only matters through the official rule that a patch no
    larger than a window turns the window into the whole patch and disables shifting.
    """

    upscale: int
    in_chans: int = 3
    img_size: int = 64
    embed_dim: int = 96
    depths: tuple[int, ...] = (6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6)
    window_size: int = 8
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    patch_norm: bool = True
    img_range: float = 1.0
    upsampler: str = "pixelshuffle"
    resi_connection: str = "1conv"
    num_feat: int = 64


RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean the official model subtracts for 3-channel input


class SwinIR(nn.Module):
    """SwinIR for super-resolution (``pixelshuffle`` classical, ``pixelshuffledirect`` lightweight,
    ``nearest+conv`` real-world). ``forward`` takes any H×W: it reflect-pads to a multiple of the window size
    and crops the output, as the official ``check_image_size``."""

    mean: Tensor

    def __init__(self, config: SwinIRConfig) -> None:
        super().__init__()
        cfg = config
        if cfg.upsampler not in UPSAMPLERS:
            raise ValueError(f"unknown upsampler {cfg.upsampler!r} (expected one of {UPSAMPLERS})")
        if len(cfg.depths) != len(cfg.num_heads):
            raise ValueError("depths and num_heads must have the same length")
        self.config = cfg
        self.upscale = cfg.upscale
        self.img_range = cfg.img_range
        # Official rule: a training patch no larger than a window becomes one window, unshifted.
        self.window_size = min(cfg.window_size, cfg.img_size)
        shift = cfg.img_size > cfg.window_size
        mean = torch.tensor(RGB_MEAN) if cfg.in_chans == 3 else torch.zeros(1)
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1), persistent=False)

        dim = cfg.embed_dim
        self.conv_first = nn.Conv2d(cfg.in_chans, dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(dim, norm=cfg.patch_norm)
        self.patch_unembed = PatchUnEmbed()
        self.layers = nn.ModuleList(
            RSTB(dim, depth, heads, self.window_size, cfg.mlp_ratio, cfg.qkv_bias, cfg.resi_connection, shift)
            for depth, heads in zip(cfg.depths, cfg.num_heads))
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = _resi_conv(dim, cfg.resi_connection)

        nf = cfg.num_feat
        if cfg.upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, nf, 3, 1, 1), nn.LeakyReLU())
            self.upsample: nn.Sequential = Upsample(cfg.upscale, nf)  # or UpsampleOneStep below
            self.conv_last = nn.Conv2d(nf, cfg.in_chans, 3, 1, 1)
        elif cfg.upsampler == "pixelshuffledirect":
            self.upsample = UpsampleOneStep(cfg.upscale, dim, cfg.in_chans)
        else:
            if cfg.upscale not in (2, 4):
                raise ValueError(f"the nearest+conv upsampler supports x2 and x4, not x{cfg.upscale}")
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, nf, 3, 1, 1), nn.LeakyReLU())
            self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
            if cfg.upscale == 4:
                self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_last = nn.Conv2d(nf, cfg.in_chans, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(0.2)

    def forward_features(self, x: Tensor) -> Tensor:
        """Deep features: RSTBs on tokens, final LayerNorm, back to ``(B, C, H, W)``."""
        x_size = (x.shape[2], x.shape[3])
        t = self.patch_embed(x)
        for layer in self.layers:
            t = layer(t, x_size)
        return self.patch_unembed(self.norm(t), x_size)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.window_size)
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        feat = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(feat)) + feat
        upsampler = self.config.upsampler
        if upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        elif upsampler == "pixelshuffledirect":
            x = self.upsample(x)
        else:
            x = self.conv_before_upsample(x)
            x = self.lrelu(self.conv_up1(F.interpolate(x, scale_factor=2, mode="nearest")))
            if self.upscale == 4:
                x = self.lrelu(self.conv_up2(F.interpolate(x, scale_factor=2, mode="nearest")))
            x = self.conv_last(self.lrelu(self.conv_hr(x)))
        x = x / self.img_range + mean
        return x[..., : h * self.upscale, : w * self.upscale]


def strip_swin_buffers(sd: dict[str, Tensor], model: nn.Module, source: str) -> dict[str, Tensor]:
    """Check the official ``relative_position_index`` / ``attn_mask`` buffers in ``sd`` against ``model``
    and return ``sd`` without them (they are rebuilt by the modules).

    Raises:
        CheckpointError: a buffer disagrees with the window size / shift of the block it belongs to.
    Keys whose block does not exist in ``model`` are kept, so that strict loading reports them.
    """
    modules = dict(model.named_modules())
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key.endswith(".attn.relative_position_index"):
            attn = modules.get(key[: -len(".relative_position_index")])
            if isinstance(attn, WindowAttention):
                expected = attn.relative_position_index
                if tuple(value.shape) != tuple(expected.shape) or not torch.equal(value.long().cpu(), expected.cpu()):
                    raise CheckpointError(f"{source}: {key} {tuple(value.shape)} is not the relative position "
                                          f"index of a {attn.window_size}×{attn.window_size} window")
                continue
        elif key.endswith(".attn_mask"):
            block = modules.get(key[: -len(".attn_mask")])
            if isinstance(block, SwinTransformerBlock):
                _check_attn_mask(key, value, block, source)
                continue
        out[key] = value
    return out


def _check_attn_mask(key: str, value: Tensor, block: SwinTransformerBlock, source: str) -> None:
    n = block.window_size * block.window_size
    if block.shift_size == 0:
        raise CheckpointError(f"{source}: {key} present but this block is not shifted (architecture mismatch)")
    if value.dim() != 3 or tuple(value.shape[1:]) != (n, n):
        raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, expected (nW, {n}, {n}) "
                              f"for window size {block.window_size}")
    side = math.isqrt(value.shape[0])
    if side * side == value.shape[0]:  # official masks are for square training patches: compare content
        size = side * block.window_size
        expected = block.shifted_window_mask(size, size)
        assert expected is not None
        if not torch.equal(value.float().cpu(), expected.cpu()):
            raise CheckpointError(f"{source}: {key} is not the shifted-window mask of a {size}×{size} map "
                                  f"(window {block.window_size}, shift {block.shift_size})")
