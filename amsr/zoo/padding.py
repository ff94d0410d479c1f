"""Pad an LR input to what a network accepts and crop its output back (spandrel's SizeRequirements)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amsr.zoo.descriptor import SizeRequirements


def padded_size(size: int, req: SizeRequirements) -> int:
    """Smallest size ≥ ``max(size, req.minimum)`` that is a multiple of ``req.multiple_of``."""
    target = max(size, req.minimum)
    m = max(1, req.multiple_of)
    return -(-target // m) * m


def pad_input(x: torch.Tensor, req: SizeRequirements) -> torch.Tensor:
    """Pad ``x`` (N×C×H×W) at the bottom/right to the required size."""
    h, w = x.shape[-2:]
    ph, pw = padded_size(h, req) - h, padded_size(w, req) - w
    if ph == 0 and pw == 0:
        return x
    mode = req.pad_mode
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"  # reflect cannot pad by as much as the size itself
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class PaddedSR(nn.Module):
    """Wraps a network so that any H×W works: pad to ``req``, run, crop to ``scale``·H × ``scale``·W."""

    def __init__(self, net: nn.Module, scale: int, req: SizeRequirements) -> None:
        super().__init__()
        self.net = net
        self.scale = scale
        self.req = req

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.net(pad_input(x, self.req))
        return y[..., : h * self.scale, : w * self.scale]
