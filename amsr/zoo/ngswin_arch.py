"""NGswin (Choi, Lee & Yang, "N-Gram in Swin Transformers for Efficient Lightweight Image Super-Resolution",
CVPR 2023).

Re-implemented from the official repository rami0205/NGramSwin (``my_model/ngswin_model/*.py``) with the same
module names, so that the released ``NGswin_x*.pth`` files load strictly, and the same forward math.
Training-only parts (dropout, stochastic depth, weight init) are left out.

Network (shapes for the released configuration: C = 64, window ws = 8, N-gram n = 2, three encoder stages):

* normalise ``(x − mean) / std`` (per-scale constants, not in the file) → ``shallow_extract.conv1`` (3×3);
* ``encoder_layer1`` (6 NSTBs) at LR resolution, ``encoder_layer2`` (4) at 1/2, ``encoder_layer3`` (4) at 1/4;
  between stages a 2×2 ``PatchMerging``; the input of stage i > 0 is ``across_cascade_proj`` of the
  concatenation [max-pooled input of stage i−1, merged output of stage i−1] ("across-stage pooling cascade");
* ``bottleneck`` (SCDP): each stage output + LeakyReLU(max-pooled shallow features) is pixel-shuffled back to
  LR resolution, concatenated, depthwise 3×3 → GELU → Linear → LayerNorm;
* ``decoder_layer1`` (6 NSTBs) at LR resolution on bottleneck + stage-1 output → ``norm`` → + shallow
  features → ``to_target`` (3×3 conv → PixelShuffle → 3×3 conv) → de-normalise.

Inside a stage, block k+1 receives ``out_k + in_k`` (the official "within-stage residual"), and the stage
returns the last block's output alone (the patch merging sees ``out + in``).

The official ``NSTB`` also registers ``attn_mask`` (for the training patch) and every attention module a
``relative_position_index``; the released files were saved without them. Both are constants: here the
index is a non-persistent buffer and masks are computed on demand for any size (``strip_ngswin_buffers``
checks and drops them when a file does carry them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amsr.core.errors import CheckpointError
from amsr.zoo.descriptor import SizeRequirements
from amsr.zoo.padding import pad_input
from amsr.zoo.swinir_arch import (
    Mlp,
    relative_position_bias,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

# Normalisation constants of the official model (DIV2K statistics; std differs per scale).
IMG_MEAN = (0.4485, 0.4375, 0.4045)
IMG_STD: dict[int, tuple[float, float, float]] = {
    2: (0.2397, 0.2290, 0.2389),
    3: (0.2373, 0.2265, 0.2367),
    4: (0.2352, 0.2244, 0.2349),
}
# Swin V2 clamps the learned cosine-attention temperature at 1/0.01.
_LOGIT_SCALE_MAX = math.log(1.0 / 0.01)


class CosineWindowAttention(nn.Module):
    """Swin V2 scaled cosine attention inside square windows, with a learned relative position bias table.

    ``forward(x_windows, mask)``: ``x_windows`` is ``(B*nW, ws*ws, dim)``, ``mask`` ``None`` or the additive
    ``(nW, ws*ws, ws*ws)`` mask of shifted windows. Logits are ``cos(q, k)·exp(min(logit_scale, ln 100)) +
    bias``. ``head_dim`` may differ from ``dim / num_heads`` (the released model: 6 heads × 10 = 60 for dim 64).
    """

    relative_position_index: Tensor

    def __init__(self, dim: int, window_size: int, num_heads: int, head_dim: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.head_dim = head_dim
        inner = num_heads * head_dim
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # Not persistent: a constant of the window size (the released files do not carry it).
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim)

    def relative_position_bias(self) -> Tensor:
        """The ``(num_heads, ws², ws²)`` bias added to every window's logits."""
        return relative_position_bias(self.relative_position_bias_table, self.relative_position_index)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        bw, n, _ = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=_LOGIT_SCALE_MAX).exp()
        attn = attn + self.relative_position_bias().unsqueeze(0)
        if mask is not None:
            n_windows = mask.shape[0]
            attn = attn.reshape(bw // n_windows, n_windows, self.num_heads, n, n)
            attn = (attn + mask.to(attn.dtype)[None, :, None]).reshape(bw, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, -1))

    def extra_macs(self, inputs: tuple[Tensor, ...], output: Tensor) -> int:
        """Multiply-accumulates of q·kᵀ and attn·v of one call (``amsr.core.cost``; the Linears count themselves)."""
        bw, n, _ = inputs[0].shape
        return 2 * bw * n * n * self.num_heads * self.head_dim

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}, "
                f"head_dim={self.head_dim}")


