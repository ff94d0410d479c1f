"""DITN_Real x4 (Liu et al., "Unfolding Once is Enough: A Deployment-Friendly Transformer Unit for Super-
Resolution", ACM MM 2023), from ``yongliuy/DITN`` ``models/DITN_Real.py``; official checkpoint
``checkpoints/DITN_Real_x4.pth`` (plain state dict). Input and output RGB in [0, 1]; H, W multiples of 8.

One unit: the 60-channel map is cut into 8×8 patches, a stack of 4 inner-patch transformer layers (ITL:
channel attention over each patch's 64 pixels, a gated depth-wise FFN) runs on the patches as a batch, the
map is put back, then 4 spatial layers (SAL: large depth-wise kernels) run on the whole map. The ITL stack is
window-local — each patch's output depends on that patch alone — so amsr's window selection applies to it
through ``amsr.sparse.window_batch.BatchedWindows`` (the stack is called on a batch of patches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PATCH = 8


class GatedFFN(nn.Module):
    def __init__(self, dim: int, expansion: float = 2.0) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=False)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class ChannelAttention(nn.Module):
    """Attention between channels, the tokens being the pixels of one patch (cosine similarity × a learnt
    temperature)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(1, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x.flatten(2).transpose(1, 2)).transpose(1, 2).chunk(3, dim=1)  # each b × c × hw
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(1, 2) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class SpatialAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.DConvs = nn.Sequential(
            nn.Conv2d(dim, dim, 5, padding=2, groups=dim),
            nn.Conv2d(dim, dim, 7, padding=9, groups=dim, dilation=3),
            nn.Conv2d(dim, dim, 1))
        self.proj_first = nn.Sequential(nn.Conv2d(dim, 2 * dim, 1))
        self.proj_last = nn.Sequential(nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, x = self.proj_first(x).chunk(2, dim=1)
        return self.proj_last(x * self.DConvs(a)) * self.scale


class Layer(nn.Module):
    """x + mixer(conv1(tanh x)), then x + ffn(conv2(tanh x)); ITL (mixer = attention) or SAL (SDA)."""

    def __init__(self, dim: int, mixer: str) -> None:
        super().__init__()
        if mixer == "attn":
            self.attn = ChannelAttention(dim)
        else:
            self.SDA = SpatialAttention(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.ffn = GatedFFN(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixer = self.attn if hasattr(self, "attn") else self.SDA
        x = x + mixer(self.conv1(torch.tanh(x)))
        return x + self.ffn(self.conv2(torch.tanh(x)))


class Unit(nn.Module):
    def __init__(self, dim: int, itl: int = 4, sal: int = 4) -> None:
        super().__init__()
        self.ITLs = nn.Sequential(*[Layer(dim, "attn") for _ in range(itl)])
        self.SALs = nn.Sequential(*[Layer(dim, "sda") for _ in range(sal)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = PATCH
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, p, p)
        patches = self.ITLs(patches)
        x = patches.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
        return self.SALs(x)


class DITNReal(nn.Module):
    def __init__(self, dim: int = 60, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.sft = nn.Conv2d(3, dim, 3, padding=1)
        self.UFONE = nn.Sequential(Unit(dim))
        self.conv_after_body = nn.Conv2d(dim, dim, 3, padding=1)
        self.upsample = nn.Sequential(nn.Conv2d(dim, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]  # the authors pad with reflect to a multiple of 8; amsr's SizeRequirements does it
        x = F.pad(x, (0, -w % PATCH, 0, -h % PATCH), mode="reflect")
        feat = self.sft(x)
        y = self.upsample(self.conv_after_body(self.UFONE(feat)) + feat)
        return y[..., : h * self.scale, : w * self.scale]


def build() -> DITNReal:
    """``--module scripts.user_networks.ditn_real:build`` (x4)."""
    return DITNReal()
