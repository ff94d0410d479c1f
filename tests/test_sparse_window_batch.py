"""Window selection for a user's window-local block through a ``WindowAdapter`` (``amsr.sparse.window_batch``):
a DITN-shaped network whose attention stack runs on a batch of 4×4 patches."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import amsr
from amsr.core.cost import run_counting_macs
from amsr.masking.mask import MaskConfig
from amsr.models import unwrap_accelerated
from amsr.sparse.window_batch import BatchedWindows, MaskedWindowBatch

P = 4


class PatchAttention(nn.Module):
    """Channel attention over the pixels of each patch, then a 3×3 conv inside the patch; residual. Written
    like DITN's (``view(b, c, -1)``), so an empty batch of patches would fail."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(c, 3 * c)
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x.view(b, c, -1).transpose(1, 2)).transpose(1, 2).chunk(3, dim=1)
        attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(1, 2)).softmax(dim=-1)
        return x + self.conv((attn @ v).view(b, c, h, w))


class TinyPatchSR(nn.Module):
    """x2; ``patches`` runs on the map cut into P×P patches (the batch), ``coarse`` on a half-resolution map
    cut the same way, ``mix`` is a depth-wise 3×3 on the whole map."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.patches = nn.Sequential(PatchAttention(c), PatchAttention(c))
        self.coarse = PatchAttention(c)
        self.mix = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.up = nn.Sequential(nn.Conv2d(c, 12, 3, padding=1), nn.PixelShuffle(2))

    @staticmethod
    def cut(x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.reshape(b, c, h // P, P, w // P, P).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, P, P)

    @staticmethod
    def join(t: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
        c = t.shape[1]
        return t.reshape(b, h // P, w // P, c, P, P).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        b, _, h, w = f.shape
        f = self.join(self.patches(self.cut(f)), b, h, w)
        g = F.avg_pool2d(f, 2)
        g = self.join(self.coarse(self.cut(g)), b, h // 2, w // 2)
        f = f + self.mix(f) + F.interpolate(g, scale_factor=2.0)
        return self.up(f)


SIZE = amsr.SizeRequirements(multiple_of=2 * P)


def _model(windows: dict[str, amsr.WindowAdapter] | None = None) -> tuple[amsr.LoadedModel, amsr.AccelerationPlan]:
    torch.manual_seed(0)
    return amsr.user_model(TinyPatchSR(), scale=2, size=SIZE, windows=windows or {"patches": BatchedWindows()},
                           rules=None)


def _image(flat: bool = False) -> torch.Tensor:
    x = torch.full((1, 3, 24, 32), 0.4)
    if not flat:
        x[..., 2:11, 3:15] = torch.rand(3, 9, 12, generator=torch.Generator().manual_seed(1))
    return x


def test_plan_takes_the_named_window_block_and_refuses_what_does_not_tile_the_mask() -> None:
    _, plan = _model({"patches": BatchedWindows(), "coarse": BatchedWindows(), "up": BatchedWindows()})
    assert [n for n, _ in plan.adapted] == ["patches"]
    reasons = dict(plan.refused)
    assert "does not tile" in reasons["coarse"]
    assert reasons["up"] == "called on the whole 48×48 map, not on a batch of windows"
    assert "depth-wise" in reasons["mix"]
    assert "patches (BatchedWindows)" in plan.summary()
    assert not any(c.startswith("patches.") for c in plan.convs)  # the block is masked as a whole


def test_a_pattern_that_matches_nothing_is_one_clear_error() -> None:
    with pytest.raises(amsr.UnsupportedModelError, match="rule pattern 'nope' matches no module"):
        _model({"nope": BatchedWindows()})


@torch.no_grad()
def test_selected_windows_are_computed_and_the_others_pass_through() -> None:
    model, _ = _model()
    x = _image()
    sparse = model.accelerated(MaskConfig(dilation=1, window_threshold=0.5))
    reference = model.accelerated(MaskConfig(dilation=1, window_threshold=0.5), mode="dense")
    torch.testing.assert_close(sparse(x), reference(x), rtol=0, atol=1e-5)
    layer = next(m for m in unwrap_accelerated(sparse).modules() if isinstance(m, MaskedWindowBatch))
    assert 0 < layer.last_selected < layer.last_total == (24 // P) * (32 // P)

    seen: dict[str, torch.Tensor] = {}
    layer.register_forward_hook(lambda m, a, y: seen.update(x=a[0], y=y, selected=m.selected(a[0])))
    sparse(x)
    selected = seen["selected"]
    torch.testing.assert_close(seen["y"][~selected], seen["x"][~selected], rtol=0, atol=0)
    assert not torch.allclose(seen["y"][selected], seen["x"][selected])
    # threshold 0: every window, i.e. the block as the network runs it
    everything = model.accelerated(MaskConfig(dilation=1, window_threshold=0.0))
    layer_all = next(m for m in unwrap_accelerated(everything).modules() if isinstance(m, MaskedWindowBatch))
    everything(x)
    assert layer_all.last_computed == layer_all.last_total


@torch.no_grad()
def test_effective_macs_drop_by_the_skipped_windows_cost() -> None:
    model, _ = _model()
    x = _image()
    _, dense = run_counting_macs(model.dense(), x)
    all_windows = model.accelerated(MaskConfig(dilation=1, window_threshold=0.0))
    _, every = run_counting_macs(all_windows, x)
    assert every == dense  # the counted block on every window = the dense network's count
    none = model.accelerated(MaskConfig(dilation=1, window_threshold=1.5))
    _, skipped = run_counting_macs(none, x)
    # the whole patch stack (2 × (qkv + two matmuls + 3×3 conv) on every pixel) is gone
    c, pixels = 8, 24 * 32
    block = 2 * pixels * (c * 3 * c + 2 * c * c + 9 * c * c)
    assert dense - skipped == block


@torch.no_grad()
def test_tokens_layout_selects_the_same_windows() -> None:
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :4] = 1
    nchw = BatchedWindows("nchw").window_means(mask, torch.zeros(4, 3, 4, 4))
    tokens = BatchedWindows("tokens").window_means(mask, torch.zeros(4, 16, 3))
    assert nchw.tolist() == tokens.tolist() == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="layout"):
        BatchedWindows("nhwc")  # type: ignore[arg-type]


def test_onnx_export_selects_windows_in_the_graph_and_matches_pytorch(tmp_path: object) -> None:
    pytest.importorskip("onnxruntime")
    from amsr.export.onnx_export import export_onnx
    from amsr.runtime.export_check import onnxruntime_check
    from amsr.runtime.parity import compare_with_torch

    model, plan = _model()
    rules = amsr.SparseRules(window_adapters=plan.adapted)
    model, _ = amsr.user_model(unwrap_net(model), scale=2, size=SIZE, rules=rules)
    fast = model.accelerated(MaskConfig(dilation=1, window_threshold=0.5))
    path = export_onnx(fast, tmp_path / "patches.onnx", verify=onnxruntime_check)  # type: ignore[operator]
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["amsr.execution"] == "windows"
    assert any(n.name.startswith("sparse_window_0/") for n in proto.graph.node)
    for flat in (False, True):  # a flat image selects no window: the graph must still run
        x = _image(flat).numpy().astype(np.float32)
        verdict = compare_with_torch(fast, path, [x])
        assert verdict.passed, verdict.summary()


def unwrap_net(model: amsr.LoadedModel) -> nn.Module:
    return model.net
