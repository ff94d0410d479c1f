"""Export twins of amsr's modules: the same values as in PyTorch, written with ops ONNX has, for any H×W.

``prepare_for_export(model)`` returns a copy of a dense or accelerated model with these swaps:

- ``MaskedConv2d`` → ``GatherScatterConv2d``: the sparse path as NonZero → GatherND (the 9 taps of each
  masked-in pixel) → MatMul → ScatterND into a copy of the input. ``MaskedConv2d.forward_sparse`` computes the
  same values but cannot be traced with a dynamic number of pixels: it reads ``int(numel)`` and returns early
  on an empty mask, and it scatters through a mixed index (``out[n, :, i, j]``) that ONNX cannot express.
- ``MaskGenerator`` → ``ExportMaskGenerator``: the generator itself, unchanged (same blur, the same 50 unrolled
  2-means steps, same dilation, so masks are bit-identical), followed by the pixel indices of its mask. The
  indices are computed once per forward and shared by every sparse layer, so the graph has one NonZero and
  the index nodes belong to the mask stage.
- ``PaddedSR`` → ``PaddedForExport``: pads by an amount computed from the input size instead of branching on
  it. ``PaddedSR`` skips the pad when none is needed, and ``torch.export`` would silently keep whichever branch
  the sample size took (a graph exported at 64×64 then gives wrong output at 17×23).
- ``SwinTransformerBlock`` → ``ExportSwinBlock``: the same block, its shifted-window attention mask built in
  the graph from the feature size (region labels = two comparisons of an arange with H−ws, H−shift per
  axis, window-partitioned, pairwise Equal → Where(0, −100)); the block's own mask comes from a cache keyed
  by Python ints, which a trace would freeze to the traced size. The relative position bias is a constant
  of the window size (folded).
- ``MaskedSwinBlock`` → ``GatherScatterSwinBlock``: the sparse window path (window means of the mask →
  NonZero → Gather of the selected windows' tokens → the block's layers → ScatterND), with the token-index
  table and the selected windows' attention-mask rows built in the graph; an empty selection runs the
  layers on an empty batch and returns the input.
- ``MaskedWindowBatch`` → ``GatherScatterWindowBatch``: a user's window-local block through its
  ``WindowAdapter`` (window means → NonZero → the adapter's gather → the block → its scatter).
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from amsr.core.errors import ExportError
from amsr.masking.mask import MaskConfig, MaskGenerator
from amsr.core.module_swap import swap_modules
from amsr.sparse.pixel import MaskContext, MaskedConv2d, MaskIndexCache
from amsr.rows import row_program
from amsr.sparse.tail import TailMaskedConv
from amsr.sparse.window import MaskedSwinBlock, MaskedWindowLayer
from amsr.sparse.window_batch import MaskedWindowBatch
from amsr.surgery import AcceleratedSR
from amsr.zoo.descriptor import SizeRequirements
from amsr.zoo.padding import PaddedSR
from amsr.zoo.swinir_arch import (
    MASK_VALUE,
    SwinTransformerBlock,
    WindowAttention,
    window_partition,
    window_reverse,
)

# (batch, row, col) offsets of the 3×3 taps in the 1-px zero-padded feature map, row-major like conv weights.
_TAP_OFFSETS = [[0, dy, dx] for dy in range(3) for dx in range(3)]


class SparseIndices:
    """Indices of the masked-in pixels of one mask, shared by every sparse layer that reads the mask.

    ``of(mask)`` returns ``(pixels, taps)``: ``pixels`` P×3 int64 rows ``(n, i, j)`` in row-major order (the
    order ``MaskedConv2d`` uses), ``taps`` P×9×3 the coordinates of each pixel's 3×3 neighbourhood in the
    zero-padded map; kept under ``MaskIndexCache``'s rule.
    """

    def __init__(self) -> None:
        self._cache = MaskIndexCache()

    def of(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._cache.get(mask, "taps", _pixels_and_taps)


def _pixels_and_taps(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.nonzero(mask[:, 0] > 0.5)
    offsets = torch.tensor(_TAP_OFFSETS, dtype=pixels.dtype, device=pixels.device)
    return pixels, pixels.unsqueeze(1) + offsets


class ExportMaskGenerator(nn.Module):
    """``MaskGenerator`` followed by the sparse indices of its mask (computed here, once per forward)."""

    def __init__(self, generator: MaskGenerator, indices: SparseIndices) -> None:
        super().__init__()
        self.generator = generator
        self.indices = indices

    @property
    def config(self) -> MaskConfig:
        return self.generator.config

    def forward(self, x: torch.Tensor, output_dilation: int | None = None) -> Any:
        if output_dilation is not None:  # the output blend: (network mask, output mask)
            masks = self.generator(x, output_dilation=output_dilation)
            self.indices.of(masks[0])
            return masks
        mask = self.generator(x)
        self.indices.of(mask)
        return mask

    def base_mask(self, x: torch.Tensor) -> torch.Tensor:
        """The undilated mask (the output blend dilates it twice; the sparse layers index the network mask)."""
        return self.generator.base_mask(x)


class GatherScatterConv2d(nn.Module):
    """``MaskedConv2d``'s sparse path in ONNX-expressible ops; shares the original conv's parameters.

    Pad → NHWC → GatherND of the 9 taps (P×9×C) → per-group MatMul with the reshaped weights (+ bias) →
    ScatterND of the P result rows into the NHWC input (indices from ``nonzero``: unique, no reduction) → NCHW.
    """

    def __init__(self, masked: MaskedConv2d, indices: SparseIndices) -> None:
        super().__init__()
        self.conv = masked.conv
        self.context: MaskContext = masked.context
        self.indices = indices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels, taps = self.indices.of(self.context.mask_for(x))
        conv = self.conv
        c, g, p = x.shape[1], conv.groups, pixels.shape[0]  # explicit sizes: no -1 to solve for P
        xp = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)
        patches = xp[taps[..., 0], taps[..., 1], taps[..., 2]]  # P×9×C
        # Channel-major per group (C/g·9), the layout of conv.weight reshaped to out × (in/g·9).
        patches = patches.transpose(1, 2).reshape(p, g, (c // g) * 9).transpose(0, 1)  # g×P×K
        weight = conv.weight.reshape(g, conv.out_channels // g, (c // g) * 9).transpose(1, 2)  # g×K×O/g
        y = torch.matmul(patches, weight).transpose(0, 1).reshape(p, conv.out_channels)  # P×O
        if conv.bias is not None:
            y = y + conv.bias
        out = x.permute(0, 2, 3, 1).index_put((pixels[:, 0], pixels[:, 1], pixels[:, 2]), y)
        return out.permute(0, 3, 1, 2)


# --- Swin blocks --------------------------------------------------------------------------------------------
# ``SwinTransformerBlock`` takes its shifted-window attention mask from a cache keyed by the Python ints h, w
# and ``MaskedSwinBlock`` its token-index table likewise: a trace would freeze both to the traced size. The
# twins below build them in the graph from the (symbolic) feature size, with the same values.


def window_index(h: int, w: int, window_size: int, shift_size: int, device: torch.device) -> torch.Tensor:
    """``(nW, ws²)`` int64 token positions of every window after the roll by −shift (``window_token_index``),
    as graph ops on a possibly symbolic size: arange → roll → window partition."""
    idx = torch.arange(h * w, device=device).reshape(1, h, w, 1)
    if shift_size:
        idx = torch.roll(idx, shifts=(-shift_size, -shift_size), dims=(1, 2))
    return window_partition(idx, window_size).reshape(-1, window_size * window_size)


def window_region_labels(h: int, w: int, window_size: int, shift_size: int, device: torch.device) -> torch.Tensor:
    """``(nW, ws²)`` region label (0…8) of every token of every shifted window, from which the attention mask
    follows: the official slices [0, size−ws), [size−ws, size−shift), [size−shift, size) per axis, computed
    as two comparisons of an arange with the (symbolic) size; positions are those of the rolled map, so
    they are window-partitioned without a roll (as the official ``calculate_mask``)."""
    def axis(size: int) -> torch.Tensor:
        pos = torch.arange(size, device=device)
        return (pos >= size - window_size).to(torch.int64) + (pos >= size - shift_size).to(torch.int64)

    labels = axis(h)[:, None] * 3 + axis(w)[None, :]
    return window_partition(labels[None, :, :, None], window_size).reshape(-1, window_size * window_size)


def attention_mask_of(labels: torch.Tensor) -> torch.Tensor:
    """``(k, ws², ws²)`` additive mask (0 / ``MASK_VALUE``) of windows with region ``labels`` ``(k, ws²)``;
    equal to the rows of ``shifted_window_mask`` for those windows."""
    different = labels[:, None, :] != labels[:, :, None]
    zero = torch.zeros((), dtype=torch.float32, device=labels.device)
    return torch.where(different, zero + MASK_VALUE, zero)


def window_attention(attn: WindowAttention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``WindowAttention.forward`` with one mask row per window (``mask``: ``(k, ws², ws²)`` for the ``k``
    windows of ``x``), so no division by the window count: valid for ``k = 0``. Same operations in the same
    order (logits + bias, then + mask)."""
    bw, n, c = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(bw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * attn.scale, qkv[1], qkv[2]
    logits = q @ k.transpose(-2, -1) + attn.relative_position_bias().unsqueeze(0)
    if mask is not None:
        logits = logits + mask[:, None]
    return attn.proj((logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c))


class ExportSwinBlock(nn.Module):
    """``SwinTransformerBlock`` with its shifted-window mask built in the graph for the actual H×W.

    Same submodule names (``norm1``, ``attn``, ``norm2``, ``mlp``; parameters shared) and the same forward:
    norm1 → roll(−s) → window partition → attention (+ mask of region labels) → reverse → roll(+s) → + →
    MLP → +.
    """

    def __init__(self, block: SwinTransformerBlock) -> None:
        super().__init__()
        self.window_size, self.shift_size = block.window_size, block.shift_size
        self.norm1, self.attn, self.norm2, self.mlp = block.norm1, block.attn, block.norm2, block.mlp

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        h, w = x_size
        b, _, c = x.shape
        ws, s = self.window_size, self.shift_size
        y = self.norm1(x).reshape(b, h, w, c)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(y, ws).reshape(-1, ws * ws, c)
        mask = None
        if s:  # one mask row per window of every image (batch-major, like the windows)
            mask = attention_mask_of(window_region_labels(h, w, ws, s, x.device).repeat(b, 1))
        windows = window_attention(self.attn, windows, mask)
        y = window_reverse(windows.reshape(-1, ws, ws, c), ws, h, w)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class GatherScatterSwinBlock(nn.Module):
    """``MaskedSwinBlock``'s sparse path in ONNX-expressible ops, for any H×W and any number of windows.

    Window means of the mask (Gather of the rolled, partitioned mask → ReduceMean in float64) ≥ threshold →
    NonZero (k × (n, window)) → Gather of the k·ws² token rows → norm1 → attention (+ the selected windows'
    mask rows) → + → norm2 → MLP → + → ScatterND of the rows into a copy of the input (unique indices, no
    reduction). Nothing is computed for unselected windows; with none selected the gathered batch is empty
    and the output is the input.
    """

    def __init__(self, masked: MaskedSwinBlock) -> None:
        super().__init__()
        block = cast(SwinTransformerBlock, masked.block)  # prepare_for_export passes SwinIR blocks only
        self.window_size, self.shift_size = block.window_size, block.shift_size
        self.threshold = masked.threshold
        self.context: MaskContext = masked.context
        self.norm1, self.attn, self.norm2, self.mlp = block.norm1, block.attn, block.norm2, block.mlp

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        h, w = x_size
        b, length, c = x.shape
        ws, s = self.window_size, self.shift_size
        n = ws * ws
        mask = self.context.mask_at((h, w))
        index = window_index(h, w, ws, s, x.device)  # nW × n
        per_window = mask.reshape(b, h * w)[:, index]  # b × nW × n
        selected = torch.nonzero(per_window.to(torch.float64).mean(dim=-1) >= self.threshold)  # k × 2
        k = selected.shape[0]  # explicit sizes: no -1 to solve for k
        b_idx, w_idx = selected[:, 0], selected[:, 1]
        rows = (b_idx[:, None] * length + index[w_idx]).reshape(k * n)
        flat = x.reshape(b * length, c)
        t = flat[rows].reshape(k, n, c)
        attn_mask = attention_mask_of(window_region_labels(h, w, ws, s, x.device)[w_idx]) if s else None
        t = t + window_attention(self.attn, self.norm1(t), attn_mask)
        t = t + self.mlp(self.norm2(t))
        out = flat.index_put((rows,), t.reshape(k * n, c))
        return out.reshape(b, length, c)


class GatherScatterWindowBatch(nn.Module):
    """``MaskedWindowBatch``'s sparse path with no branch on the selection: window means (the adapter's) ≥
    threshold → NonZero → the adapter's gather → the block → its scatter.

    One window more than selected is computed (window 0, dropped before the scatter): an empty batch would
    reach the user's block, and code such as DITN's ``x.view(b, c, -1)`` cannot reshape zero elements.
    """

    def __init__(self, masked: MaskedWindowBatch) -> None:
        super().__init__()
        self.block, self.adapter = masked.block, masked.adapter
        self.threshold = masked.threshold
        self.context: MaskContext = masked.context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.context.mask
        assert mask is not None  # set by the accelerated model's forward
        index = torch.nonzero(self.adapter.window_means(mask, x) >= self.threshold)[:, 0]
        k = index.shape[0]
        windows = self.adapter.gather(x, torch.cat([index, index.new_zeros(1)]))
        y = self.adapter.run(self.block, windows)
        return self.adapter.scatter(x, index, y[:k])


def min_input_size(req: SizeRequirements) -> int:
    """Smallest H or W the exported graph accepts: reflect padding needs the pad to be smaller than the size."""
    if req.pad_mode == "reflect" and (req.multiple_of > 1 or req.minimum > 1):
        return max(req.minimum, req.multiple_of)
    return 1


class PaddedForExport(nn.Module):
    """``PaddedSR`` with the pad always applied, its amount computed from the (symbolic) input size."""

    def __init__(self, padded: PaddedSR) -> None:
        super().__init__()
        self.net = padded.net
        self.scale = padded.scale
        self.req = padded.req

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        req = self.req
        if req.multiple_of > 1 or req.minimum > 1:
            m = max(1, req.multiple_of)
            ph = (torch.sym_max(h, req.minimum) + m - 1) // m * m - h
            pw = (torch.sym_max(w, req.minimum) + m - 1) // m * m - w
            x = F.pad(x, (0, pw, 0, ph), mode=req.pad_mode)
        y = self.net(x)
        return y[..., : h * self.scale, : w * self.scale]


def prepare_for_export(model: nn.Module, rows: bool = True) -> nn.Module:
    """A copy of ``model`` with the export twins swapped in (module names and parameter sharing kept).

    ``rows``: an ``AcceleratedSR`` that has a row program (``amsr.rows.row_program``: CARN / CARN-M with the
    output blend) is exported as that program; ``False`` keeps the per-stage GatherND/ScatterND path."""
    prepared = copy.deepcopy(model)
    indices = SparseIndices()

    def twin(m: nn.Module) -> nn.Module | None:
        new: nn.Module | None = None
        if rows and isinstance(m, AcceleratedSR) and (program := row_program(m)) is not None:
            new = program
        elif isinstance(m, MaskedConv2d):
            new = GatherScatterConv2d(m, indices)
        elif isinstance(m, MaskGenerator):
            new = ExportMaskGenerator(m, indices)
        elif isinstance(m, PaddedSR):
            new = PaddedForExport(m)
            if isinstance(m.net, AcceleratedSR):  # the blend's upsampling as conv/broadcast, not Resize
                m.net.blend_scale = m.scale
        elif isinstance(m, MaskedSwinBlock) and isinstance(m.block, SwinTransformerBlock):
            new = GatherScatterSwinBlock(m)
        elif isinstance(m, MaskedWindowBatch):
            new = GatherScatterWindowBatch(m)
        elif isinstance(m, MaskedWindowLayer):
            inner = getattr(m, "block", m)
            raise ExportError(f"ONNX export of window selection supports the window blocks of "
                              f"{', '.join(window_exporting_architectures())}, not {type(inner).__name__}: export "
                              f"this model with --dense, or use the PyTorch path")
        elif isinstance(m, SwinTransformerBlock):
            new = ExportSwinBlock(m)
        elif isinstance(m, TailMaskedConv):
            # Dense in the graph: the output blend keeps only SR pixels whose receptive field the sparse tail
            # computes exactly, so the exported output equals the PyTorch one (the sparse tail's per-pixel
            # gathers at HR resolution are not exportable, and slower than the dense conv in every runtime
            # measured: results/bench/gpu).
            new = m.conv
        return new

    final = (GatherScatterConv2d, ExportMaskGenerator, ExportSwinBlock, GatherScatterSwinBlock,
             GatherScatterWindowBatch)  # twins whose children are the originals' own (already exportable)
    return swap_modules(prepared, twin, lambda new: isinstance(new, final)).eval()


def window_exporting_architectures() -> list[str]:
    """The zoo ids whose window selection exports (``SparseRules.window_export``, the descriptors' fact)."""
    from amsr.zoo import architecture_names, get_architecture

    rules = {name: get_architecture(name).rules for name in architecture_names()}
    return [name for name, r in rules.items() if r.windows and r.window_export]


def export_min_size(model: nn.Module) -> int:
    """Smallest H/W that every ``PaddedSR`` inside ``model`` can handle in an exported graph."""
    sizes = [min_input_size(m.req) for m in model.modules() if isinstance(m, (PaddedSR, PaddedForExport))]
    return max(sizes, default=1)


def pads_input(model: nn.Module) -> bool:
    """True when some ``PaddedSR`` inside ``model`` may pad its input (so a mask is computed at padded size)."""
    return any(m.req.multiple_of > 1 or m.req.minimum > 1
               for m in model.modules() if isinstance(m, (PaddedSR, PaddedForExport)))


def mask_generator_of(model: nn.Module) -> MaskGenerator | None:
    """The (first) ``MaskGenerator`` inside ``model``; ``None`` for a dense model."""
    if isinstance(model, MaskGenerator):
        return model
    return next((m for m in model.modules() if isinstance(m, MaskGenerator)), None)
