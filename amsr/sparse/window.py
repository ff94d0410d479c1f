"""Window-level token selection for Swin transformer blocks (the transformer part of AMSR).

A Swin block attends inside ws×ws windows, so the natural unit of sparse work is the window, not the pixel:

    selected(window) = mean(mask over the window's tokens) ≥ threshold
    out(tokens of a selected window)   = the whole block on them   (norm1 → attention → +, norm2 → MLP → +)
    out(tokens of an unselected window) = its input                 (identity)

The mask is taken at the block's feature size (``MaskContext.mask_at``) and rolled by −shift_size and split into
windows exactly like the features (one token-index table serves both), so a shifted block judges its own,
shifted windows.

Why the MLP follows the window: the MLP is per token and could use the pixel mask directly, but tying it to
the window keeps one decision per window for the whole block. The cost is then (selected windows) × (cost of
the block on one window), the sparse path is one gather → block → scatter, and the attention residual and the
MLP residual of a token never disagree (a token is either fully updated by the block or passed through).

Threshold: 0 selects every window (the exact dense block); 1 selects only fully masked-in windows; above 1,
none. The comparison is made in float64 on the per-window mean, so a threshold k/ws² is met by exactly k
masked-in tokens.

Two execution paths give the same values:
- ``"sparse"`` (inference): gather the tokens of the selected windows only (with the matching rows of the
  shifted-window attention mask), run the block's layers on that batch, scatter into a copy of the input.
  Work is proportional to the number of selected windows.
- ``"dense"`` (reference): run the original block on every window, then keep its output on selected windows.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor, nn

from amsr.core.errors import UnsupportedModelError
from amsr.sparse.pixel import ExecutionMode, MaskContext
from amsr.zoo.ngswin_arch import NSTB
from amsr.zoo.swinir_arch import SwinTransformerBlock, window_partition


@lru_cache(maxsize=64)
def _window_tokens_cached(h: int, w: int, window_size: int, shift_size: int, device: torch.device) -> Tensor:
    idx = torch.arange(h * w).reshape(1, h, w, 1)
    if shift_size:
        idx = torch.roll(idx, shifts=(-shift_size, -shift_size), dims=(1, 2))
    return window_partition(idx, window_size).reshape(-1, window_size * window_size).to(device)


def window_token_index(h: int, w: int, window_size: int, shift_size: int,
                       device: torch.device | str | None = None) -> Tensor:
    """``(nW, ws²)`` int64: the row-major position (in ``h·w``) of every token of every window.

    Rows follow ``window_partition``'s window order, columns the token order inside a window, both after the
    block's roll by −``shift_size``; so ``tokens[:, index[k]]`` is window ``k`` as the attention sees it. Each
    position occurs once (a permutation of ``h·w``). Cached per size and device: do not modify in place.
    """
    if h % window_size or w % window_size:
        raise ValueError(f"feature map {h}×{w} is not a multiple of the window size {window_size}")
    return _window_tokens_cached(h, w, window_size, shift_size, torch.device(device if device is not None else "cpu"))


def select_windows(mask: Tensor, window_size: int, shift_size: int, threshold: float) -> Tensor:
    """``(N, nW)`` bool: windows whose mean mask is ≥ ``threshold``; ``mask`` is N×1×h×w (0/1)."""
    n, _, h, w = mask.shape
    index = window_token_index(h, w, window_size, shift_size, mask.device)
    per_window = mask.reshape(n, h * w)[:, index]  # N × nW × ws²
    return per_window.to(torch.float64).mean(dim=-1) >= threshold


def check_swin_block(block: nn.Module, name: str) -> SwinTransformerBlock | NSTB:
    """Return ``block`` if it is a Swin-style window block: SwinIR's ``SwinTransformerBlock`` or NGswin's
    ``NSTB`` (the interfaces the masked block relies on)."""
    if not isinstance(block, (SwinTransformerBlock, NSTB)):
        raise UnsupportedModelError(f"{name}: expected a SwinTransformerBlock or NSTB, found {type(block).__name__}")
    return block


class MaskedWindowLayer(nn.Module):
    """What every window-selecting layer shares (Swin blocks here, HiT-SRF blocks in ``amsr.sparse.hit``):
    an execution ``mode`` and the window counts of its last call, read by ``AcceleratedSR`` and the tests.

    Subclasses set ``last_selected`` (windows the mask selected, all images), ``last_total`` (windows) and
    ``last_computed`` (windows actually computed: all of them on the dense reference path) in ``forward``,
    and report their cost through ``effective_macs()`` (``amsr.core.cost``).
    """

    def __init__(self, context: MaskContext, threshold: float, mode: ExecutionMode) -> None:
        super().__init__()
        if not threshold >= 0:  # also refuses NaN
            raise ValueError(f"window threshold must be ≥ 0, got {threshold}")
        self.context = context
        self.threshold = float(threshold)
        self.mode: ExecutionMode = mode
        self.last_selected: int = 0
        self.last_total: int = 0
        self.last_computed: int = 0

    def effective_macs(self) -> int:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, mode={self.mode}"


class MaskedSwinBlock(MaskedWindowLayer):
    """A pretrained Swin block computed only on the windows the mask selects; identity on the others.

    Holds the original block as ``block`` (same parameters, no copy) and has its forward signature:
    ``forward(x, (H, W))`` with tokens ``x: (B, H*W, C)`` in row-major order → ``(B, H*W, C)``.

    Args:
        block: the ``SwinTransformerBlock``.
        context: the model's mask (N×1×h×w, resized to H×W with nearest if it differs).
        threshold: a window is computed when its mean mask is ≥ this (≥ 0; see the module docstring).
        mode: ``"sparse"`` (gather the selected windows) or ``"dense"`` (reference: all windows, then select).
    """

    def __init__(self, block: nn.Module, context: MaskContext, threshold: float = 0.5,
                 mode: ExecutionMode = "sparse", name: str = "block") -> None:
        super().__init__(context, threshold, mode)
        self.block = check_swin_block(block, name)
        self.last_context_macs: int = 0

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        h, w = x_size
        if x.dim() != 3 or x.shape[1] != h * w:
            raise ValueError(f"expected tokens (B, {h}*{w}, C), got {tuple(x.shape)}")
        mask = self.context.mask_at((h, w))
        if mask.shape[0] != x.shape[0]:
            raise ValueError(f"mask batch {mask.shape[0]} does not match the features' batch {x.shape[0]}")
        selected = select_windows(mask, self.block.window_size, self.block.shift_size, self.threshold)
        self.last_total = selected.numel()
        self.last_selected = int(selected.sum())
        # NGswin's context is computed on the whole map whenever its block runs on some window.
        ran = self.mode == "dense" or self.last_selected > 0
        self.last_context_macs = x.shape[0] * self.context_macs(h, w) if ran else 0
        if self.mode == "dense":
            self.last_computed = self.last_total
            return self.forward_dense(x, x_size, selected)
        self.last_computed = self.last_selected
        return self.forward_sparse(x, x_size, selected)

    def forward_dense(self, x: Tensor, x_size: tuple[int, int], selected: Tensor) -> Tensor:
        """Reference path: the original block everywhere, then the input back on unselected windows."""
        h, w = x_size
        b = x.shape[0]
        y = self.block(x, x_size)
        index = window_token_index(h, w, self.block.window_size, self.block.shift_size, x.device)
        n = index.shape[1]
        keep = torch.zeros(b, h * w, dtype=torch.bool, device=x.device)
        keep.scatter_(1, index.reshape(1, -1).expand(b, -1), selected[:, :, None].expand(-1, -1, n).reshape(b, -1))
        return torch.where(keep[:, :, None], y, x)

    def forward_sparse(self, x: Tensor, x_size: tuple[int, int], selected: Tensor) -> Tensor:
        """Inference path: gather the selected windows' tokens, run the block's layers on them, scatter."""
        b_idx, w_idx = selected.nonzero(as_tuple=True)
        if b_idx.numel() == 0:
            return x
        h, w = x_size
        b, length, c = x.shape
        blk = self.block
        index = window_token_index(h, w, blk.window_size, blk.shift_size, x.device)
        rows = (b_idx[:, None] * length + index[w_idx]).reshape(-1)  # k·ws² rows of the (B·H·W, C) tokens
        flat = x.reshape(-1, c)
        t = flat[rows].reshape(b_idx.numel(), index.shape[1], c)
        attn_mask = blk.shifted_window_mask(h, w, x.device)
        if attn_mask is not None:
            attn_mask = attn_mask[w_idx]  # window k of each image uses mask[k]
        # The residuals are per token, so adding them in window order equals the block's roll-back-then-add.
        if isinstance(blk, NSTB):
            t = self._nstb_windows(t, attn_mask, x, x_size, rows)
        else:
            t = t + blk.attn(blk.norm1(t), attn_mask)
            t = t + blk.mlp(blk.norm2(t))
        out = flat.index_copy(0, rows, t.reshape(-1, c))
        return out.reshape(b, length, c)

    def _nstb_windows(self, t: Tensor, attn_mask: Tensor | None, x: Tensor, x_size: tuple[int, int],
                      rows: Tensor) -> Tensor:
        """NGswin's block on gathered windows ``t`` (k × ws² × C; token rows ``rows`` of ``x``).

        The N-gram context is one vector per unshifted window, computed from the whole map (it reads the
        neighbouring windows' unigrams, and costs ~C MACs per pixel); each gathered token adds the context of
        the unshifted window it sits in, as ``NGramWindowPartition`` does before its roll. Post-norm branches.
        """
        blk = self.block
        assert isinstance(blk, NSTB)
        h, w = x_size
        b, length, c = x.shape
        ws = blk.window_size
        context = blk.ngram_window_partition.ngram_context(x.reshape(b, h, w, c))  # b × h/ws × w/ws × C
        pos = rows % length
        cell = (rows // length) * ((h // ws) * (w // ws)) + (pos // w // ws) * (w // ws) + (pos % w) // ws
        t_in = t + context.reshape(-1, c)[cell].reshape(t.shape)
        t = t + blk.norm1(blk.attn(t_in, attn_mask))
        return t + blk.norm2(blk.ffn(t))

    def window_macs(self) -> int:
        """Multiply-accumulates of the block on one window: qkv + q·kᵀ + attn·v + proj + fc1 + fc2."""
        n = self.block.window_size ** 2
        attn = self.block.attn
        mlp = self.block.ffn if isinstance(self.block, NSTB) else self.block.mlp
        linear = sum(m.in_features * m.out_features for m in (attn.qkv, attn.proj, mlp.fc1, mlp.fc2))
        inner = attn.qkv.out_features // 3  # heads × head_dim (NGswin: 60 for dim 64)
        return n * linear + 2 * n * n * inner

    def context_macs(self, h: int, w: int) -> int:
        """NGswin only: the N-gram context of one ``h×w`` map (unigram conv, 2 × n-gram attention, merge)."""
        if not isinstance(self.block, NSTB):
            return 0
        ctx = self.block.ngram_window_partition.ngram_context
        windows = (h // ctx.window_size) * (w // ctx.window_size)
        attn, g = ctx.ngram_attn, ctx.ngram * ctx.ngram
        unigram = ctx.unigram_embed.out_channels * ctx.unigram_embed.in_channels // ctx.unigram_embed.groups \
            * ctx.window_size ** 2
        gram = g * (attn.qkv.in_features * attn.qkv.out_features + attn.proj.in_features * attn.proj.out_features) \
            + 2 * g * g * attn.num_heads * attn.head_dim
        merge = ctx.merge.in_channels * ctx.merge.out_channels
        return windows * (unigram + 2 * gram + merge)

    def effective_macs(self) -> int:
        """Multiply-accumulates of the last call: the computed windows only (LayerNorm/GELU not counted),
        plus NGswin's N-gram context when it was computed (whole map, ≈ 1 % of the block).

        The dense reference computes every window and reports so, like ``MaskedConv2d``.
        """
        return self.last_computed * self.window_macs() + self.last_context_macs
