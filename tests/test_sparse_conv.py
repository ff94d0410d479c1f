"""The masked 3×3 conv: exact on real weights, sparse == dense reference, identity where masked out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from amsr.core.errors import UnsupportedModelError
from amsr.io.images import read_rgb8, to_tensor
from amsr.models import load_model
from amsr.sparse import pixel
from amsr.sparse.pixel import MaskContext, MaskedConv2d, check_maskable_conv, conv_at_pixels
from amsr.surgery import match_modules


@pytest.fixture(scope="module")
def carn_m(weights_dir: Path):  # type: ignore[no-untyped-def]
    if not (weights_dir / "carn_m.pth").is_file():
        pytest.skip("carn_m.pth not in the shared weights")
    return load_model("carn_m", 4, weights=weights_dir / "carn_m.pth")


@pytest.mark.parametrize("k,groups,c_in,c_out", [(1, 1, 4, 6), (3, 1, 8, 8), (3, 4, 8, 12), (5, 2, 6, 4)])
def test_conv_at_pixels_is_the_conv_there(monkeypatch: pytest.MonkeyPatch, k: int, groups: int, c_in: int,
                                          c_out: int) -> None:
    """The one gather of the masked and tail convs: any odd kernel, groups and channel counts, across chunks
    (a chunk of 7 pixels here), on a batch of 2, with the image borders' zero padding."""
    monkeypatch.setattr(pixel, "_CHUNK", 7)
    torch.manual_seed(k * groups)
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups)
    x = torch.randn(2, c_in, 9, 11)
    pick = torch.rand(2, 9, 11) > 0.4
    pick[0, 0, 0] = pick[1, -1, -1] = True  # the corners read the padding
    n, i, j = pick.nonzero(as_tuple=True)
    got = conv_at_pixels(conv, x, n, i, j)
    want = conv(x).permute(0, 2, 3, 1)[n, i, j]
    assert got.shape == (int(n.numel()), c_out)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _real_inputs(model, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    """The input each body conv sees on a real image (first call)."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name in match_modules(model.net, model.arch.rules.convs):
        def hook(_m, inputs, _o, name=name):  # type: ignore[no-untyped-def]
            seen.setdefault(name, inputs[0].detach().clone())
        handles.append(model.net.get_submodule(name).register_forward_hook(hook))
    with torch.no_grad():
        model.net(x)
    for h in handles:
        h.remove()
    return seen


def test_all_ones_mask_equals_pretrained_conv_on_real_weights(carn_m, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    x = to_tensor(read_rgb8(data_dir / "Set5" / "x4" / "LR" / "img_002.png"))
    feats = _real_inputs(carn_m, x)
    assert len(feats) == 6
    ctx = MaskContext()
    for name, f in feats.items():
        conv = carn_m.net.get_submodule(name)
        ctx.mask = torch.ones(f.shape[0], 1, *f.shape[-2:])
        for mode in ("sparse", "dense"):
            out = MaskedConv2d(conv, ctx, mode=mode)(f)
            assert (out - conv(f)).abs().max() <= 1e-5, f"{name} ({mode})"


def test_all_ones_mask_gives_the_dense_model(carn_m, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    x = to_tensor(read_rgb8(data_dir / "Set5" / "x4" / "LR" / "img_003.png"))
    acc = carn_m.accelerated().net  # the AcceleratedSR inside PaddedSR
    with torch.no_grad():
        out = acc(x, mask=torch.ones(1, 1, *x.shape[-2:]))
        ref = carn_m.net(x)
    assert (out - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("groups", [1, 4])
def test_sparse_path_equals_dense_reference(groups: int) -> None:
    g = torch.Generator().manual_seed(groups)
    conv = nn.Conv2d(16, 16, 3, padding=1, groups=groups)
    x = torch.randn(2, 16, 13, 19, generator=g)
    ctx = MaskContext()
    ctx.mask = (torch.rand(2, 1, 13, 19, generator=g) > 0.6).float()
    sparse, dense = MaskedConv2d(conv, ctx, "sparse"), MaskedConv2d(conv, ctx, "dense")
    with torch.no_grad():
        ys, yd = sparse(x), dense(x)
        expected = torch.where(ctx.mask > 0.5, conv(x), x)
    assert (ys - yd).abs().max() < 1e-5 and (ys - expected).abs().max() < 1e-5
    assert sparse.last_active == int(ctx.mask.sum())
    # Masked-out pixels are the input, bit for bit.
    assert torch.equal(ys[(ctx.mask < 0.5).expand_as(x)], x[(ctx.mask < 0.5).expand_as(x)])


def test_empty_mask_computes_nothing() -> None:
    conv = nn.Conv2d(8, 8, 3, padding=1)
    ctx = MaskContext()
    ctx.mask = torch.zeros(1, 1, 9, 9)
    layer = MaskedConv2d(conv, ctx)
    x = torch.randn(1, 8, 9, 9)
    assert torch.equal(layer(x), x)
    assert layer.effective_macs() == 0


def test_masked_layer_without_mask_is_a_clear_error() -> None:
    layer = MaskedConv2d(nn.Conv2d(4, 4, 3, padding=1), MaskContext())
    with pytest.raises(RuntimeError, match="no mask set"):
        layer(torch.randn(1, 4, 5, 5))


@pytest.mark.parametrize("conv, why", [
    (nn.Conv2d(8, 8, 1), "kernel"),
    (nn.Conv2d(8, 16, 3, padding=1), "channels"),
    (nn.Conv2d(8, 8, 3, stride=2, padding=1), "stride"),
    (nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), "padding"),
    (nn.Linear(8, 8), "Conv2d"),
])
def test_unmaskable_layers_are_refused(conv: nn.Module, why: str) -> None:
    with pytest.raises(UnsupportedModelError, match=why):
        check_maskable_conv(conv, "layer")


def test_pixel_indices_are_shared_per_mask_and_follow_in_place_changes() -> None:
    ctx = MaskContext()
    m = torch.zeros(1, 1, 5, 6)
    m[0, 0, 1, 2] = 1
    first = ctx.pixel_indices(m)
    assert ctx.pixel_indices(m) is first  # same mask: no second nonzero
    m[0, 0, 3, 4] = 1  # written in place: the cached indices must not be reused
    again = ctx.pixel_indices(m)
    assert again is not first and [t.tolist() for t in again] == [[0, 0], [1, 3], [2, 4]]
    other = m.clone()
    assert ctx.pixel_indices(other) is not again
