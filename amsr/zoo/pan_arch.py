"""PAN network (Zhao et al., "Efficient Image Super-Resolution Using Pixel Attention", ECCV-W 2020),
written from the paper and the key layout of the official checkpoints
(github.com/zhaohengyuan1/PAN, ``codes/models/archs/PAN_arch.py``).

Attribute names follow the official module tree: ``conv_first``, ``SCPA_trunk.N`` (``conv1_a``, ``conv1_b``,
``k1.0``, ``PAConv.k2/k3/k4``, ``conv3``), ``trunk_conv``, ``upconv1``/``att1``/``HRconv1`` (and ``…2`` for x4),
``conv_last``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PixelAttention(nn.Module):
    """PA: multiply every feature by a sigmoid gate computed per pixel and channel by a 1×1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class PAConv(nn.Module):
    """Pixel-attention convolution: 3×3 ``k3`` gated by sigmoid(1×1 ``k2``), then 3×3 ``k4``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.k2 = nn.Conv2d(channels, channels, 1)
        self.k3 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.k4 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k4(self.k3(x) * torch.sigmoid(self.k2(x)))


class SCPA(nn.Module):
    """Self-calibrated block with pixel attention: two half-width branches (plain 3×3 and PAConv),
    concatenated, fused by a 1×1 conv and added to the input. Bias-free except ``PAConv.k2``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1_a = nn.Conv2d(channels, half, 1, bias=False)
        self.conv1_b = nn.Conv2d(channels, half, 1, bias=False)
        # A one-element Sequential only because the official keys are ``k1.0.weight``.
        self.k1 = nn.Sequential(nn.Conv2d(half, half, 3, padding=1, bias=False))
        self.PAConv = PAConv(half)
        self.conv3 = nn.Conv2d(2 * half, channels, 1, bias=False)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.lrelu(self.k1(self.lrelu(self.conv1_a(x))))
        b = self.lrelu(self.PAConv(self.lrelu(self.conv1_b(x))))
        return self.conv3(torch.cat([a, b], dim=1)) + x


class PAN(nn.Module):
    """PAN: 3×3 conv, ``num_blocks`` SCPA blocks, 3×3 trunk conv + long skip, then one (x2, x3) or two (x4)
    stages of nearest upsampling → 3×3 conv → PA → 3×3 conv, a last 3×3 conv, plus a bilinear upsample of the
    input as global residual.

    Input and output are float RGB in [0, 1], ``N×in_ch×H×W`` → ``N×out_ch×sH×sW``.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, channels: int = 40, up_channels: int = 24,
                 num_blocks: int = 16, scale: int = 4) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"PAN supports x2, x3 and x4, not x{scale}")
        self.scale = scale
        self.conv_first = nn.Conv2d(in_ch, channels, 3, padding=1)
        self.SCPA_trunk = nn.Sequential(*(SCPA(channels) for _ in range(num_blocks)))
        self.trunk_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.upconv1 = nn.Conv2d(channels, up_channels, 3, padding=1)
        self.att1 = PixelAttention(up_channels)
        self.HRconv1 = nn.Conv2d(up_channels, up_channels, 3, padding=1)
        if scale == 4:  # x4 is two x2 stages
            self.upconv2 = nn.Conv2d(up_channels, up_channels, 3, padding=1)
            self.att2 = PixelAttention(up_channels)
            self.HRconv2 = nn.Conv2d(up_channels, up_channels, 3, padding=1)
        self.conv_last = nn.Conv2d(up_channels, out_ch, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def _up(self, x: torch.Tensor, factor: int, conv: nn.Module, att: nn.Module, hr_conv: nn.Module) -> torch.Tensor:
        x = conv(F.interpolate(x, scale_factor=factor, mode="nearest"))
        return self.lrelu(hr_conv(self.lrelu(att(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_first(x)
        fea = fea + self.trunk_conv(self.SCPA_trunk(fea))
        if self.scale == 4:
            fea = self._up(fea, 2, self.upconv1, self.att1, self.HRconv1)
            fea = self._up(fea, 2, self.upconv2, self.att2, self.HRconv2)
        else:
            fea = self._up(fea, self.scale, self.upconv1, self.att1, self.HRconv1)
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.conv_last(fea) + base
