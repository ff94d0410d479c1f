"""Surgery on a user's own network, and effective-MAC counting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from amsr.core.cost import run_counting_macs
from amsr.core.errors import UnsupportedModelError
from amsr.io.images import read_rgb8, to_tensor
from amsr.masking.mask import MaskConfig
from amsr.models import load_model
from amsr.sparse.pixel import MaskedConv2d
from amsr.surgery import accelerate, find_identity_convs


class TinySR(nn.Module):
    """A user's model: head conv, two residual blocks, pixel-shuffle x2 tail."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
                                  for _ in range(2))
        self.fuse = nn.Conv2d(8, 8, 1)
        self.tail = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        for b in self.body:
            f = f + b(f)
        return self.tail(self.fuse(f))


def _net() -> TinySR:
    torch.manual_seed(0)
    return TinySR().eval()


def test_find_identity_convs_lists_the_body() -> None:
    assert find_identity_convs(_net()) == ["body.0.0", "body.0.2", "body.1.0", "body.1.2"]


def test_accelerate_user_model_with_patterns() -> None:
    net = _net()
    acc = accelerate(net, ["body.*.0", "body.*.2"], MaskConfig(dilation=0))
    masked = [n for n, m in acc.named_modules() if isinstance(m, MaskedConv2d)]
    assert masked == ["net.body.0.0", "net.body.0.2", "net.body.1.0", "net.body.1.2"]
    assert not any(isinstance(m, MaskedConv2d) for m in net.modules()), "the original must stay dense"
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert (acc(x, mask=torch.ones(1, 1, 16, 16)) - net(x)).abs().max() < 1e-5
        y = acc(x)
    assert y.shape == (1, 3, 32, 32)
    assert acc.last_mask is not None and 0 < float(acc.last_mask.mean()) < 1


@pytest.mark.parametrize("patterns, msg", [(["nothing.*"], "matches no module"), (["fuse"], "kernel"),
                                           (["tail.0"], "channels"), ([], "no sparse rules")])
def test_bad_rules_are_clear_errors(patterns: list[str], msg: str) -> None:
    with pytest.raises(UnsupportedModelError, match=msg):
        accelerate(_net(), patterns)


def test_dense_macs_follow_the_formula() -> None:
    net = _net()
    _, macs = run_counting_macs(net, torch.rand(1, 3, 10, 12))
    hw = 10 * 12
    expected = hw * 8 * 3 * 9 + 4 * hw * 8 * 8 * 9 + hw * 8 * 8 + hw * 12 * 8 * 9
    assert macs == expected


