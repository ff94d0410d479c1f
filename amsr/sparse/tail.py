"""Sparse tail for the output blend: compute the upsampler / reconstruction convs only where their result
can reach a kept SR pixel.

With the output blend (``MaskConfig.output_dilation``), SR pixels outside ``m_out↑`` take the bicubic value,
so the network's tail (the layers after the body: upsampler convs, reconstruction conv, at 1× … s× LR
resolution) need not run there. ``TailMaskedConv`` wraps one such conv (any kernel k×k, stride 1, zero
padding k//2, any groups and channel counts) and computes it only at the pixels of

    dilate(nearest_resize(m_out, its resolution), radius)

writing zeros elsewhere; ``radius`` covers the receptive field of the tail layers after it (so every kept
SR pixel sees exactly the dense values; the tests check that the blend is unchanged). Its
``effective_macs`` counts only the pixels it computes, which is what ``amsr.core.cost`` reports.

Each zoo descriptor lists its tail convs in execution order with their resolution factor relative to LR
(``SparseRules.tail``); ``tail_layers`` turns them into radii. A conv whose input is not an
integer multiple of the mask size (internal padding) falls back to dense (counted in full).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from amsr.core.errors import UnsupportedModelError
from amsr.masking.mask import dilate
from amsr.sparse.pixel import conv_at_pixels


class TailContext:
    """The blend's LR output mask for the tail convs of one model (``None``: compute everything)."""

    def __init__(self) -> None:
        self.output_mask: torch.Tensor | None = None

    def mask_at(self, size: tuple[int, int], radius: int) -> torch.Tensor | None:
        m = self.output_mask
        if m is None:
            return None
        h, w = m.shape[-2:]
        if size[0] % h or size[1] % w or size[0] // h != size[1] // w:
            return None  # not an integer multiple of the mask grid: compute densely
        if tuple(size) != (h, w):
            m = F.interpolate(m, size=size, mode="nearest")
        return dilate(m, radius)


class TailMaskedConv(nn.Module):
    """A conv computed only where the tail mask (at its resolution, dilated by ``radius``) is 1; zeros elsewhere."""

    def __init__(self, conv: nn.Conv2d, context: TailContext, radius: int, name: str = "conv") -> None:
        super().__init__()
        k = conv.kernel_size
        if (not isinstance(conv, nn.Conv2d) or k[0] != k[1] or k[0] % 2 == 0 or conv.stride != (1, 1)
                or conv.dilation != (1, 1) or conv.padding != (k[0] // 2, k[1] // 2) or conv.padding_mode != "zeros"):
            raise UnsupportedModelError(f"{name}: tail conv must be an odd square, stride-1, 'same' zero-padded Conv2d")
        self.conv = conv
        self.context = context
        self.radius = radius
        self.last_active = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.context.mask_at((x.shape[-2], x.shape[-1]), self.radius)
        if mask is None:
            self.last_active = x.shape[0] * x.shape[2] * x.shape[3]
            return self.conv(x)
        n_idx, i_idx, j_idx = (mask[:, 0] > 0.5).nonzero(as_tuple=True)
        self.last_active = int(n_idx.numel())
        out = x.new_zeros(x.shape[0], x.shape[2], x.shape[3], self.conv.out_channels)  # NHWC rows, filled below
        if self.last_active == 0:
            return out.permute(0, 3, 1, 2)
        flat = (n_idx * x.shape[2] + i_idx) * x.shape[3] + j_idx
        out.view(-1, self.conv.out_channels).index_copy_(0, flat, conv_at_pixels(self.conv, x, n_idx, i_idx, j_idx))
        return out.permute(0, 3, 1, 2)

    def effective_macs(self) -> int:
        k = self.conv.kernel_size[0]
        return self.last_active * self.conv.out_channels * (self.conv.in_channels // self.conv.groups) * k * k

    def extra_repr(self) -> str:
        return f"radius={self.radius}"


def tail_layers(net: nn.Module, layers: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """(name, radius) per tail conv: the radius (in the conv's own pixels) covering the receptive field of
    every later tail conv, rounded up."""
    convs = [cast(nn.Conv2d, net.get_submodule(name)) for name, _ in layers]  # tail rules name Conv2d layers
    out = []
    for idx, (name, factor) in enumerate(layers):
        later = sum((c.kernel_size[0] // 2) / f for c, (_, f) in zip(convs[idx + 1:], layers[idx + 1:]))
        out.append((name, math.ceil(later * factor - 1e-9)))
    return out
