"""CARN (full): cascading residual network, one multi-scale checkpoint for ×2/×3/×4."""

from __future__ import annotations

from torch import nn

from amsr.zoo.carn_arch import SCALES, build_carn, carn_tail, detect_carn_family
from amsr.zoo.descriptor import Architecture, SizeRequirements, SparseRules, StateDict, WeightFile

_URL = "https://github.com/nmhkahn/CARN-pytorch/raw/master/checkpoint/carn.pth"


def _detect(sd: StateDict) -> bool:
    return detect_carn_family(sd, efficient=False)


def _build(sd: StateDict, scale: int) -> nn.Module:
    return build_carn(sd, scale, efficient=False)


ARCH = Architecture(
    id="carn",
    description="CARN (Ahn et al., ECCV 2018), multi-scale x2/x3/x4; nmhkahn/CARN-pytorch",
    scales=SCALES,
    # One multi-scale file serves every scale. Its sha256 is not pinned (the file is not in the shared
    # weights, so it could not be hashed here): "" means the download is not verified.
    weights=tuple(WeightFile(scale=s, filename="carn.pth", url=_URL, sha256="") for s in SCALES),
    detect=_detect,
    build=_build,
    size=SizeRequirements(),
    # The two 3x3 convs of each of the 9 residual blocks (3 cascading blocks x b1..b3): 18 convs.
    rules=SparseRules(convs=("b?.b?.body.0", "b?.b?.body.2"), tail=carn_tail),
)
