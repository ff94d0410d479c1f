"""FSRCNN(56, 12, 4) descriptor: the Y-channel checkpoints of yjn870/FSRCNN-pytorch.

The files are not on that repository's master branch: they were added in pull request #6 (commit
``597b52f``), which GitHub still serves by commit; the README's Dropbox links are the author's copies.
The files do not record their scale (the transposed conv's stride is not a weight), so ``build`` probes it:
a flat grey image must come out as bright as it went in (``flat_gain``).
"""

from __future__ import annotations

import re
from typing import cast

import torch
from torch import nn

from amsr.core.checkpoint import load_strict
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.zoo.descriptor import Architecture, SparseRules, StateDict, WeightFile, has_all
from amsr.zoo.fsrcnn_arch import FSRCNN, LumaSR

_URL = ("https://github.com/yjn870/FSRCNN-pytorch/raw/597b52f7e8118ea014c079d32193a712181e003b"
        "/weights/fsrcnn_x{s}.pth")
_SHA256 = {
    2: "1af70e2cbf0d11b942008d6c425e469e9fe275a68f3ac8b6c21e8672d6e67b69",
    3: "f65b55819c1258048bc8c1ca96f9e24bd4339f779951d7f928144c08e3868d75",
    4: "c15150d6787d487f38a68e66be5ec8a964182403af494e6a935fa03eeb56a630",
}

_detect = has_all("first_part.0.weight", "first_part.1.weight", "mid_part.0.weight", "last_part.weight")


def build(sd: StateDict, scale: int) -> nn.Module:
    """FSRCNN with ``sd`` loaded strictly, wrapped to take and return RGB (see ``LumaSR``)."""
    if scale not in (2, 3, 4):
        raise UnsupportedModelError(f"FSRCNN checkpoints exist for x2, x3 and x4, not x{scale}")
    for key in ("first_part.0.weight", "mid_part.0.weight"):
        if key not in sd:
            raise CheckpointError(f"FSRCNN state dict lacks {key!r}")
    d, channels = int(sd["first_part.0.weight"].shape[0]), int(sd["first_part.0.weight"].shape[1])
    if channels != 1:
        raise UnsupportedModelError(f"FSRCNN checkpoint takes {channels} channels; only Y-channel (1) files "
                                    "are supported")
    shrink = int(sd["mid_part.0.weight"].shape[0])
    # mid_part holds shrink + m mapping convs + expand, each followed by a PReLU: indices 0 … 2m + 3. The
    # highest index (not a count) sizes it, so that a missing layer in between is reported by name.
    last = max((int(m.group(1)) for k in sd if (m := re.match(r"mid_part\.(\d+)\.", k))), default=3)
    net = FSRCNN(scale=scale, channels=1, d=d, s=shrink, m=max((last - 3) // 2, 0))
    load_strict(net, sd, "FSRCNN checkpoint")
    _check_trained_scale(sd, net, scale)
    return LumaSR(net, scale).eval()


# The last layer is a transposed conv: each LR pixel adds its 9×9 kernel with stride s. Trained at stride t, the
# kernel's taps sum to ≈ t², so run at stride s a flat image comes out ≈ (t/s)² as bright. Official files at
# Y = 0.5: gain 1.000–1.002 at their own scale, 0.40–0.61 or 1.51–2.97 at the other two (x2/x3/x4, all six
# pairs): a tolerance of 0.1 leaves a 4× margin on both sides. Cost: one 24×24 forward (~5 ms).
_PROBE_Y = 0.5
_PROBE_LR = 24
_PROBE_MARGIN = 6  # LR px cropped per side: the 5×5 head and 9×9 tail see the zero padding there
_GAIN_TOL = 0.1


@torch.no_grad()
def flat_gain(net: FSRCNN) -> float:
    """Mean output / input of ``net`` on a flat ``_PROBE_Y`` image, away from the borders."""
    s = net.last_part.stride[0]
    y = net.eval()(torch.full((1, 1, _PROBE_LR, _PROBE_LR), _PROBE_Y))
    m = _PROBE_MARGIN * s
    return float(y[..., m:-m, m:-m].mean()) / _PROBE_Y


def _check_trained_scale(sd: StateDict, net: FSRCNN, scale: int) -> None:
    """``CheckpointError`` when ``net`` (``sd`` loaded at ``scale``) fails the flat-image probe and another scale
    passes it: positive evidence of the scale the file was trained for, not a guess."""
    gain = flat_gain(net)
    if abs(gain - 1.0) <= _GAIN_TOL:
        return
    fits = []
    for other in (2, 3, 4):
        if other != scale:
            # Both parts are nn.Sequential, whose items are plain Modules to the type checker.
            trial = FSRCNN(scale=other, channels=1, d=cast(nn.Conv2d, net.first_part[0]).out_channels,
                           s=cast(nn.Conv2d, net.mid_part[0]).out_channels, m=(len(net.mid_part) - 4) // 2)
            trial.load_state_dict(sd, strict=True)
            if abs(flat_gain(trial) - 1.0) <= _GAIN_TOL:
                fits.append(other)
    if not fits:  # passes at no scale (untrained, or an unusual fine-tune): nothing tells its scale
        return
    raise CheckpointError(f"this FSRCNN checkpoint upscales x{fits[0]}, not x{scale} (a flat grey image comes out "
                          f"{gain:.2f}× as bright at x{scale}, unchanged at x{fits[0]})")


ARCH = Architecture(
    id="fsrcnn",
    description="FSRCNN(56,12,4) on Y (Dong et al., ECCV 2016), github.com/yjn870/FSRCNN-pytorch",
    scales=(2, 3, 4),
    weights=tuple(WeightFile(scale=s, filename=f"fsrcnn_y_x{s}.pth", url=_URL.format(s=s), sha256=_SHA256[s])
                  for s in (2, 3, 4)),
    detect=_detect,
    build=build,
    # The m mapping convs (mid_part.2, .4, …); the build wrapper holds the network as ``net``.
    rules=SparseRules(convs=("net.mid_part.[2468]",)),
)
