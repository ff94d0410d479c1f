"""PAN: official key layout round trip, real checkpoints on Set5, error paths and sparse rules."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import torch

from amsr.core.checkpoint import load_checkpoint
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.zoo import get_architecture
from amsr.zoo.fsrcnn_arch import FSRCNN
from amsr.zoo.imdn_arch import IMDN
from amsr.zoo.pan import ARCH
from amsr.zoo.pan_arch import PAN
from tests.conftest import weight_file
from tests.zoo.checks import assert_official_psnr, assert_sha256_matches_shared_file, conv_rule_matches

# Set5 Y-PSNR of the official files (shared/README.md, equal to the paper's figures).
PUBLISHED = {2: 38.00, 3: 34.40, 4: 32.13}


def _official_sd(scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return PAN(scale=scale).state_dict()


def test_registered() -> None:
    assert get_architecture("pan") is ARCH
    assert [w.filename for w in ARCH.weights] == ["pan_x2.pth", "pan_x3.pth", "pan_x4.pth"]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_round_trip_official_layout(tmp_path: Path, scale: int) -> None:
    torch.manual_seed(0)
    ref = PAN(scale=scale).eval()
    path = tmp_path / f"PANx{scale}_DF2K.pth"
    torch.save(ref.state_dict(), path)  # the official files are plain state dicts
    sd = load_checkpoint(path)
    assert ARCH.detect(sd)
    model = ARCH.build(sd, scale)
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, ref(x))
    assert out.shape == (1, 3, 12 * scale, 10 * scale)


def test_hyperparameters_inferred_from_shapes() -> None:
    torch.manual_seed(0)
    ref = PAN(channels=16, up_channels=8, num_blocks=3, scale=2).eval()
    model = ARCH.build(ref.state_dict(), 2)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_detect_rejects_other_layouts() -> None:
    for sd in (IMDN(scale=4).state_dict(), FSRCNN(scale=3).state_dict()):
        assert not ARCH.detect(sd)


@pytest.mark.parametrize("name", ["imdn_x4.pth", "hit_srf_x4.pth", "craft_x4.pth", "fsrcnn_y_x4.pth"])
def test_detect_rejects_other_shared_checkpoints(weights_dir: Path, name: str) -> None:
    assert not ARCH.detect(load_checkpoint(weight_file(weights_dir, name)))


def test_sha256_matches_shared_file(weights_dir: Path) -> None:
    assert_sha256_matches_shared_file(ARCH, weights_dir, 4)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [3, 4])
def test_official_checkpoint_set5(data_dir: Path, weights_dir: Path, scale: int) -> None:
    assert_official_psnr(ARCH, data_dir, weights_dir, f"pan_x{scale}.pth", scale, PUBLISHED[scale])


@pytest.mark.parametrize("key", ["SCPA_trunk.7.PAConv.k4.weight", "SCPA_trunk.15.conv3.weight", "att2.conv.bias"])
def test_missing_key_is_named(key: str) -> None:
    sd = _official_sd(4)
    del sd[key]
    with pytest.raises(CheckpointError, match=re.escape(key)):
        ARCH.build(sd, 4)


def test_unexpected_and_misshaped_keys_are_named() -> None:
    sd = _official_sd(2)
    sd["SCPA_trunk.0.k1.0.bias"] = torch.zeros(20)  # the official k1 conv has no bias
    with pytest.raises(CheckpointError, match=r"SCPA_trunk\.0\.k1\.0\.bias"):
        ARCH.build(sd, 2)
    sd = _official_sd(2)
    sd["HRconv1.weight"] = torch.zeros(24, 24, 1, 1)
    with pytest.raises(CheckpointError, match=r"HRconv1\.weight"):
        ARCH.build(sd, 2)


@pytest.mark.parametrize(("have", "want"), [(4, 2), (4, 3), (2, 4), (3, 8)])
def test_wrong_scale(have: int, want: int) -> None:
    with pytest.raises(UnsupportedModelError, match=f"x{want}"):
        ARCH.build(_official_sd(have), want)


def test_sparse_rules_select_body_3x3_convs() -> None:
    model = ARCH.build(_official_sd(4), 4)
    selected = conv_rule_matches(ARCH, model)
    for pattern in ARCH.rules.convs:
        assert sum(fnmatchcase(n, pattern) for n in selected) == 16, pattern
    assert len(selected) == 48
    assert not any(n.startswith(("conv_first", "trunk_conv", "upconv", "HRconv", "conv_last")) for n in selected)