def seq_reflect_index(length: int, ngram: int, forward: bool) -> Tensor:
    """Indices that extend an axis of ``length`` window tokens by ``ngram − 1`` (official ``seq_refl_win_pad``).

    Forward (bottom/right): ``[0 … L−1] + [L−n … L−2]``; backward (top/left): ``[1 … n−1] + [0 … L−1]``.
    For n = 2 both equal reflect padding by one. The official code fails when ``L < n``.
    """
    if length < ngram:
        raise ValueError(f"a feature map {length} windows wide is too small for {ngram}-gram context "
                         f"(needs ≥ {ngram} windows: pad the input more)")
    body = torch.arange(length)
    if forward:
        return torch.cat([body, torch.arange(length - ngram, length - 1)])
    return torch.cat([torch.arange(1, ngram), body])


class NGramContext(nn.Module):
    """One context vector per (unshifted) ws×ws window, from its N-gram neighbourhood of windows.

    ``forward(x)`` maps ``(B, H, W, C)`` to ``(B, H/ws, W/ws, C)``:

    1. ``unigram_embed``: ws×ws conv with stride ws, C → C/2, groups C/2 (each output channel sees 2 input
       channels of one window): one "unigram" token per window;
    2. forward context of window (i, j): cosine attention (``ngram_attn``, window n) among the n×n unigrams
       {i … i+n−1}×{j … j+n−1}, then the mean of its n² outputs; unigrams past the bottom/right edge come
       from ``seq_reflect_index``. Backward context: the same over {i−n+1 … i}×{j−n+1 … j};
    3. ``merge``: 1×1 conv of [forward, backward] (C channels).
    """

    def __init__(self, dim: int, window_size: int, ngram: int, num_heads: int) -> None:
        super().__init__()
        half = dim // 2
        self.window_size = window_size
        self.ngram = ngram
        self.unigram_embed = nn.Conv2d(dim, half, window_size, stride=window_size, groups=half)
        self.ngram_attn = CosineWindowAttention(half, ngram, num_heads, half // num_heads)
        self.merge = nn.Conv2d(dim, dim, 1)

    def _sliding_attention(self, unigram: Tensor, forward: bool) -> Tensor:
        b, c, h, w = unigram.shape
        n = self.ngram
        if n > 1:
            unigram = unigram.index_select(2, seq_reflect_index(h, n, forward).to(unigram.device))
            unigram = unigram.index_select(3, seq_reflect_index(w, n, forward).to(unigram.device))
        # (B, C, h, w, n, n): the n×n neighbourhood starting at each window, row-major inside.
        grams = unigram.unfold(2, n, 1).unfold(3, n, 1)
        grams = grams.permute(0, 2, 3, 4, 5, 1).reshape(b * h * w, n * n, c)
        context = self.ngram_attn(grams).mean(dim=1)
        return context.reshape(b, h, w, c).permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        unigram = self.unigram_embed(x.permute(0, 3, 1, 2))
        both = torch.cat([self._sliding_attention(unigram, True), self._sliding_attention(unigram, False)], dim=1)
        return self.merge(both).permute(0, 2, 3, 1)


class NGramWindowPartition(nn.Module):
    """Adds each unshifted window's N-gram context to its tokens, then (cyclic shift and) window partition.

    ``forward(x)``: ``(B, H, W, C)`` → windows ``(B*nW, ws*ws, C)`` ordered as ``window_partition``.
    """

    def __init__(self, dim: int, window_size: int, ngram: int, num_heads: int, shift_size: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.ngram_context = NGramContext(dim, window_size, ngram, num_heads)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        ws, s = self.window_size, self.shift_size
        context = self.ngram_context(x)
        # The context is injected before the shift: a shifted window mixes up to four context vectors.
        y = x.reshape(b, h // ws, ws, w // ws, ws, c) + context[:, :, None, :, None, :]
        y = y.reshape(b, h, w, c)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        return window_partition(y, ws).reshape(-1, ws * ws, c)


class NSTB(nn.Module):
    """N-gram Swin Transformer Block: (shifted) window cosine attention with N-gram context, post-norm.

    Windows: non-overlapping ws×ws (released: 8×8) windows of this block's feature map, which is at
    ``feature_stride`` × coarser than the padded LR input (1 in ``encoder_layer1`` and ``decoder_layer1``,
    2 in ``encoder_layer2``, 4 in ``encoder_layer3``; the stride-1 maps are the LR pixels themselves).
    Odd blocks of a stage (index 1, 3, 5) shift by ``shift_size`` = ws // 2: ``roll(−s)`` before the
    partition and ``roll(+s)`` after, with the SwinIR additive mask (−100) between regions
    (``shifted_window_mask``); even blocks use the plain grid.

    N-gram context: before the shift, every token of unshifted window (i, j) gets ``c[i, j]`` added, where
    ``c`` comes from ``ngram_window_partition.ngram_context`` (see ``NGramContext``); for n = 2, ``c[i, j]``
    depends on the unshifted windows (i−1 … i+1)×(j−1 … j+1). So a (shifted) window's attention reads its own
    ws² tokens plus that window-level context; nothing else crosses windows.

    Interface for window-level sparse execution:

    * ``block.ngram_window_partition(x_map)``: ``(B, H, W, C)`` → context-injected, shifted windows
      ``(B*nW, ws*ws, C)`` (batch-major, then row-major over windows);
    * ``block.attn(windows, mask)`` (``CosineWindowAttention``), ``mask`` from ``block.shifted_window_mask``;
    * ``block.norm1``, ``block.ffn`` (fc1 → GELU → fc2), ``block.norm2``;
    * ``block(x, (H, W))`` on tokens ``(B, H*W, C)``: ``x = x + norm1(roll(+s)(window_reverse(attn(...))))``,
      then ``x = x + norm2(ffn(x))``. The norms act on the branch outputs (Swin V2 res-post-norm), so a
      zero attention output adds ``norm1.bias``, not nothing.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, window_size: int, shift_size: int, ngram: int,
                 mlp_hidden: int, qkv_bias: bool = True, feature_stride: int = 1) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, window_size {window_size})")
        self.dim = dim
        self.window_size = window_size
        self.shift_size = shift_size
        self.feature_stride = feature_stride
        self.ngram_window_partition = NGramWindowPartition(dim, window_size, ngram, num_heads, shift_size)
        self.attn = CosineWindowAttention(dim, window_size, num_heads, head_dim, qkv_bias)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = Mlp(dim, mlp_hidden)
        self.norm2 = nn.LayerNorm(dim)

    def shifted_window_mask(self, h: int, w: int, device: torch.device | str | None = None) -> Tensor | None:
        """Mask for an ``h×w`` map (``None`` for unshifted blocks); cached per size and device."""
        return shifted_window_mask(h, w, self.window_size, self.shift_size, device)

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        h, w = x_size
        b, _, c = x.shape
        ws, s = self.window_size, self.shift_size
        windows = self.ngram_window_partition(x.reshape(b, h, w, c))
        windows = self.attn(windows, self.shifted_window_mask(h, w, x.device))
        y = window_reverse(windows.reshape(-1, ws, ws, c), ws, h, w)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + self.norm1(y.reshape(b, h * w, c))
        return x + self.norm2(self.ffn(x))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, window_size={self.window_size}, shift_size={self.shift_size}, "
                f"feature_stride={self.feature_stride}")


class PatchMerging(nn.Module):
    """2×2 token merge: concat [(0,0), (0,1), (1,0), (1,1)] offsets (official order) → LayerNorm → Linear."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        h, w = x_size
        b, _, c = x.shape
        x = x.reshape(b, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c))), (h // 2, w // 2)


@dataclass(frozen=True)
class StageConfig:
    """One encoder or decoder stage: NSTB count, heads, channels per head, N-gram size, FFN width."""

    depth: int
    num_heads: int
    head_dim: int
    ngram: int = 2
    mlp_hidden: int = 128


def _blocks(dim: int, stage: StageConfig, window_size: int, qkv_bias: bool, stride: int) -> nn.ModuleList:
    return nn.ModuleList(
        NSTB(dim, stage.num_heads, stage.head_dim, window_size, window_size // 2 if i % 2 else 0, stage.ngram,
             stage.mlp_hidden, qkv_bias, stride)
        for i in range(stage.depth))


def _run_blocks(blocks: nn.ModuleList, x: Tensor, x_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Official within-stage residual: block k+1 gets out_k + in_k. Returns (last output, last input)."""
    previous_in: Tensor | int = 0
    for block in blocks:
        block_in = x + previous_in
        x = block(block_in, x_size)
        previous_in = block_in
    assert isinstance(previous_in, Tensor), "a stage has at least one block"
    return x, previous_in


class EncoderLayer(nn.Module):
    """One encoder stage at ``feature_stride``: cascade projection → NSTBs → optional patch merging."""

    def __init__(self, dim: int, num_cascade: int, stage: StageConfig, window_size: int, qkv_bias: bool,
                 feature_stride: int, downsample: bool) -> None:
        super().__init__()
        self.across_cascade_proj: nn.Module = nn.Linear(num_cascade * dim, dim) if num_cascade > 1 else nn.Identity()
        self.blocks = _blocks(dim, stage, window_size, qkv_bias, feature_stride)
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> tuple[Tensor, Tensor | None, tuple[int, int]]:
        """Returns (last block output, merged ``out + in`` or ``None``, size after merging)."""
        out, last_in = _run_blocks(self.blocks, self.across_cascade_proj(x), x_size)
        if self.downsample is None:
            return out, None, x_size
        merged, size = self.downsample(out + last_in, x_size)
        return out, merged, size


class DecoderLayer(nn.Module):
    """The decoder stage: NSTBs at LR resolution."""

    def __init__(self, dim: int, stage: StageConfig, window_size: int, qkv_bias: bool) -> None:
        super().__init__()
        self.blocks = _blocks(dim, stage, window_size, qkv_bias, 1)

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        return _run_blocks(self.blocks, x, x_size)[0]


class SCDPBottleneck(nn.Module):
    """pixel-Shuffle, Concatenate, Depthwise conv, Pointwise projection of the encoder outputs."""

    def __init__(self, dim: int, num_stages: int) -> None:
        super().__init__()
        channels = sum(dim // 4 ** i for i in range(num_stages))
        self.depthwise = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels)
        self.act = nn.GELU()
        self.pointwise = nn.Linear(channels, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, shallow: Tensor, outputs: list[Tensor]) -> Tensor:
        """``shallow``: ``(B, C, H, W)``; ``outputs[i]``: tokens of stage i at ``(H/2^i, W/2^i)``."""
        b, c, h, w = shallow.shape
        pooled = shallow
        parts = []
        for i, out in enumerate(outputs):
            if i:
                pooled = F.max_pool2d(pooled, 2)
            # Official BottleneckPool: LeakyReLU(0.01) of the i-times max-pooled shallow features.
            feat = out.transpose(1, 2).reshape(b, c, h >> i, w >> i) + F.leaky_relu(pooled)
            parts.append(F.pixel_shuffle(feat, 2 ** i))
        x = self.act(self.depthwise(torch.cat(parts, dim=1)))
        return self.norm(self.pointwise(x.flatten(2).transpose(1, 2)))


class ShallowExtractor(nn.Module):
    """First 3×3 conv (own module so that the official key ``shallow_extract.conv1`` holds)."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, dim, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1(x)


class Reconstruction(nn.Sequential):
    """3×3 conv to ``out·scale²`` → PixelShuffle → 3×3 conv at HR (official ``light_x*`` head)."""

    def __init__(self, scale: int, dim: int, out_chans: int) -> None:
        super().__init__()
        self.add_module("before_shuffle", nn.Conv2d(dim, out_chans * scale * scale, 3, 1, 1))
        self.add_module("shuffler", nn.PixelShuffle(scale))
        self.add_module("to_origin", nn.Conv2d(out_chans, out_chans, 3, 1, 1))


_RELEASED_ENCODER = (StageConfig(6, 6, 10), StageConfig(4, 4, 16), StageConfig(4, 4, 16))


@dataclass(frozen=True)
class NGswinConfig:
    """Hyper-parameters of one NGswin; defaults are the released model's (embed/decoder dim 64, window 8)."""

    scale: int
    in_chans: int = 3
    embed_dim: int = 64
    window_size: int = 8
    encoder: tuple[StageConfig, ...] = _RELEASED_ENCODER
    decoder: StageConfig = StageConfig(6, 6, 10)
    qkv_bias: bool = True

    def size_requirements(self) -> SizeRequirements:
        """Every stage's map must tile into windows, and hold ≥ n windows per axis for its N-gram padding."""
        multiple = self.window_size * 2 ** (len(self.encoder) - 1)
        minimum = max([s.ngram * self.window_size * 2 ** i for i, s in enumerate(self.encoder)]
                      + [self.decoder.ngram * self.window_size, multiple])
        return SizeRequirements(multiple_of=multiple, minimum=minimum, pad_mode="reflect")


class NGswin(nn.Module):
    """NGswin for lightweight SR. ``forward`` accepts any H×W: it pads as ``size_requirements()`` says
    (reflect; the official evaluation pads 'symmetric' beforehand) and crops the output."""

    mean: Tensor
    std: Tensor

    def __init__(self, config: NGswinConfig) -> None:
        super().__init__()
        cfg = config
        if cfg.in_chans != 3 or cfg.scale not in IMG_STD:
            raise ValueError(f"NGswin is defined for RGB input at x2/x3/x4 (normalisation constants), "
                             f"not {cfg.in_chans} channels at x{cfg.scale}")
        if cfg.window_size % 2 or cfg.embed_dim % (2 * 4 ** (len(cfg.encoder) - 1)):
            raise ValueError(f"window size {cfg.window_size} must be even and embed_dim {cfg.embed_dim} divisible "
                             f"by 2·4^(stages−1)")
        self.config = cfg
        self.scale = cfg.scale
        self.size = cfg.size_requirements()
        self.register_buffer("mean", torch.tensor(IMG_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMG_STD[cfg.scale]).reshape(1, 3, 1, 1), persistent=False)

        dim, n_stages = cfg.embed_dim, len(cfg.encoder)
        self.shallow_extract = ShallowExtractor(cfg.in_chans, dim)
        for i, stage in enumerate(cfg.encoder):
            self.add_module(f"encoder_layer{i + 1}",
                            EncoderLayer(dim, i + 1, stage, cfg.window_size, cfg.qkv_bias, 2 ** i, i + 1 < n_stages))
        self.bottleneck = SCDPBottleneck(dim, n_stages)
        self.decoder_layer1 = DecoderLayer(dim, cfg.decoder, cfg.window_size, cfg.qkv_bias)
        self.norm = nn.LayerNorm(dim)
        self.to_target = Reconstruction(cfg.scale, dim, cfg.in_chans)

    def encoder_layers(self) -> list[EncoderLayer]:
        layers = [getattr(self, f"encoder_layer{i + 1}") for i in range(len(self.config.encoder))]
        assert all(isinstance(m, EncoderLayer) for m in layers)
        return layers

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = pad_input(x, self.size)
        hp, wp = x.shape[-2:]
        shallow = self.shallow_extract((x - self.mean) / self.std)
        tokens = shallow.flatten(2).transpose(1, 2)

        # Across-stage pooling cascade: stage i+1 reads [max-pooled input of stage i, merged output of stage i].
        cascade, size, outputs = tokens, (hp, wp), []
        for layer in self.encoder_layers():
            out, merged, next_size = layer(cascade, size)
            outputs.append(out)
            if merged is not None:
                pooled = F.max_pool2d(cascade.transpose(1, 2).reshape(x.shape[0], -1, *size), 2)
                cascade = torch.cat([pooled.flatten(2).transpose(1, 2), merged], dim=-1)
                size = next_size

        y = self.bottleneck(shallow, outputs)
        y = self.norm(self.decoder_layer1(y + outputs[0], (hp, wp))) + tokens
        y = self.to_target(y.transpose(1, 2).reshape(x.shape[0], -1, hp, wp))
        return (y * self.std + self.mean)[..., : h * self.scale, : w * self.scale]


def strip_ngswin_buffers(sd: dict[str, Tensor], model: NGswin, source: str) -> dict[str, Tensor]:
    """Check ``relative_position_index`` / ``attn_mask`` buffers that a full official ``state_dict()`` would
    hold against ``model`` and return ``sd`` without them (the released files carry neither).

    Raises:
        CheckpointError: a buffer disagrees with its block's window size / shift.
    Keys whose module does not exist in ``model`` are kept, so that strict loading reports them.
    """
    modules = dict(model.named_modules())
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        owner = modules.get(key.rpartition(".")[0])
        if key.endswith(".relative_position_index") and isinstance(owner, CosineWindowAttention):
            expected = owner.relative_position_index
            if tuple(value.shape) != tuple(expected.shape) or not torch.equal(value.long().cpu(), expected.cpu()):
                raise CheckpointError(f"{source}: {key} {tuple(value.shape)} is not the relative position index "
                                      f"of a {owner.window_size}×{owner.window_size} window")
            continue
        if key.endswith(".attn_mask") and isinstance(owner, NSTB):
            _check_attn_mask(key, value, owner, source)
            continue
        out[key] = value
    return out


def _check_attn_mask(key: str, value: Tensor, block: NSTB, source: str) -> None:
    n = block.window_size ** 2
    if block.shift_size == 0:
        raise CheckpointError(f"{source}: {key} present but this block is not shifted (architecture mismatch)")
    if value.dim() != 3 or tuple(value.shape[1:]) != (n, n):
        raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, expected (nW, {n}, {n})")
    side = math.isqrt(value.shape[0])
    if side * side == value.shape[0]:  # masks of square training patches: compare the content too
        expected = block.shifted_window_mask(side * block.window_size, side * block.window_size)
        assert expected is not None
        if not torch.equal(value.float().cpu(), expected.cpu()):
            raise CheckpointError(f"{source}: {key} is not the shifted-window mask of a "
                                  f"{side * block.window_size}² map (window {block.window_size}, "
                                  f"shift {block.shift_size})")
