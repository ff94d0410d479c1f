"""PAN descriptor: the official zhaohengyuan1/PAN checkpoints (``PANx{2,3,4}_DF2K.pth``, plain state dicts)."""

from __future__ import annotations

import re

from torch import nn

from amsr.core.checkpoint import load_strict
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.zoo.descriptor import Architecture, SparseRules, StateDict, WeightFile, has_all
from amsr.zoo.pan_arch import PAN

_URL = "https://github.com/zhaohengyuan1/PAN/raw/master/experiments/pretrained_models/PANx{s}_DF2K.pth"
_SHA256 = {
    2: "fcf8ed48656abbaae46309ee91745684b80235a9c8b37a2d8fb0715a3ad3f00f",
    3: "86491751d73645a8816a0d6ec62ccde6b22ce5da930e36b3b87f5437167fbc89",
    4: "739fab99ee7b7058dab4d1b84aa2869bb9fc3995a1c08789c20355bee943833c",
}

_detect = has_all("conv_first.weight", "SCPA_trunk.0.PAConv.k3.weight", "trunk_conv.weight",
                  "upconv1.weight", "att1.conv.weight", "conv_last.weight")


def build(sd: StateDict, scale: int) -> nn.Module:
    """PAN with ``sd`` loaded strictly.

    The x4 files carry a second upsampling stage (``upconv2``…); x2 and x3 files have identical shapes, so
    only x4 versus x2/x3 can be checked here.
    """
    if scale not in (2, 3, 4):
        raise UnsupportedModelError(f"PAN exists for x2, x3 and x4, not x{scale}")
    for key in ("conv_first.weight", "upconv1.weight"):
        if key not in sd:
            raise CheckpointError(f"PAN state dict lacks {key!r}")
    two_stage = "upconv2.weight" in sd
    if two_stage != (scale == 4):
        have = "x4" if two_stage else "x2 or x3"
        raise UnsupportedModelError(f"this PAN checkpoint is for {have}, not x{scale}")
    channels = int(sd["conv_first.weight"].shape[0])
    up_channels = int(sd["upconv1.weight"].shape[0])
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"SCPA_trunk\.(\d+)\.", k))}
    if not blocks:
        raise CheckpointError("PAN state dict has no SCPA_trunk blocks")
    model = PAN(in_ch=3, out_ch=3, channels=channels, up_channels=up_channels, num_blocks=max(blocks) + 1,
                scale=scale)
    load_strict(model, sd, "PAN checkpoint")
    return model.eval()


def _tail(scale: int) -> list[tuple[str, int]]:
    """PAN's tail convs (``SparseRules.tail``): upsampling convs, pixel attention and HR convs per stage."""
    if scale == 4:
        return [("upconv1", 2), ("att1.conv", 2), ("HRconv1", 2), ("upconv2", 4), ("att2.conv", 4),
                ("HRconv2", 4), ("conv_last", 4)]
    return [("upconv1", scale), ("att1.conv", scale), ("HRconv1", scale), ("conv_last", scale)]


ARCH = Architecture(
    id="pan",
    description="PAN (Zhao et al., ECCV-W 2020), github.com/zhaohengyuan1/PAN",
    scales=(2, 3, 4),
    weights=tuple(WeightFile(scale=s, filename=f"pan_x{s}.pth", url=_URL.format(s=s), sha256=_SHA256[s])
                  for s in (2, 3, 4)),
    detect=_detect,
    build=build,
    # The three half-width 3×3 convs of every SCPA block; the 1×1 convs and the HR-resolution upsampler are not.
    # Tiles never pay: x4 default, T=16, Photos2K: the tile network measured 1.35–1.69× dense on every image it
    # ran, even at density 0.03–0.22 (gmacs_ratio 0.68–0.78; results/bench/photos/pan_x4_photos2k_default_auto.json).
    # unsafe_training_free: measured on a 120×200 LR crop of img_002 (results §3), where CARN-M and IMDN keep
    # 56–59 dB against dense; Set5/Set14 held 0.02 dB (their masks are 0.9 full).
    rules=SparseRules(convs=("SCPA_trunk.*.k1.0", "SCPA_trunk.*.PAConv.k3", "SCPA_trunk.*.PAConv.k4"), tail=_tail,
                      tile_break_even=-1.0,
                      unsafe_training_free="its skipped features diverge where the mask is sparse: 1e13 on the flat "
                      "sky of a Photos2K crop (img_002), 15–27 dB lost there at every blend from d 5 / 2 to 10 / 6, "
                      "18.4 dB on the worst photo"),
)
