"""CARN / CARN-M with the output blend, executed on rows (``amsr.rows.grid``): the same SR values as
``AcceleratedSR`` (masked body convs, sparse tail, blend), with work that follows the active pixels.

Which pixels are computed (A = network mask, E = output mask, LR grid; ⊕k = dilation by k px):

- the SR output is the network's only at E↑s (bicubic elsewhere), so the exit conv runs there; each tail conv
  runs where a later one reads it (``tail_sets``: for x4, E↑2 ⊕ 1 at 2×, then E ⊕ 1 at LR), the same pixels
  ``TailMaskedConv``'s radii give;
- the body runs on R = A ⊕ 1 ∪ E ⊕ 2: the masked 3×3 convs compute at A and pass their input through at
  R \\ A (the paper's identity skip), and their 3×3 neighbourhoods lie in A ⊕ 1; every other body layer is
  per pixel (1×1 convs, ReLU, residual adds, the cascade's concatenations), so it needs no neighbour and
  runs on R only. The tail reads the body at E ⊕ 2. Pixels outside R never reach a kept SR pixel.

Rows of R are ordered A first, so a masked conv's output is ``cat(conv rows of A, input rows of R \\ A)``.
The exit conv (64 → 3) is computed as ``features @ W_tap`` (27 columns) followed by a 9-tap gather and one
27 → 3 Gemm (tap sum, bias and mean shift), which moves 27 values per HR pixel instead of the 576 of a
gathered 3×3 neighbourhood; its index arithmetic runs per HR block of an LR pixel (``grid.block_taps``).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from amsr.core.errors import UnsupportedModelError
from amsr.masking.mask import MaskGenerator, dilate
from amsr.sparse.pixel import MaskedConv2d
from amsr.rows.grid import (
    block_pixels_flat,
    block_taps,
    conv1x1_rows,
    conv3x3_rows,
    conv3x3_weight,
    full_taps,
    grid_of,
    group_major,
    grouped_conv3x3_rows,
    grouped_conv3x3_weight,
    padded_pixel_rows,
    pixel_major,
    pixels_of,
    taps,
    with_zero_row,
)
from amsr.sparse.tail import TailMaskedConv
from amsr.core.tracing import is_tracing
from amsr.core.upsample import bicubic_upscale, nearest_upscale
from amsr.zoo.carn_arch import CARN, CascadingBlock, EfficientResidualBlock, ScaleBranch


def _plain(conv: nn.Module) -> nn.Conv2d:
    inner = conv.conv if isinstance(conv, (MaskedConv2d, TailMaskedConv)) else conv
    assert isinstance(inner, nn.Conv2d)
    return inner


class RowConv3x3(nn.Module):
    """An ungrouped 3×3 conv on rows (P×I → P×O). Buffers, so the graph holds each as one constant."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.groups != 1:
            raise UnsupportedModelError(f"RowConv3x3 takes an ungrouped conv (got groups={conv.groups})")
        self.register_buffer("weight", conv3x3_weight(conv.weight.detach()), persistent=False)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone(), persistent=False)
        self.macs_per_row = conv.out_channels * (conv.in_channels // conv.groups) * 9  # the grouped conv's

    def forward(self, source: torch.Tensor, tap_rows: torch.Tensor) -> torch.Tensor:
        return conv3x3_rows(source, tap_rows, self.weight, self.bias)


class RowGroupedConv3x3(nn.Module):
    """A (grouped) 3×3 conv on group-major rows (g×P×I/g → g×P×O/g, ``grouped_conv3x3_rows``)."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        g = self.groups = conv.groups
        self.register_buffer("weight", grouped_conv3x3_weight(conv.weight.detach(), g), persistent=False)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().reshape(g, 1, -1).clone(),
                             persistent=False)
        self.macs_per_row = conv.out_channels * (conv.in_channels // g) * 9

    def forward(self, source: torch.Tensor, tap_rows: torch.Tensor) -> torch.Tensor:
        return grouped_conv3x3_rows(source, tap_rows, self.weight, self.bias)


class RowTailConv(nn.Module):
    """A grouped tail conv followed by ``pixel_shuffle(r)``, per group on rows: g sources (P_s×I/g, zero rows
    appended) → g outputs ((P·r²)×(O/g/r²)), group k of the shuffled map, ready as group k of the next one.

    Per group rather than block-diagonal: the 64 → 256 convs of CARN-M's upsampler would do 4× the
    multiplies at up to 4× the LR pixel count. Output channels are permuted sub-pixel-major at build time,
    so the shuffle is a reshape (no Transpose): shuffled channel c·r² + s of group k is its output row s·(O/g/r²) + c.
    """

    def __init__(self, conv: nn.Conv2d, factor: int) -> None:
        super().__init__()
        g, r2 = conv.groups, factor * factor
        og = conv.out_channels // g
        if og % r2:
            raise UnsupportedModelError(f"tail conv: {og} output channels per group do not split into {r2} sub-pixels")
        self.groups, self.factor = g, factor
        local = torch.arange(og).reshape(og // r2, r2).t().reshape(-1)  # new order (s, c) ← old c·r² + s
        weight = conv.weight.detach().reshape(g, og, *conv.weight.shape[1:])[:, local]
        bias = conv.bias.detach().reshape(g, og)[:, local] if conv.bias is not None else None
        for k in range(g):
            self.register_buffer(f"weight{k}", conv3x3_weight(weight[k]), persistent=False)
            self.register_buffer(f"bias{k}", None if bias is None else bias[k].clone(), persistent=False)
        self.macs_per_row = conv.out_channels * (conv.in_channels // g) * 9

    def forward(self, sources: list[torch.Tensor], tap_rows: torch.Tensor) -> list[torch.Tensor]:
        r2 = self.factor * self.factor
        out = []
        for k, source in enumerate(sources):
            y = conv3x3_rows(source, tap_rows, getattr(self, f"weight{k}"), getattr(self, f"bias{k}")).relu()
            out.append(with_zero_row(y.reshape(y.shape[0] * r2, -1), r2))
        return out


class RowConv1x1(nn.Module):
    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.register_buffer("weight", conv.weight.detach().clone(), persistent=False)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone(), persistent=False)
        self.macs_per_row = conv.out_channels * conv.in_channels

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return conv1x1_rows(rows, self.weight, self.bias)

    def of_concatenation(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The conv of ``torch.cat(parts, dim=1)`` without building it: one Gemm per part, each adding into
        the last (ONNX Gemm's C input). CARN's cascade concatenates 2–4 maps of 64 channels before each
        fuse; on 77 k rows (onnxruntime CPU, 2 threads) concat + Gemm took 33.5 / 49.7 / 60.1 ms for 2 / 3 / 4
        parts, the chain 27.7 / 42.2 / 60.1 ms."""
        weight = self.weight[:, :, 0, 0]
        start = parts[0].shape[1]
        out = F.linear(parts[0], weight[:, :start], self.bias)
        for part in parts[1:]:
            stop = start + part.shape[1]
            out = torch.addmm(out, part, weight[:, start:stop].t())
            start = stop
        return out


class _Unit(nn.Module):
    """A residual unit of the cascade on rows (CARN: conv-ReLU-conv; CARN-M: gconv-ReLU-gconv-ReLU-1×1).
    Input/output: rows P×C of R (A first); the two 3×3 convs run group-major in between."""

    def __init__(self, unit: nn.Module) -> None:
        super().__init__()
        body = cast(nn.Sequential, unit.body)
        for i in (0, 2):
            if not isinstance(body[i], MaskedConv2d):
                raise UnsupportedModelError("row execution needs every body 3×3 conv masked "
                                            f"(found an unmasked {type(body[i]).__name__})")
        self.conv1 = RowGroupedConv3x3(_plain(body[0]))
        self.conv2 = RowGroupedConv3x3(_plain(body[2]))
        if self.conv1.groups != self.conv2.groups:
            raise UnsupportedModelError("row execution needs both 3×3 convs of a unit to have the same groups")
        self.pointwise = RowConv1x1(_plain(body[4])) if isinstance(unit, EfficientResidualBlock) else None

    def forward(self, x: torch.Tensor, taps_a: torch.Tensor) -> torch.Tensor:
        n_a = taps_a.shape[0]
        # The zero row is appended once: conv1 passes it through with R \ A, so conv2 reads conv1's output as
        # it is (one Concat fewer per unit, 9 of the 18 zero-row copies of CARN-M's body).
        y = _masked(self.conv1, with_zero_row(group_major(x, self.conv1.groups)), taps_a, n_a, True).relu()
        y = pixel_major(_masked(self.conv2, y, taps_a, n_a, False))
        if self.pointwise is not None:
            y = self.pointwise(y.relu())
        return (y + x).relu()


def _masked(conv: RowGroupedConv3x3, source: torch.Tensor, taps_a: torch.Tensor, n_a: int | torch.Tensor,
            keep_zero_row: bool) -> torch.Tensor:
    """The masked conv on group-major rows: ``source`` g×(P+1)×C/g, the rows of R (A first) and the zero row;
    the conv at the A rows, the input passed through at the rest of R (and at the zero row if kept)."""
    rest = source[:, n_a:] if keep_zero_row else source[:, n_a:-1]
    return torch.cat([conv(source, taps_a), rest], dim=1)


class _Cascade(nn.Module):
    def __init__(self, units: list[nn.Module], fuses: list[nn.Module]) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)
        self.fuses = nn.ModuleList(RowConv1x1(_plain(cast(nn.Sequential, f.body)[0])) for f in fuses)

    def macs_per_row(self) -> tuple[int, int]:
        """(MACs per A row: the masked 3×3 convs, MACs per R row: every other layer), each unit call counted."""
        at_a = at_r = 0
        for unit in self.units:
            if isinstance(unit, _Cascade):
                a, r = unit.macs_per_row()
            else:
                assert isinstance(unit, _Unit)
                a = unit.conv1.macs_per_row + unit.conv2.macs_per_row
                r = unit.pointwise.macs_per_row if unit.pointwise is not None else 0
            at_a, at_r = at_a + a, at_r + r
        return at_a, at_r + sum(cast(RowConv1x1, f).macs_per_row for f in self.fuses)

    def forward(self, x: torch.Tensor, taps_a: torch.Tensor) -> torch.Tensor:
        parts, o = [x], x
        for unit, fuse in zip(self.units, self.fuses):
            parts.append(unit(o, taps_a))
            o = cast(RowConv1x1, fuse).of_concatenation(parts).relu()
        return o


