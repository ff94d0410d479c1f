"""CARN-M: the mobile CARN (efficient residual blocks with group-4 convs, weights shared within each
cascading block), one multi-scale checkpoint for ×2/×3/×4."""

from __future__ import annotations

from torch import nn

from amsr.zoo.carn_arch import SCALES, build_carn, carn_tail, detect_carn_family
from amsr.zoo.descriptor import Architecture, SizeRequirements, SparseRules, StateDict, WeightFile

_URL = "https://github.com/nmhkahn/CARN-pytorch/raw/master/checkpoint/carn_m.pth"
_SHA256 = "d48a759a84509351facb6b7c6d5bd6edec98b98519b8c464ee4ab44d2ba964ff"


def _detect(sd: StateDict) -> bool:
    return detect_carn_family(sd, efficient=True)


def _build(sd: StateDict, scale: int) -> nn.Module:
    return build_carn(sd, scale, efficient=True)


ARCH = Architecture(
    id="carn_m",
    description="CARN-M (Ahn et al., ECCV 2018), mobile multi-scale x2/x3/x4; nmhkahn/CARN-pytorch",
    scales=SCALES,
    weights=tuple(WeightFile(scale=s, filename="carn_m.pth", url=_URL, sha256=_SHA256) for s in SCALES),
    detect=_detect,
    build=_build,
    size=SizeRequirements(),
    # The two grouped 3x3 convs of the one efficient block per cascading block: 6 modules, but each runs
    # three times per forward (CARN-M reuses b1 for all three units of a cascading block).
    # Tiles never pay: their stages' fixed cost (Pad/Transpose/ScatterND/Slice of the full map, plus the NCHWc
    # Reorder nodes onnxruntime inserts around every non-conv stage) exceeds what the cheap grouped convs cost
    # dense (Set14 x4, T=8: sparse stages 1162 ms/img + 717 ms/img of extra Reorder vs ≤ 770 ms/img for the 18
    # dense grouped convs they replace).
    rules=SparseRules(convs=("b?.b1.body.0", "b?.b1.body.2"), tail=carn_tail, tile_break_even=-1.0),
)
