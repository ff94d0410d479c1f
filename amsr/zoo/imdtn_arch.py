"""IMDTN: IMDN with a SwinIR residual Swin group in every block (NTIRE 2022 ESR, team 09).

Re-implemented from ofsoundof/NTIRE2022_ESR ``models/team09_imdtn/{architecture,block,network_swinir}.py``
with the same module names. The Swin part reuses ``swinir_arch`` (``RSTB`` without its conv, as the team's
copy of SwinIR drops it): ``out = x + residual_group(x)`` on tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from amsr.zoo.swinir_arch import RSTB, pad_to_multiple


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet channel shuffle: interleave the channels of ``groups`` groups."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class IMDTBlock(nn.Module):
    """Information multi-distillation block with grouped convs, channel shuffle and a Swin group.

    The official activation is an in-place LeakyReLU applied to the shuffled features before they are split,
    so the residual added after ``c2``/``c3`` is the *activated* tensor; reproduced explicitly here.
    """

    def __init__(self, channels: int, window_size: int, num_heads: int, depth: int, mlp_ratio: float,
                 distillation_rate: float = 0.25) -> None:
        super().__init__()
        self.distilled = int(channels * distillation_rate)
        self.remaining = channels - self.distilled
        self.c1 = nn.Conv2d(channels, channels, 3, 1, 1, groups=4)
        self.c2 = nn.Conv2d(self.remaining, channels, 3, 1, 1, groups=4)
        self.c3 = nn.Conv2d(self.remaining, channels, 3, 1, 1, groups=4)
        self.c4 = nn.Conv2d(self.remaining, self.distilled, 3, 1, 1)
        self.act = nn.LeakyReLU(0.05)
        self.transformer = RSTB(channels, depth, num_heads, window_size, mlp_ratio, resi_connection="none")

    def forward(self, x: Tensor) -> Tensor:
        split = [self.distilled, self.remaining]  # a list: torch.split is typed int | list[int]
        a1 = self.act(channel_shuffle(self.c1(x) + x, 4))
        d1, r1 = torch.split(a1, split, dim=1)
        a2 = self.act(channel_shuffle(self.c2(r1) + a1, 4))
        d2, r2 = torch.split(a2, split, dim=1)
        a3 = self.act(channel_shuffle(self.c3(r2) + a2, 4))
        d3, r3 = torch.split(a3, split, dim=1)
        out = torch.cat([d1, d2, d3, self.c4(r3)], dim=1)
        b, c, h, w = out.shape
        tokens = self.transformer(out.flatten(2).transpose(1, 2), (h, w))
        return tokens.transpose(1, 2).reshape(b, c, h, w) + x


@dataclass(frozen=True)
class IMDTNConfig:
    """IMDTN hyper-parameters (the released model: 64 features, 3 blocks, Swin window 6, 2 heads, depth 2)."""

    upscale: int = 4
    in_nc: int = 3
    out_nc: int = 3
    nf: int = 64
    num_modules: int = 3
    window_size: int = 6
    num_heads: int = 2
    depth: int = 2
    mlp_ratio: float = 2.0


class IMDTN(nn.Module):
    """``forward`` takes any H×W: it reflect-pads to a multiple of the Swin window and crops the output.

    (The official forward pads with mirrored copies to ``(h // ws + 1)·ws``, always adding at least one row;
    the padded pixels only influence the border, which the crop and the metric shave remove.)
    """

    def __init__(self, config: IMDTNConfig) -> None:
        super().__init__()
        cfg = config
        self.config = cfg
        self.upscale = cfg.upscale
        self.window_size = cfg.window_size
        self.fea_conv = nn.Conv2d(cfg.in_nc, cfg.nf, 3, 1, 1)
        self.block_names = tuple(f"IMDTB{i + 1}" for i in range(cfg.num_modules))
        for name in self.block_names:
            self.add_module(name, IMDTBlock(cfg.nf, cfg.window_size, cfg.num_heads, cfg.depth, cfg.mlp_ratio))
        self.c = nn.Sequential(nn.Conv2d(cfg.nf * cfg.num_modules, cfg.nf, 1), nn.LeakyReLU(0.05))
        self.LR_conv = nn.Conv2d(cfg.nf, cfg.nf, 3, 1, 1)
        self.upsampler = nn.Sequential(nn.Conv2d(cfg.nf, cfg.out_nc * cfg.upscale ** 2, 3, 1, 1),
                                       nn.PixelShuffle(cfg.upscale))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        fea = self.fea_conv(pad_to_multiple(x, self.window_size))
        outs, y = [], fea
        for name in self.block_names:
            y = getattr(self, name)(y)
            outs.append(y)
        lr = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(lr)[..., : h * self.upscale, : w * self.upscale]
