"""IMDN: official key layout round trip, real checkpoints on Set5, error paths and sparse rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from amsr.core.checkpoint import load_checkpoint
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.zoo import get_architecture
from amsr.zoo.fsrcnn_arch import FSRCNN
from amsr.zoo.imdn import ARCH
from amsr.zoo.imdn_arch import IMDN
from amsr.zoo.pan_arch import PAN
from tests.conftest import weight_file
from tests.zoo.checks import assert_official_psnr, assert_sha256_matches_shared_file, conv_rule_matches

# Set5 Y-PSNR of the official files (shared/README.md, equal to the paper's figures).
PUBLISHED = {2: 38.00, 3: 34.36, 4: 32.21}


def _official_sd(scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return IMDN(scale=scale).state_dict()


def _save_official(tmp_path: Path, sd: dict[str, torch.Tensor]) -> Path:
    """Save as the authors did: a DataParallel state dict (``module.`` prefix)."""
    path = tmp_path / "IMDN.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    return path


def test_registered() -> None:
    assert get_architecture("imdn") is ARCH
    assert [w.filename for w in ARCH.weights] == ["imdn_x2.pth", "imdn_x3.pth", "imdn_x4.pth"]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_round_trip_official_layout(tmp_path: Path, scale: int) -> None:
    torch.manual_seed(0)
    ref = IMDN(scale=scale).eval()
    sd = load_checkpoint(_save_official(tmp_path, ref.state_dict()))
    assert not any(k.startswith("module.") for k in sd)
    assert ARCH.detect(sd)
    model = ARCH.build(sd, scale)
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, ref(x))
    assert out.shape == (1, 3, 12 * scale, 10 * scale)


def test_hyperparameters_inferred_from_shapes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = IMDN(channels=32, num_modules=3, scale=2).eval()
    model = ARCH.build(load_checkpoint(_save_official(tmp_path, ref.state_dict())), 2)
    assert isinstance(model, IMDN) and model.num_modules == 3
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_detect_rejects_other_layouts() -> None:
    others = [PAN(scale=4).state_dict(), FSRCNN(scale=3).state_dict()]
    # IMDN_AS (strided two-conv stem) is a different network with the same block names.
    as_layout = {("fea_conv.0." + k[len("fea_conv."):] if k.startswith("fea_conv.") else k): v
                 for k, v in _official_sd(4).items()}
    for sd in [*others, as_layout]:
        assert not ARCH.detect(sd)


@pytest.mark.parametrize("name", ["imdn_aim2019_baseline_x4.pth", "imdtn_x4.pth", "pan_x4.pth", "carn_m.pth"])
def test_detect_rejects_other_shared_checkpoints(weights_dir: Path, name: str) -> None:
    assert not ARCH.detect(load_checkpoint(weight_file(weights_dir, name)))


def test_sha256_matches_shared_file(weights_dir: Path) -> None:
    assert_sha256_matches_shared_file(ARCH, weights_dir, 4)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [3, 4])
def test_official_checkpoint_set5(data_dir: Path, weights_dir: Path, scale: int) -> None:
    assert_official_psnr(ARCH, data_dir, weights_dir, f"imdn_x{scale}.pth", scale, PUBLISHED[scale])


@pytest.mark.parametrize("key", ["IMDB3.c2.bias", "IMDB3.c1.weight", "IMDB6.cca.conv_du.2.weight"])
def test_missing_key_is_named(key: str) -> None:
    sd = _official_sd(2)
    del sd[key]
    with pytest.raises(CheckpointError, match=re.escape(key)):
        ARCH.build(sd, 2)


def test_unexpected_and_misshaped_keys_are_named() -> None:
    sd = _official_sd(2)
    sd["IMDB1.c9.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"IMDB1\.c9\.weight"):
        ARCH.build(sd, 2)
    sd = _official_sd(2)
    sd["LR_conv.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(CheckpointError, match=r"LR_conv\.weight"):
        ARCH.build(sd, 2)


def test_missing_upsampler_is_a_checkpoint_error() -> None:
    sd = _official_sd(2)
    del sd["upsampler.0.weight"]
    with pytest.raises(CheckpointError, match=r"upsampler\.0\.weight"):
        ARCH.build(sd, 2)


@pytest.mark.parametrize(("have", "want"), [(4, 2), (2, 3), (3, 4)])
def test_wrong_scale(have: int, want: int) -> None:
    with pytest.raises(UnsupportedModelError, match=f"x{have}"):
        ARCH.build(_official_sd(have), want)


def test_sparse_rules_select_body_3x3_convs() -> None:
    model = ARCH.build(_official_sd(4), 4)
    assert conv_rule_matches(ARCH, model) == {f"IMDB{i}.c1" for i in range(1, 7)}
