"""CARN and CARN-M: official key layout, strict loading, detection, sparse rules and Set5 accuracy."""

from __future__ import annotations

import hashlib
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import torch
from torch import nn

from amsr.core.checkpoint import load_checkpoint
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.zoo import get_architecture
from amsr.zoo.carn_arch import CARN
from amsr.zoo.descriptor import Architecture, StateDict
from tests.conftest import mean_psnr, weight_file

CARN_ARCH = get_architecture("carn")
CARN_M_ARCH = get_architecture("carn_m")


def _official_keys(efficient: bool) -> dict[str, tuple[int, ...]]:
    """Key → shape of the official multi-scale checkpoints, written out independently of carn_arch
    (from nmhkahn/CARN-pytorch carn.py / carn_m.py / ops.py; CARN-M uses group=4)."""
    g = 4 if efficient else 1
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        shapes[f"{name}.bias"] = (cout,)

    conv("sub_mean.shifter", 3, 3, 1)
    conv("add_mean.shifter", 3, 3, 1)
    conv("entry", 64, 3, 3)
    for i in (1, 2, 3):
        if efficient:  # one shared efficient block per cascading block
            conv(f"b{i}.b1.body.0", 64, 64 // g, 3)
            conv(f"b{i}.b1.body.2", 64, 64 // g, 3)
            conv(f"b{i}.b1.body.4", 64, 64, 1)
        else:
            for j in (1, 2, 3):
                conv(f"b{i}.b{j}.body.0", 64, 64, 3)
                conv(f"b{i}.b{j}.body.2", 64, 64, 3)
        for j in (1, 2, 3):
            conv(f"b{i}.c{j}.body.0", 64, 64 * (j + 1), 1)
    for j in (1, 2, 3):
        conv(f"c{j}.body.0", 64, 64 * (j + 1), 1)
    conv("upsample.up2.body.0", 256, 64 // g, 3)
    conv("upsample.up3.body.0", 576, 64 // g, 3)
    conv("upsample.up4.body.0", 256, 64 // g, 3)
    conv("upsample.up4.body.3", 256, 64 // g, 3)
    conv("exit", 3, 64, 3)
    return shapes


def _random_net(efficient: bool) -> CARN:
    torch.manual_seed(0)
    g = 4 if efficient else 1
    net = CARN(efficient=efficient, body_group=g, up_group=g).eval()
    with torch.no_grad():  # keep activations O(1) through the deep cascade so the comparison is meaningful
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and m.weight.requires_grad:
                m.weight.mul_(0.5)
    return net


@pytest.fixture(params=[False, True], ids=["carn", "carn_m"])
def variant(request: pytest.FixtureRequest) -> tuple[bool, Architecture, Architecture]:
    """(efficient, its descriptor, the other variant's descriptor)."""
    efficient = bool(request.param)
    return (efficient, CARN_M_ARCH, CARN_ARCH) if efficient else (efficient, CARN_ARCH, CARN_M_ARCH)


def _saved(tmp_path: Path, sd: StateDict, name: str = "net.pth") -> StateDict:
    torch.save(sd, tmp_path / name)
    return load_checkpoint(tmp_path / name)


@torch.no_grad()
def test_random_checkpoint_roundtrip(tmp_path: Path, variant: tuple[bool, Architecture, Architecture]) -> None:
    efficient, arch, other = variant
    net = _random_net(efficient)
    sd = net.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == _official_keys(efficient)
    loaded = _saved(tmp_path, sd)
    assert arch.detect(loaded)
    assert not other.detect(loaded)
    x = torch.rand(1, 3, 9, 11)
    for scale in arch.scales:
        built = arch.build(loaded, scale)
        y = built(x)
        assert y.shape == (1, 3, 9 * scale, 11 * scale)
        assert torch.equal(y, net(x, scale))
        assert y.std() > 1e-3  # not a degenerate constant image


def test_real_carn_m_layout_and_sha(weights_dir: Path) -> None:
    path = weight_file(weights_dir, "carn_m.pth")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CARN_M_ARCH.weight_file(4).sha256
    sd = load_checkpoint(path)
    assert {k: tuple(v.shape) for k, v in sd.items()} == _official_keys(efficient=True)
    assert CARN_M_ARCH.detect(sd)
    assert not CARN_ARCH.detect(sd)


@pytest.mark.slow
@pytest.mark.parametrize(("scale", "expected"), [(2, 37.68), (4, 31.88)])
def test_real_carn_m_set5_psnr(weights_dir: Path, data_dir: Path, scale: int, expected: float) -> None:
    model = CARN_M_ARCH.build(load_checkpoint(weight_file(weights_dir, "carn_m.pth")), scale)
    assert mean_psnr(model, data_dir, "Set5", scale) == pytest.approx(expected, abs=0.03)


@pytest.mark.parametrize(
    ("key", "change"),
    [("b2.b1.body.2.weight", "shape"), ("upsample.up3.body.0.bias", "drop"), ("c2.body.0.weight", "drop")],
)
def test_mismatched_checkpoint_names_key(tmp_path: Path, variant: tuple[bool, Architecture, Architecture],
                                         key: str, change: str) -> None:
    efficient, arch, _ = variant
    sd = _random_net(efficient).state_dict()
    if change == "shape":
        sd[key] = torch.zeros(*sd[key].shape[:-1], sd[key].shape[-1] + 2)
    else:
        del sd[key]
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        arch.build(_saved(tmp_path, sd), 4)


def test_sparse_rules_select_all_body_3x3_convs(variant: tuple[bool, Architecture, Architecture]) -> None:
    efficient, arch, _ = variant
    model = arch.build(_random_net(efficient).state_dict(), 2)
    modules = dict(model.named_modules())
    matched: set[str] = set()
    for pattern in arch.rules.convs:
        hits = [name for name in modules if fnmatchcase(name, pattern)]
        assert hits, f"pattern {pattern!r} matches nothing"
        matched.update(hits)
    for name in matched:
        m = modules[name]
        assert isinstance(m, nn.Conv2d), name
        assert m.kernel_size == (3, 3) and m.stride == (1, 1) and m.dilation == (1, 1), name
        assert m.in_channels == m.out_channels, name
    # Complete: every same-width 3x3 conv of the net is a body conv, and all of them are selected
    # (the entry, exit and upsampler convs change the channel count).
    same_width = {n for n, m in modules.items()
                  if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.in_channels == m.out_channels}
    assert matched == same_width
    assert len(matched) == (6 if efficient else 18)


def test_unsupported_scale(variant: tuple[bool, Architecture, Architecture]) -> None:
    efficient, arch, _ = variant
    sd = _random_net(efficient).state_dict()
    with pytest.raises(UnsupportedModelError):
        arch.build(sd, 5)
    with pytest.raises(UnsupportedModelError):
        arch.weight_file(5)


def test_descriptors() -> None:
    for arch, name in ((CARN_ARCH, "carn.pth"), (CARN_M_ARCH, "carn_m.pth")):
        assert arch.scales == (2, 3, 4)
        assert [w.scale for w in arch.weights] == [2, 3, 4]
        assert {w.filename for w in arch.weights} == {name}
        assert all(w.url.endswith(f"/checkpoint/{name}") for w in arch.weights)
    assert CARN_ARCH.weight_file(2).sha256 == ""  # not pinned: the file was not available to hash
