"""IMDN network (Hui et al., "Lightweight Image Super-Resolution with Information Multi-distillation
Network", ACM MM 2019), written from the paper and the key layout of the official checkpoints
(github.com/Zheng222/IMDN, ``model/architecture.py`` class ``IMDN``).

Attribute names follow the official module tree so that its state dicts load unchanged:
``fea_conv``, ``IMDB1`` … ``IMDB6`` (each ``c1``–``c5`` and ``cca.conv_du``), ``c.0``, ``LR_conv``, ``upsampler.0``.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(in_ch: int, out_ch: int, kernel_size: int) -> nn.Conv2d:
    """Stride-1 'same' convolution with bias, the only kind IMDN uses."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=True)


class ContrastChannelAttention(nn.Module):
    """Contrast-aware channel attention (CCA): gates channels by their std + mean over the image."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        # Population std (divide by H·W), as the reference computes it; torch.std would use H·W − 1.
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * self.conv_du(std + mean)


class IMDBlock(nn.Module):
    """Information multi-distillation block: three 3×3 convs each keep a quarter of their channels.

    ``c1`` maps C→C; ``c2``/``c3`` map the remaining 3C/4 back to C; ``c4`` maps 3C/4 to the last C/4.
    The four distilled slices are concatenated, gated by CCA, fused by the 1×1 ``c5`` and added to the input.
    """

    def __init__(self, channels: int, distillation_rate: float = 0.25) -> None:
        super().__init__()
        self.distilled = int(channels * distillation_rate)
        self.remaining = channels - self.distilled
        self.c1 = _conv(channels, channels, 3)
        self.c2 = _conv(self.remaining, channels, 3)
        self.c3 = _conv(self.remaining, channels, 3)
        self.c4 = _conv(self.remaining, self.distilled, 3)
        self.act = nn.LeakyReLU(0.05, inplace=True)
        self.c5 = _conv(self.distilled * 4, channels, 1)
        self.cca = ContrastChannelAttention(self.distilled * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = [self.distilled, self.remaining]  # a list: torch.split is typed int | list[int]
        d1, r1 = torch.split(self.act(self.c1(x)), split, dim=1)
        d2, r2 = torch.split(self.act(self.c2(r1)), split, dim=1)
        d3, r3 = torch.split(self.act(self.c3(r2)), split, dim=1)
        d4 = self.c4(r3)  # no activation on the last distillation step (as in the reference)
        fused = self.c5(self.cca(torch.cat([d1, d2, d3, d4], dim=1)))
        return fused + x


class IMDN(nn.Module):
    """IMDN: feature conv, ``num_modules`` IMDBs, 1×1 fusion of all block outputs, 3×3 conv + long skip,
    then a 3×3 conv to ``out_ch·scale²`` channels and a pixel shuffle.

    Input and output are float RGB in [0, 1] (no mean shift), ``N×in_ch×H×W`` → ``N×out_ch×sH×sW``.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, channels: int = 64, num_modules: int = 6,
                 scale: int = 4) -> None:
        super().__init__()
        self.num_modules = num_modules
        self.fea_conv = _conv(in_ch, channels, 3)
        # Official names IMDB1 … IMDBn (attributes, not a ModuleList) keep the checkpoint keys unchanged.
        for i in range(1, num_modules + 1):
            self.add_module(f"IMDB{i}", IMDBlock(channels))
        self.c = nn.Sequential(_conv(channels * num_modules, channels, 1), nn.LeakyReLU(0.05, inplace=True))
        self.LR_conv = _conv(channels, channels, 3)
        self.upsampler = nn.Sequential(_conv(channels, out_ch * scale * scale, 3), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x)
        outs: list[torch.Tensor] = []
        h = fea
        for i in range(1, self.num_modules + 1):
            h = getattr(self, f"IMDB{i}")(h)
            outs.append(h)
        body = self.LR_conv(self.c(torch.cat(outs, dim=1)))
        return self.upsampler(body + fea)
