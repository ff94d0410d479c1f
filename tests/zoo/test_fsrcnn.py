"""FSRCNN (Y channel): official key layout round trip, the RGB wrapper, real checkpoints on Set5, error
paths and sparse rules."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from amsr.core.checkpoint import load_checkpoint
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.io.metrics import rgb_to_y
from amsr.zoo import get_architecture
from amsr.zoo.fsrcnn import ARCH
from amsr.zoo.fsrcnn_arch import FSRCNN, LumaSR
from amsr.zoo.imdn_arch import IMDN
from amsr.zoo.pan_arch import PAN
from tests.conftest import weight_file
from tests.zoo.checks import assert_official_psnr, assert_sha256_matches_shared_file, conv_rule_matches

# Set5 Y-PSNR of the shared files as measured for shared/README.md (the repository's README claims
# 37.12 / 33.22 / 30.50 with its own PIL-made LR images).
MEASURED = {2: 37.10, 3: 32.59, 4: 30.51}


def _official_sd(scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return FSRCNN(scale=scale).state_dict()


class _Bicubic(nn.Module):
    """Stand-in Y network that records its input."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.seen: torch.Tensor | None = None

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        self.seen = y
        return F.interpolate(y, scale_factor=self.scale, mode="bicubic", align_corners=False)


def test_registered() -> None:
    assert get_architecture("fsrcnn") is ARCH
    assert [w.filename for w in ARCH.weights] == ["fsrcnn_y_x2.pth", "fsrcnn_y_x3.pth", "fsrcnn_y_x4.pth"]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_round_trip_official_layout(tmp_path: Path, scale: int) -> None:
    torch.manual_seed(0)
    ref = FSRCNN(scale=scale).eval()
    path = tmp_path / f"fsrcnn_x{scale}.pth"
    torch.save(ref.state_dict(), path)  # the official files are plain state dicts
    sd = load_checkpoint(path)
    assert ARCH.detect(sd)
    model = ARCH.build(sd, scale)
    assert set(model.state_dict()) == {f"net.{k}" for k in sd}  # colour constants are not state
    x = torch.rand(2, 3, 12, 10)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, LumaSR(ref, scale)(x))
    assert out.shape == (2, 3, 12 * scale, 10 * scale)


def test_luma_wrapper_feeds_bt601_y_and_restores_rgb() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    net = _Bicubic(3)
    out = LumaSR(net, 3)(x)
    assert net.seen is not None
    # The network sees Y in [16/255, 235/255], as amsr.io.metrics (and the training data) define it.
    np.testing.assert_allclose(net.seen[0, 0].numpy(), rgb_to_y(img) / 255.0, atol=1e-6)
    # With bicubic on Y too, the colour round trip must give plain bicubic RGB.
    torch.testing.assert_close(out, F.interpolate(x, scale_factor=3, mode="bicubic", align_corners=False),
                               atol=1e-5, rtol=0)


def test_detect_rejects_other_layouts() -> None:
    for sd in (IMDN(scale=4).state_dict(), PAN(scale=4).state_dict()):
        assert not ARCH.detect(sd)


@pytest.mark.parametrize("name", ["imdn_x4.pth", "pan_x4.pth", "carn_m.pth", "smfanet_x4.pth"])
def test_detect_rejects_other_shared_checkpoints(weights_dir: Path, name: str) -> None:
    assert not ARCH.detect(load_checkpoint(weight_file(weights_dir, name)))


def test_sha256_matches_shared_file(weights_dir: Path) -> None:
    assert_sha256_matches_shared_file(ARCH, weights_dir, 4)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [2, 4])
def test_official_checkpoint_set5(data_dir: Path, weights_dir: Path, scale: int) -> None:
    assert_official_psnr(ARCH, data_dir, weights_dir, f"fsrcnn_y_x{scale}.pth", scale, MEASURED[scale])


@pytest.mark.parametrize("key", ["mid_part.5.weight", "mid_part.4.bias", "last_part.bias"])
def test_missing_key_is_named(key: str) -> None:
    sd = _official_sd(2)
    del sd[key]
    with pytest.raises(CheckpointError, match=re.escape(key)):
        ARCH.build(sd, 2)


def test_unexpected_and_misshaped_keys_are_named() -> None:
    sd = _official_sd(2)
    sd["last_part.weight_extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"last_part\.weight_extra"):
        ARCH.build(sd, 2)
    sd = _official_sd(2)
    sd["last_part.weight"] = torch.zeros(56, 1, 7, 7)
    with pytest.raises(CheckpointError, match=r"last_part\.weight"):
        ARCH.build(sd, 2)


def test_rgb_checkpoint_is_refused() -> None:
    torch.manual_seed(0)
    with pytest.raises(UnsupportedModelError, match="3 channels"):
        ARCH.build(FSRCNN(scale=2, channels=3).state_dict(), 2)


@pytest.mark.parametrize("scale", [1, 8])
def test_wrong_scale(scale: int) -> None:
    # Unsupported scales; a file of another supported scale is caught by the flat-image probe
    # (tests/test_hardening_files.py).
    with pytest.raises(UnsupportedModelError, match=f"x{scale}"):
        ARCH.build(_official_sd(4), scale)


def test_sparse_rules_select_body_3x3_convs() -> None:
    model = ARCH.build(_official_sd(3), 3)
    assert conv_rule_matches(ARCH, model) == {"net.mid_part.2", "net.mid_part.4", "net.mid_part.6", "net.mid_part.8"}
