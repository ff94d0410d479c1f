"""``amsr.user_model`` / ``plan_acceleration``: a user's own network as a ``LoadedModel``, with a plan that says
what was made sparse and why the rest was not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import amsr
from amsr.core.errors import UnsupportedModelError
from amsr.masking.mask import MaskConfig
from amsr.sparse.pixel import MaskedConv2d
from amsr.sparse.window import MaskedSwinBlock


class Branchy(nn.Module):
    """[0, 255] in and out, x2: body convs at LR, a conv on a half-resolution branch, a 3→3 conv at HR, a 1×1
    fuse and a conv that forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.branch = nn.Conv2d(8, 8, 3, padding=1)
        self.fuse = nn.Conv2d(16, 8, 1)
        self.up = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2))
        self.hr = nn.Conv2d(3, 3, 3, padding=1)
        self.unused = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(self.head(x / 255))
        g = F.interpolate(self.branch(F.avg_pool2d(f, 2)), size=f.shape[-2:])
        return self.hr(self.up(self.fuse(torch.cat([f, g], 1)))) * 255


def _textured() -> torch.Tensor:
    x = torch.full((1, 3, 32, 40), 0.5)
    x[..., 4:16, 6:30] = torch.rand(3, 12, 24, generator=torch.Generator().manual_seed(0))
    return x


def test_plan_takes_the_lr_convs_and_says_why_the_others_stay_dense() -> None:
    torch.manual_seed(0)
    model, plan = amsr.user_model(Branchy(), scale=2, input_range=255)
    assert plan.convs == ("body.0", "body.2")
    reasons = dict(plan.refused)
    assert "runs at 24×24" in reasons["branch"] and "the mask's resolution" in reasons["branch"]
    assert "runs at 96×96" in reasons["hr"]
    assert reasons["unused"] == "not called by forward"
    assert "3→8 channels" in reasons["head"] and "8→12 channels" in reasons["up.0"]
    assert "fuse" not in reasons  # 1×1 convs are not listed
    assert "dense: branch: runs at 24×24" in plan.summary()
    acc = model.accelerated(MaskConfig(dilation=1))
    masked = [n for n, m in acc.named_modules() if isinstance(m, MaskedConv2d)]
    assert [n.rsplit("net.", 1)[-1] for n in masked] == ["body.0", "body.2"]
    with torch.no_grad():  # runs, with the half-resolution branch dense (no resized mask: surgery would refuse it)
        y = acc(_textured())
    assert y.shape == (1, 3, 64, 80)


def test_input_range_maps_unit_input_to_the_networks_range() -> None:
    torch.manual_seed(0)
    net = Branchy().eval()
    model, _ = amsr.user_model(net, scale=2, input_range=255)
    x = _textured()
    with torch.no_grad():
        torch.testing.assert_close(model.dense()(x), net(x * 255) / 255)


def test_rules_in_the_users_own_names() -> None:
    model, _ = amsr.user_model(Branchy(), scale=2, input_range=255, rules=amsr.SparseRules(convs=("body.2",)))
    acc = model.accelerated(MaskConfig(dilation=1))
    assert sum(isinstance(m, MaskedConv2d) for m in acc.modules()) == 1


def test_nothing_to_accelerate_is_one_clear_error() -> None:
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2))
    with pytest.raises(UnsupportedModelError, match="nothing amsr can make sparse") as e:
        amsr.user_model(net, scale=2)
    assert "\n" not in str(e.value)


def test_window_blocks_are_found_and_their_convs_left_to_the_block() -> None:
    from tests.onnx_exports import tiny_swinir

    padded = tiny_swinir("classical")
    net, size = padded.net, amsr.SizeRequirements(multiple_of=padded.net.window_size, pad_mode="reflect")
    model, plan = amsr.user_model(net, scale=2, size=size)
    assert plan.windows and all(".blocks." in w for w in plan.windows)
    assert not any(c.startswith(w + ".") for c in plan.convs for w in plan.windows)
    acc = model.accelerated(MaskConfig(dilation=1))
    assert sum(isinstance(m, MaskedSwinBlock) for m in acc.modules()) == len(plan.windows)
    with torch.no_grad():
        assert acc(_textured()).shape == (1, 3, 64, 80)


def test_public_names_are_not_shadowed_by_submodules() -> None:
    """Importing every submodule (as pkgutil or a test does) must leave each public name what it was."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(amsr.__path__):
        assert info.name not in amsr._API, f"amsr.{info.name} is both a public name and a submodule"
        importlib.import_module(f"amsr.{info.name}")
    assert callable(amsr.user_model) and not isinstance(amsr.user_model, type(amsr))


class GlobalContext(nn.Module):
    """Three 3×3 convs (radius 3), optionally scaled by a channel attention over the whole map."""

    def __init__(self, pooled: bool) -> None:
        super().__init__()
        self.pooled = pooled
        self.convs = nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x)
        if self.pooled:
            y = y * torch.sigmoid(y.mean(dim=(2, 3), keepdim=True))
        return F.interpolate(y, scale_factor=2.0, mode="nearest")


@pytest.mark.parametrize("pooled", [False, True])
def test_plan_measures_the_receptive_radius_and_flags_a_global_op(pooled: bool) -> None:
    torch.manual_seed(0)
    _, plan = amsr.user_model(GlobalContext(pooled), scale=2)
    assert plan.radius_limit == 46
    if pooled:
        assert plan.receptive_radius is None
        assert "or a global op (pooling, image statistics): tiled output will differ" in plan.summary()
    else:
        assert plan.receptive_radius == 3
        assert "receptive radius: 3 LR px" in plan.summary()
