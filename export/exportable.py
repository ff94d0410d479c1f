"""Export twins of amsr's modules: the same values as in PyTorch, written with ops ONNX has, for any H×W.

``prepare_for_export(model)`` returns a copy of a dense or accelerated model with three swaps:

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
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from amsr.errors import ExportError
from amsr.mask import MaskConfig, MaskGenerator
from amsr.sparse_conv import MaskContext, MaskedConv2d
from amsr.zoo.descriptor import SizeRequirements
from amsr.zoo.padding import PaddedSR

# (batch, row, col) offsets of the 3×3 taps in the 1-px zero-padded feature map, row-major like conv weights.
_TAP_OFFSETS = [[0, dy, dx] for dy in range(3) for dx in range(3)]


class SparseIndices:
    """Indices of the masked-in pixels of one mask, shared by every sparse layer that reads the mask.

    ``of(mask)`` returns ``(pixels, taps)``: ``pixels`` P×3 int64 rows ``(n, i, j)`` in row-major order (the
    order ``MaskedConv2d`` uses), ``taps`` P×9×3 the coordinates of each pixel's 3×3 neighbourhood in the
    zero-padded map. They are recomputed only when a different mask tensor comes in.
    """

    def __init__(self) -> None:
        self._mask: torch.Tensor | None = None
        self._pixels: torch.Tensor | None = None
        self._taps: torch.Tensor | None = None

    def of(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if mask is not self._mask or self._pixels is None or self._taps is None:
            pixels = torch.nonzero(mask[:, 0] > 0.5)
            offsets = torch.tensor(_TAP_OFFSETS, dtype=pixels.dtype, device=pixels.device)
            self._mask, self._pixels, self._taps = mask, pixels, pixels.unsqueeze(1) + offsets
        return self._pixels, self._taps


class ExportMaskGenerator(nn.Module):
    """``MaskGenerator`` followed by the sparse indices of its mask (computed here, once per forward)."""

    def __init__(self, generator: MaskGenerator, indices: SparseIndices) -> None:
        super().__init__()
        self.generator = generator
        self.indices = indices

    @property
    def config(self) -> MaskConfig:
        return self.generator.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.generator(x)
        self.indices.of(mask)
        return mask


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


def prepare_for_export(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the export twins swapped in (module names and parameter sharing kept)."""
    from amsr.sparse_window import MaskedSwinBlock

    blocks = [name for name, m in model.named_modules() if isinstance(m, MaskedSwinBlock)]
    if blocks:  # their window gather/scatter has no export twin yet; tracing them would bake in one selection
        raise ExportError(f"ONNX export of window-masked Swin blocks is not supported yet ({len(blocks)} in "
                          f"{type(model).__name__}, e.g. {blocks[0]}): export the dense model or a conv-only rule set")
    prepared = copy.deepcopy(model)
    indices = SparseIndices()
    swapped: dict[int, nn.Module] = {}  # CARN-M calls one module three times: swap it once, keep sharing

    def twin(m: nn.Module) -> nn.Module | None:
        if id(m) in swapped:
            return swapped[id(m)]
        new: nn.Module | None = None
        if isinstance(m, MaskedConv2d):
            new = GatherScatterConv2d(m, indices)
        elif isinstance(m, MaskGenerator):
            new = ExportMaskGenerator(m, indices)
        elif isinstance(m, PaddedSR):
            new = PaddedForExport(m)
        if new is not None:
            swapped[id(m)] = new
        return new

    def visit(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            new = twin(child)
            if new is not None:
                setattr(parent, name, new)
            if not isinstance(new, (GatherScatterConv2d, ExportMaskGenerator)):
                visit(new if new is not None else child)

    root = twin(prepared)
    visit(root if root is not None else prepared)
    return (root if root is not None else prepared).eval()


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
