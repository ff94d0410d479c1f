"""CARN and CARN-M (Ahn et al., "Fast, Accurate, and Lightweight Super-Resolution with Cascading Residual
Network", ECCV 2018), written against the key layout of the official nmhkahn/CARN-pytorch checkpoints.

Both nets are multi-scale: one body, an upsampler with ×2/×3/×4 branches, the branch chosen per call.
Module names and ``nn.Sequential`` indices mirror the official ones so that the published files load
strictly (ReLUs sit at the same indices even though they hold no weights).

Layout facts the official files rely on:

* ``sub_mean``/``add_mean`` are 1×1 convs (``shifter``) stored in the checkpoint (identity, ∓ DIV2K mean on a
  [0, 1] RGB input), so they are loaded, not rebuilt.
* CARN-M's cascading block owns ONE efficient residual block (``b1``) and applies it three times
  (the paper's recursive weight sharing); its convs are therefore called three times per block.
* The upsampler is conv (n → r²·n, grouped like the body) → ReLU → PixelShuffle(r), twice for ×4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amsr.core.checkpoint import StateDict, load_strict
from amsr.core.errors import CheckpointError, UnsupportedModelError

SCALES: tuple[int, ...] = (2, 3, 4)
# DIV2K RGB mean on [0, 1]: the value the official MeanShift layers are initialised (and stored) with.
DIV2K_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Module):
    """Adds (or subtracts) a per-channel mean through a 1×1 conv, as the official code stores it."""

    def __init__(self, mean_rgb: tuple[float, float, float], subtract: bool) -> None:
        super().__init__()
        self.shifter = nn.Conv2d(3, 3, 1, 1, 0)
        sign = -1.0 if subtract else 1.0
        with torch.no_grad():
            self.shifter.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            assert self.shifter.bias is not None  # a Conv2d with bias (the default)
            self.shifter.bias.copy_(torch.tensor(mean_rgb) * sign)
        self.shifter.requires_grad_(False)  # a fixed normalisation, never trained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shifter(x)


class Fuse(nn.Module):
    """1×1 conv + ReLU that squeezes the cascaded concatenation back to ``out_ch`` (official ``BasicBlock``)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, 1, 0), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualBlock(nn.Module):
    """CARN's residual block: conv3×3 → ReLU → conv3×3, identity added, then ReLU."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.ReLU(), nn.Conv2d(ch, ch, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + x)


class EfficientResidualBlock(nn.Module):
    """CARN-M's residual block: grouped conv3×3 → ReLU → grouped conv3×3 → ReLU → pointwise conv, + identity, ReLU."""

    def __init__(self, ch: int, group: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1, groups=group), nn.ReLU(),
            nn.Conv2d(ch, ch, 3, 1, 1, groups=group), nn.ReLU(),
            nn.Conv2d(ch, ch, 1, 1, 0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + x)


def carn_tail(scale: int) -> list[tuple[str, int]]:
    """The tail convs of CARN / CARN-M (``SparseRules.tail``): the upsampler's convs and the exit conv."""
    if scale == 4:
        return [("upsample.up4.body.0", 1), ("upsample.up4.body.3", 2), ("exit", 4)]
    return [(f"upsample.up{scale}.body.0", 1), ("exit", scale)]


def _cascade(x: torch.Tensor, units: tuple[nn.Module, nn.Module, nn.Module],
             fuses: tuple[nn.Module, nn.Module, nn.Module]) -> torch.Tensor:
    """The cascading pattern shared by the blocks and the net: each unit's output joins every earlier
    feature map in a growing concatenation that a 1×1 fuse conv reduces to the next unit's input."""
    cat, o = x, x
    for unit, fuse in zip(units, fuses):
        cat = torch.cat([cat, unit(o)], dim=1)
        o = fuse(cat)
    return o


