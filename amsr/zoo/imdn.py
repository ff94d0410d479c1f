"""IMDN descriptor: the official Zheng222/IMDN checkpoints (``IMDN_x{2,3,4}.pth``, keys with ``module.``).

Not covered: ``IMDN_AS`` (strided ``fea_conv.0``/``fea_conv.2``), ``IMDN_RTC``/``IMDN_RTE`` and KAIR's
re-implementation (``model.N.*`` keys, e.g. the AIM 2019 challenge baseline); their layouts differ.
"""

from __future__ import annotations

import math
import re

from torch import nn

from amsr.core.checkpoint import load_strict
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.zoo.descriptor import Architecture, SparseRules, StateDict, WeightFile, has_all
from amsr.zoo.imdn_arch import IMDN

_URL = "https://github.com/Zheng222/IMDN/raw/master/checkpoints/IMDN_x{s}.pth"
_SHA256 = {
    2: "740b39653592bd3f49955a21cd9e16f2d37f2c413368cc09327601b8fbe42ce1",
    3: "11b1716a19bc16e5e353e1db798d476169338e631eb170c82d765559888cb028",
    4: "e660c38221147217a136debeb99eb304d62d9c0f73ac421ed66281b619719714",
}

# ``fea_conv.weight`` (a bare conv) and ``cca`` set IMDN apart from IMDN_AS (``fea_conv.0``) and IMDTN (``IMDTB*``).
_detect = has_all("fea_conv.weight", "IMDB1.c1.weight", "IMDB1.cca.conv_du.0.weight", "c.0.weight",
                  "LR_conv.weight", "upsampler.0.weight")


def _require(sd: StateDict, key: str) -> None:
    if key not in sd:
        raise CheckpointError(f"IMDN state dict lacks {key!r}")


def checkpoint_scale(sd: StateDict) -> int:
    """Scale the file was trained for: the last conv emits ``3·scale²`` channels before the pixel shuffle."""
    _require(sd, "upsampler.0.weight")
    n = int(sd["upsampler.0.weight"].shape[0])
    s = math.isqrt(n // 3)
    if s < 1 or 3 * s * s != n:
        raise CheckpointError(f"IMDN upsampler.0.weight has {n} output channels, not 3·scale²")
    return s


def build(sd: StateDict, scale: int) -> nn.Module:
    """IMDN with ``sd`` loaded strictly; ``UnsupportedModelError`` when ``sd`` was trained for another scale."""
    for key in ("fea_conv.weight", "c.0.weight"):
        _require(sd, key)
    have = checkpoint_scale(sd)
    if have != scale:
        raise UnsupportedModelError(f"this IMDN checkpoint is for x{have}, not x{scale}")
    channels = int(sd["fea_conv.weight"].shape[0])
    # Highest block index, so that a block with a missing key is reported by name in load_strict.
    blocks = [int(m.group(1)) for k in sd if (m := re.match(r"IMDB(\d+)\.", k))]
    if not blocks:
        raise CheckpointError("IMDN state dict has no IMDB blocks")
    # RGB in and out by contract: a file with other channel counts fails in load_strict with its shapes.
    model = IMDN(in_ch=3, out_ch=3, channels=channels, num_modules=max(blocks), scale=scale)
    load_strict(model, sd, "IMDN checkpoint")
    return model.eval()


ARCH = Architecture(
    id="imdn",
    description="IMDN (Hui et al., ACM MM 2019), github.com/Zheng222/IMDN",
    scales=(2, 3, 4),
    weights=tuple(WeightFile(scale=s, filename=f"imdn_x{s}.pth", url=_URL.format(s=s), sha256=_SHA256[s])
                  for s in (2, 3, 4)),
    detect=_detect,
    build=build,
    # Only c1 maps C→C; c2/c3 take 3C/4 channels and c4 emits C/4, so the identity is not defined for them.
    # Tiles never pay (T=8, first 7 Set14 images): ≈ 95 ms/img of data movement + Reorder vs ≈ 72 ms/img for
    # the 6 dense c1 convs (31 % of its MACs).
    # Unsafe because each IMDB's channel attention pools mean + std over the whole image: the skipped flat
    # area moves every gate (up to 0.67 on Photos2K img_004; with the dense gates −2.47 → −0.13 dB).
    rules=SparseRules(convs=("IMDB*.c1",), tail=lambda s: [("upsampler.0", 1)], tile_break_even=-1.0,
                      unsafe_training_free="on Photos2K its calibrated x4 point (d 6 / 3 with the high-frequency "
                      "floor, Set5/Set14 within 0.02 dB) lost 0.29 dB mean and 2.47 dB on the worst photo"),
)