class _UserAttention(nn.Module):
    """A user's attention written with tensor ops (no module reports its cost): each form counts once."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form
        self.qkv = nn.Conv2d(4, 12, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(x).flatten(2).transpose(1, 2).chunk(3, dim=-1)  # n × hw × 4 each
        if self.form == "matmul":
            out = torch.softmax(q @ k.transpose(-2, -1), -1) @ v
        elif self.form == "einsum":
            out = torch.einsum("nij,njc->nic", torch.softmax(torch.einsum("nic,njc->nij", q, k), -1), v)
        elif self.form == "bmm":
            out = torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)), -1), v)
        else:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(n, c, h, w)


@pytest.mark.parametrize("form", ["matmul", "einsum", "bmm", "sdpa"])
def test_attention_matmuls_in_user_code_are_counted(form: str) -> None:
    """Issue #16: a user network's attention matmuls were not counted (50.6 vs ~175 GMACs). q·kᵀ and attn·v
    are hw·hw·c each; the 1×1 conv counts as a conv, once."""
    net = _UserAttention(form).eval()
    hw, c = 6 * 5, 4
    _, macs = run_counting_macs(net, torch.rand(2, 4, 6, 5))
    assert macs == 2 * (hw * 12 * 4 + 2 * hw * hw * c)


def test_zoo_attention_is_counted_once(weights_dir: Path) -> None:
    """The zoo's attention reports its matmuls itself (``extra_macs``); the function-level count adds nothing
    inside it: IMDTN's count is the conv/linear hooks plus the blocks' own matmuls, as before."""
    from amsr.core import cost
    from tests.conftest import weight_file

    model = load_model("imdtn", 4, weights=weight_file(weights_dir, "imdtn_x4.pth"))
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    for module in (model.dense(), model.accelerated(MaskConfig(dilation=1))):
        _, with_functions = run_counting_macs(module, x)
        original = cost._MatmulCounter.__torch_function__

        def silent(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN202 — the counter switched off
            return func(*args, **(kwargs or {}))

        cost._MatmulCounter.__torch_function__ = silent  # type: ignore[method-assign]
        try:
            _, hooks_only = run_counting_macs(module, x)
        finally:
            cost._MatmulCounter.__torch_function__ = original  # type: ignore[method-assign]
        assert with_functions == hooks_only > 0


def test_sparse_macs_scale_with_the_realised_mask() -> None:
    net = _net()
    acc = accelerate(net, ["body.*.0", "body.*.2"])
    x = torch.rand(1, 3, 10, 12)
    _, dense = run_counting_macs(net, x)
    mask = torch.zeros(1, 1, 10, 12)
    mask[..., :3, :] = 1  # 36 of 120 pixels
    _, sparse = run_counting_macs(_Fixed(acc, mask), x)
    body_dense = 4 * 120 * 8 * 8 * 9
    assert dense - sparse == body_dense - 4 * 36 * 8 * 8 * 9


class _Fixed(nn.Module):
    def __init__(self, acc: nn.Module, mask: torch.Tensor) -> None:
        super().__init__()
        self.acc, self.mask = acc, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.acc(x, mask=self.mask)


def test_dense_tail_gives_the_same_blended_output(weights_dir: Path, data_dir: Path) -> None:
    """``accelerated(sparse_tail=False)``: the tail runs densely, the blend keeps the same pixels, so the output is
    the sparse-tail output (what the ONNX export relies on)."""
    from amsr.operating_point import default_operating_point

    model = load_model("carn_m", 4, weights=weights_dir / "carn_m.pth")
    cfg = default_operating_point("carn_m", 4)
    x = to_tensor(read_rgb8(data_dir / "Set5" / "x4" / "LR" / "img_002.png"))[..., :40, :36]
    with torch.no_grad():
        sparse = model.accelerated(cfg)(x)
        dense = model.accelerated(cfg, sparse_tail=False)(x)
    assert (sparse - dense).abs().max().item() <= 1e-5


class _TwoResolutions(nn.Module):
    """A user's network with a 3×3 in==out conv on a half-resolution branch (a find_identity_convs candidate)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.lr_body = nn.Conv2d(8, 8, 3, padding=1)
        self.half_branch = nn.Conv2d(8, 8, 3, padding=1)
        self.tail = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        g = self.half_branch(torch.nn.functional.avg_pool2d(f, 2))
        f = self.lr_body(f) + torch.nn.functional.interpolate(g, size=f.shape[-2:])
        return self.tail(f)


def test_a_conv_at_another_resolution_is_refused_by_name() -> None:
    """Issue #16: the mask was silently resized onto convs at other resolutions (−17 to −18 dB); now the
    conv is named and refused, and the convs at the input's resolution still work."""
    torch.manual_seed(0)
    net = _TwoResolutions().eval()
    assert "half_branch" in find_identity_convs(net)
    x = torch.rand(1, 3, 16, 12)
    with pytest.raises(UnsupportedModelError, match=r"half_branch runs at 8×6 but the mask is 16×12"):
        accelerate(net, ["lr_body", "half_branch"], MaskConfig(dilation=1))(x)
    ok = accelerate(net, ["lr_body"], MaskConfig(dilation=1))
    with torch.no_grad():
        assert ok(x).shape == (1, 3, 32, 24)