def _block(block: CascadingBlock) -> _Cascade:
    if block.efficient:
        shared = _Unit(block.b1)
        units: list[nn.Module] = [shared, shared, shared]
    else:
        units = [_Unit(block.b1), _Unit(block.b2), _Unit(block.b3)]
    return _Cascade(units, [block.c1, block.c2, block.c3])


class RowCARN(nn.Module):
    """``AcceleratedSR`` of a CARN / CARN-M with an output blend, on rows. forward: N×3×H×W → N×3×sH×sW."""

    exit_weight: torch.Tensor
    tap_sum: torch.Tensor
    exit_bias: torch.Tensor

    def __init__(self, mask_generator: MaskGenerator, net: CARN, scale: int) -> None:
        super().__init__()
        config = mask_generator.config
        if config.output_dilation is None:
            raise UnsupportedModelError("row execution needs the output blend (output_dilation)")
        self.mask_generator = mask_generator
        self.output_dilation = config.output_dilation
        self.scale = scale
        self.sub_mean = RowConv1x1(net.sub_mean.shifter)
        self.add_mean = RowConv1x1(net.add_mean.shifter)
        self.entry = RowConv3x3(net.entry)
        self.body = _Cascade([_block(net.b1), _block(net.b2), _block(net.b3)], [net.c1, net.c2, net.c3])
        branch: ScaleBranch = getattr(net.upsample, f"up{scale}")
        layers = list(branch.body)
        self.steps = [int(cast(nn.PixelShuffle, ps).upscale_factor) for ps in layers[2::3]]
        if not self.steps or min(self.steps) < 2:
            raise UnsupportedModelError(f"row execution needs pixel-shuffle steps ≥ 2 (got {self.steps})")
        self.tail = nn.ModuleList(RowTailConv(_plain(c), r) for c, r in zip(layers[0::3], self.steps))
        exit_conv = _plain(net.exit)
        if exit_conv.bias is None:
            raise UnsupportedModelError("row execution needs the exit conv's bias (CARN has one)")
        # exit weight O×I×3×3 → I×(9·O), tap-major: features @ W gives each tap's contribution per pixel.
        self.register_buffer("exit_weight", exit_conv.weight.detach().permute(1, 2, 3, 0).reshape(
            exit_conv.in_channels, -1), persistent=False)
        # The 9 taps' contributions are summed, biased and mean-shifted by one (9·O)×O Gemm: ``tap_sum`` is the
        # add_mean weight stacked once per tap. onnxruntime's ReduceSum over the tap axis of a (~1 M × 9 × 3)
        # tensor took 402 ms where this MatMul took 54 ms (onnxruntime CPU, 2 threads).
        shift = net.add_mean.shifter
        assert shift.bias is not None  # MeanShift's conv has one
        shift_weight = shift.weight.detach()[:, :, 0, 0]
        self.register_buffer("tap_sum", shift_weight.repeat(1, 9), persistent=False)  # O×(9·O)
        self.register_buffer("exit_bias", shift_weight @ exit_conv.bias.detach() + shift.bias.detach(),
                             persistent=False)
        self.exit_channels = exit_conv.out_channels
        self.exit_macs_per_row = exit_conv.out_channels * exit_conv.in_channels * 9
        self.last_macs = 0

    def tail_sets(self, output_mask: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(each tail conv's pixels at its resolution, body pixels the tail reads at LR)."""
        # The exit conv reads the last tail conv's output at E↑s ⊕ 1 (HR); pooled by that conv's factor r ≥ 2,
        # that is E↑(s/r) ⊕ 1 on the conv's own grid (HR rows r·Y − 1 … r·Y + r lie in its rows Y − 1 … Y + 1),
        # so no HR-sized mask is built.
        computed = dilate(nearest_upscale(output_mask, self.scale // self.steps[-1]), 1)
        sets = [computed]
        need = dilate(computed, 1)
        for r in reversed(self.steps[:-1]):
            computed = F.max_pool2d(need, kernel_size=r, stride=r)
            sets.insert(0, computed)
            need = dilate(computed, 1)
        return sets, need

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        mask, output_mask = self.mask_generator(x, output_dilation=self.output_dilation)
        sets, body_need = self.tail_sets(output_mask)
        region = torch.maximum(dilate(mask, 1), body_need)
        active = pixels_of(mask)
        pixels = torch.cat([active, pixels_of(region * (1 - mask))], dim=0)
        body = grid_of(pixels, n, h, w)
        taps_a = taps(active, body)

        # Entry: sub_mean per pixel, then the 3×3 conv at R read from the zero-padded normalised image.
        normalised = F.conv2d(x, self.sub_mean.weight, self.sub_mean.bias)
        feat = self.entry(with_zero_row(padded_pixel_rows(normalised)), full_taps(pixels, h, w))
        feat = self.body(feat, taps_a)

        sources = list(torch.split(with_zero_row(feat), feat.shape[1] // self.tail[0].groups, dim=1))
        source_grid, factor = body, 1
        tail_rows: list[int] = []
        for conv, r, computed in zip(self.tail, self.steps, sets):
            out_pixels = pixels_of(computed)
            tail_rows.append(0 if is_tracing() else int(out_pixels.shape[0]))
            sources = conv(sources, taps(out_pixels, source_grid, factor))
            hh, ww = computed.shape[-2], computed.shape[-1]
            source_grid, factor = grid_of(out_pixels, n, hh, ww), r

        # The exit runs at E↑s, enumerated as the s×s HR blocks of E's LR pixels (``block_taps``).
        exit_blocks = pixels_of(output_mask)
        part = sources[0].shape[1]  # the exit conv reads the groups' channels in order
        exit_weights = self.exit_weight.split(part)
        contributions = sources[0] @ exit_weights[0]
        for src, weight in zip(sources[1:], exit_weights[1:]):
            contributions = contributions + src @ weight
        contributions = contributions.reshape(-1, self.exit_channels)  # ((P+1)r²·9)×3
        tap_rows = block_taps(exit_blocks, source_grid, self.scale, factor) * 9 + torch.arange(9, device=x.device)
        sr_rows = F.linear(torch.index_select(contributions, 0, tap_rows.reshape(-1)).reshape(
            -1, 9 * self.exit_channels), self.tap_sum, self.exit_bias)

        s = self.scale
        bic = bicubic_upscale(x, s).permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        flat = block_pixels_flat(exit_blocks, s, h, w)
        out = bic.index_put((flat,), sr_rows)
        if not is_tracing():
            self.last_macs = self._count(int(active.shape[0]), int(pixels.shape[0]), tail_rows, int(flat.shape[0]))
        return out.reshape(n, h * s, w * s, -1).permute(0, 3, 1, 2)

    def _count(self, n_a: int, n_r: int, tail_rows: list[int], n_exit: int) -> int:
        """MACs of one forward: the masked convs at A, every other body layer at R, each tail conv at its rows
        (grouped convs counted as grouped, as ``amsr.core.cost`` counts the dense network)."""
        at_a, at_r = self.body.macs_per_row()
        macs = n_a * at_a + n_r * (at_r + self.entry.macs_per_row + self.sub_mean.macs_per_row)
        macs += sum(rows * cast(RowTailConv, conv).macs_per_row for rows, conv in zip(tail_rows, self.tail))
        return macs + n_exit * (self.exit_macs_per_row + self.add_mean.macs_per_row)

    def effective_macs(self) -> int:
        """Multiply-accumulates of the last eager call (``amsr.core.cost``)."""
        return self.last_macs