class CascadingBlock(nn.Module):
    """Local cascade of three residual units (CARN: three distinct blocks ``b1..b3``;
    CARN-M: one efficient block ``b1`` applied three times, so ``b2``/``b3`` do not exist)."""

    def __init__(self, ch: int, efficient: bool, group: int) -> None:
        super().__init__()
        self.efficient = efficient
        if efficient:
            self.b1: nn.Module = EfficientResidualBlock(ch, group)
        else:
            self.b1 = ResidualBlock(ch)
            self.b2 = ResidualBlock(ch)
            self.b3 = ResidualBlock(ch)
        self.c1 = Fuse(2 * ch, ch)
        self.c2 = Fuse(3 * ch, ch)
        self.c3 = Fuse(4 * ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        units = (self.b1, self.b1, self.b1) if self.efficient else (self.b1, self.b2, self.b3)
        return _cascade(x, units, (self.c1, self.c2, self.c3))


class ScaleBranch(nn.Module):
    """Sub-pixel upsampling for one scale: (conv → ReLU → PixelShuffle(2)) ×2 for ×4, once with r = scale otherwise."""

    def __init__(self, ch: int, scale: int, group: int) -> None:
        super().__init__()
        steps = [2, 2] if scale == 4 else [scale]
        layers: list[nn.Module] = []
        for r in steps:
            layers += [nn.Conv2d(ch, r * r * ch, 3, 1, 1, groups=group), nn.ReLU(), nn.PixelShuffle(r)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MultiScaleUpsampler(nn.Module):
    """One branch per scale (``up2``/``up3``/``up4``), all stored in the multi-scale checkpoint."""

    def __init__(self, ch: int, group: int) -> None:
        super().__init__()
        self.up2 = ScaleBranch(ch, 2, group)
        self.up3 = ScaleBranch(ch, 3, group)
        self.up4 = ScaleBranch(ch, 4, group)

    def forward(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        if scale == 2:
            return self.up2(x)
        if scale == 3:
            return self.up3(x)
        if scale == 4:
            return self.up4(x)
        raise UnsupportedModelError(f"CARN upsamples by 2, 3 or 4, not {scale}")


class CARN(nn.Module):
    """CARN (``efficient=False``, ``group=1``) or CARN-M (``efficient=True``, ``group=4``).

    ``forward(x, scale)`` is the official multi-scale call; ``scale`` may be omitted once ``self.scale`` is set
    (``build`` does that), which gives amsr its single-input ``forward(x)`` while the module names stay
    exactly the official ones. Input and output are RGB in [0, 1] (the output is not clamped).
    """

    def __init__(self, efficient: bool, n_feats: int = 64, body_group: int = 1, up_group: int = 1,
                 scale: int | None = None) -> None:
        super().__init__()
        self.scale = scale
        self.sub_mean = MeanShift(DIV2K_MEAN, subtract=True)
        self.add_mean = MeanShift(DIV2K_MEAN, subtract=False)
        self.entry = nn.Conv2d(3, n_feats, 3, 1, 1)
        self.b1 = CascadingBlock(n_feats, efficient, body_group)
        self.b2 = CascadingBlock(n_feats, efficient, body_group)
        self.b3 = CascadingBlock(n_feats, efficient, body_group)
        self.c1 = Fuse(2 * n_feats, n_feats)
        self.c2 = Fuse(3 * n_feats, n_feats)
        self.c3 = Fuse(4 * n_feats, n_feats)
        self.upsample = MultiScaleUpsampler(n_feats, up_group)
        self.exit = nn.Conv2d(n_feats, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        s = self.scale if scale is None else scale
        if s is None:
            raise UnsupportedModelError("CARN needs a scale: pass forward(x, scale) or set .scale")
        feat = self.entry(self.sub_mean(x))
        feat = _cascade(feat, (self.b1, self.b2, self.b3), (self.c1, self.c2, self.c3))
        return self.add_mean(self.exit(self.upsample(feat, s)))


def _groups(sd: StateDict, key: str, n_feats: int) -> int:
    """Group count of a conv whose input has ``n_feats`` channels, read from its weight shape."""
    if key not in sd:
        raise CheckpointError(f"CARN checkpoint lacks {key}")
    per_group = int(sd[key].shape[1])
    if per_group <= 0 or n_feats % per_group:
        raise CheckpointError(f"CARN checkpoint: {key} has {per_group} input channels per group, "
                              f"which does not divide {n_feats}")
    return n_feats // per_group


def build_carn(sd: StateDict, scale: int, efficient: bool) -> CARN:
    """Build CARN / CARN-M from an official state dict (widths and group counts read from the shapes),
    load it strictly and bind ``scale`` so that ``forward(x)`` suffices."""
    if scale not in SCALES:
        raise UnsupportedModelError(f"{'CARN-M' if efficient else 'CARN'} supports x2, x3 and x4, not x{scale}")
    if "entry.weight" not in sd:
        raise CheckpointError("CARN checkpoint lacks entry.weight")
    n_feats = int(sd["entry.weight"].shape[0])
    body_group = _groups(sd, "b1.b1.body.0.weight", n_feats)
    up_group = _groups(sd, "upsample.up2.body.0.weight", n_feats)
    net = CARN(efficient=efficient, n_feats=n_feats, body_group=body_group, up_group=up_group, scale=scale)
    load_strict(net, sd, "CARN-M checkpoint" if efficient else "CARN checkpoint")
    return net.eval()


# Keys both variants carry (MeanShift convs are rare enough in other zoos to make this specific).
_FAMILY_KEYS = ("sub_mean.shifter.weight", "add_mean.shifter.weight", "entry.weight",
                "b1.c1.body.0.weight", "b1.b1.body.0.weight", "exit.weight")


def detect_carn_family(sd: StateDict, efficient: bool) -> bool:
    """True for the official layout of CARN (``efficient=False``) or CARN-M (``efficient=True``).

    The variants differ in their cascading blocks: CARN has three residual blocks ``b1..b3`` of two 3×3
    convs each, CARN-M a single efficient block ``b1`` whose third layer (``body.4``) is a 1×1 conv.
    """
    if not all(k in sd for k in _FAMILY_KEYS):
        return False
    has_pointwise = "b1.b1.body.4.weight" in sd
    has_three_units = "b1.b2.body.0.weight" in sd and "b1.b3.body.0.weight" in sd
    return has_pointwise and not has_three_units if efficient else has_three_units and not has_pointwise
