"""Tile-level masked convs (amsr.sparse.tiles): exact against MaskedConv2d under the tile-upsampled mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from amsr.io.images import read_rgb8, to_tensor
from amsr.models import load_model
from amsr.sparse.pixel import MaskContext, MaskedConv2d
from amsr.sparse.tiles import (
    TileMaskedConv2d,
    active_tile_fraction,
    tile_mask,
    tile_upsampled_mask,
    to_tiles,
)
from amsr.surgery import accelerate
from tests.conftest import weight_file


def test_tile_mask_marks_tiles_with_any_masked_pixel() -> None:
    m = torch.zeros(1, 1, 10, 13)
    m[0, 0, 9, 12] = 1  # bottom-right corner: the last (partial) tile
    m[0, 0, 0, 0] = 1
    tm = tile_mask(m, 4)
    assert tm.shape == (1, 1, 3, 4)
    assert tm.sum() == 2 and tm[0, 0, 2, 3] == 1 and tm[0, 0, 0, 0] == 1
    up = tile_upsampled_mask(m, 4)
    assert up.shape == m.shape and up.sum() == 16 + 2 * 1  # a full tile + the 2×1 partial corner tile
    assert (up >= m).all()
    assert active_tile_fraction(m, 4) == pytest.approx(2 / 12)


@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("tile", [4, 8, 16])
def test_tile_path_equals_masked_conv_under_the_tile_mask(groups: int, tile: int) -> None:
    gen = torch.Generator().manual_seed(tile + groups)
    conv = nn.Conv2d(16, 16, 3, 1, 1, groups=groups).eval()
    ctx = MaskContext()
    ref = MaskedConv2d(conv, ctx, mode="dense")
    tc = TileMaskedConv2d(MaskedConv2d(conv, ctx), tile)
    for h, w, p in ((37, 53, 0.02), (17, 23, 0.1), (5, 7, 0.3), (32, 32, 0.0), (20, 9, 1.0)):
        x = torch.randn(2, 16, h, w, generator=gen)
        m = (torch.rand(2, 1, h, w, generator=gen) < p).float()
        with torch.no_grad():
            ctx.mask = tile_upsampled_mask(m, tile)
            want = ref(x)
            ctx.mask = m
            got = tc(x)
        assert (got - want).abs().max() <= 1e-5, (h, w, p)
        assert tc.last_active == int(tile_mask(m, tile).sum()) * tile * tile


def test_all_ones_mask_equals_dense_conv_and_real_carn_m_weights(weights_dir: Path, data_dir: Path) -> None:
    model = load_model("carn_m", 4, weights=weight_file(weights_dir, "carn_m.pth"))
    x = to_tensor(read_rgb8(data_dir / "Set5" / "x4" / "LR" / "img_002.png"))[..., :45, :61]
    feats: dict[str, torch.Tensor] = {}
    hooks = [model.net.get_submodule(n).register_forward_hook(
        lambda _m, i, _o, n=n: feats.setdefault(n, i[0].detach().clone()))
        for n in ("b1.b1.body.0", "b2.b1.body.2", "b3.b1.body.0")]
    with torch.no_grad():
        model.net(x)
    for h in hooks:
        h.remove()
    ctx = MaskContext()
    gen = torch.Generator().manual_seed(0)
    for name, f in feats.items():
        conv = model.net.get_submodule(name)
        tc = TileMaskedConv2d(MaskedConv2d(conv, ctx), 8)
        ctx.mask = torch.ones(1, 1, *f.shape[-2:])
        with torch.no_grad():
            assert (tc(f) - conv(f)).abs().max() <= 1e-5, name
            m = (torch.rand(1, 1, *f.shape[-2:], generator=gen) < 0.01).float()
            ctx.mask = m
            got = tc(f)
            ctx.mask = tile_upsampled_mask(m, 8)
            want = MaskedConv2d(conv, ctx, mode="dense")(f)
        assert (got - want).abs().max() <= 1e-5, name


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, 1, 1, groups=2), nn.Conv2d(8, 3, 3, 1, 1)).eval()


def test_whole_model_tile_path_equals_its_reference() -> None:
    acc = accelerate(_tiny_net(), ["2", "4"]).eval()
    tiled = to_tiles(acc, 8)
    x = torch.rand(1, 3, 29, 35, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = tiled(x)
        m = acc.mask_generator(x)
        ref = acc(x, mask=tile_upsampled_mask(m, 8))
    acc.set_mode("dense")
    with torch.no_grad():
        ref_dense = acc(x, mask=tile_upsampled_mask(m, 8))
    assert (got - ref).abs().max() <= 1e-5 and (got - ref_dense).abs().max() <= 1e-5


def test_exported_tile_graph_matches_torch_at_odd_sizes(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime as ort

    from amsr.export.onnx_export import export_onnx
    from amsr.runtime.export_check import onnxruntime_check

    tiled = to_tiles(accelerate(_tiny_net(), ["2", "4"]).eval(), 8)
    path = export_onnx(tiled, tmp_path / "tile.onnx", sample_size=(24, 24), verify=onnxruntime_check)  # verified at 24×24 and 17×23
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert {"NonZero", "Gather", "Conv", "ScatterND"} <= ops
    assert any(n.name.startswith("sparse_conv_") for n in graph.node)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(5)
    for h, w in ((33, 41), (9, 70), (16, 16)):
        x = torch.rand(1, 3, h, w, generator=gen)
        with torch.no_grad():
            want = tiled(x).numpy()
        got = sess.run(None, {"lr": x.numpy()})[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4)
