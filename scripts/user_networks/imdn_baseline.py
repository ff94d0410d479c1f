"""The AIM 2019 IMDN challenge baseline (KAIR's simplified IMDN: no contrast-aware channel attention), x4.

Layout of ``ofsoundof/NTIRE2022_ESR`` ``models/imdn_baseline.py`` + KAIR ``basicblock.IMDBlock``, keys
``model.N.*``: ``model.0`` head conv, ``model.1.sub`` the 8 distillation blocks and a conv under a global
skip, ``model.2`` the upsampling conv, ``model.3`` the pixel shuffle. Input and output RGB in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn


def conv_lrelu(c_in: int, c_out: int, slope: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(slope, inplace=True))


class DistillationBlock(nn.Module):
    """Four 3×3 steps; each keeps a quarter of its channels (distilled) and refines the rest; a 1×1 fuses the
    four distilled parts, added to the input."""

    def __init__(self, channels: int = 64, slope: float = 0.05) -> None:
        super().__init__()
        self.kept = channels // 4
        rest = channels - self.kept
        self.conv1 = conv_lrelu(channels, channels, slope)
        self.conv2 = conv_lrelu(rest, channels, slope)
        self.conv3 = conv_lrelu(rest, channels, slope)
        self.conv4 = nn.Conv2d(rest, self.kept, 3, padding=1)
        self.conv1x1 = nn.Conv2d(4 * self.kept, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        y = x
        for step in (self.conv1, self.conv2, self.conv3):
            y = step(y)
            parts.append(y[:, :self.kept])
            y = y[:, self.kept:]
        parts.append(self.conv4(y))
        return x + self.conv1x1(torch.cat(parts, dim=1))


class Shortcut(nn.Module):
    def __init__(self, sub: nn.Module) -> None:
        super().__init__()
        self.sub = sub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sub(x)


class IMDNBaseline(nn.Module):
    def __init__(self, channels: int = 64, blocks: int = 8, scale: int = 4) -> None:
        super().__init__()
        body = [DistillationBlock(channels) for _ in range(blocks)] + [nn.Conv2d(channels, channels, 3, padding=1)]
        self.model = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            Shortcut(nn.Sequential(*body)),
            nn.Conv2d(channels, 3 * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def build() -> IMDNBaseline:
    """``--module scripts.user_networks.imdn_baseline:build`` (x4)."""
    return IMDNBaseline()
