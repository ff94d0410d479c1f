"""Window-level token selection in Swin blocks: exact with every window, identity without, sparse == dense
reference, the shifted mask rolled like the features, any input size, and effective MACs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from amsr.cli.common import add_mask_args, mask_config_from
from amsr.core.cost import run_counting_macs
from amsr.core.errors import AmsrError, UnsupportedModelError
from amsr.masking.mask import MaskConfig
from amsr.models import LoadedModel, load_model, unwrap_accelerated
from amsr.sparse.pixel import MaskContext, MaskedConv2d
from amsr.sparse.window import MaskedSwinBlock, select_windows, window_token_index
from amsr.surgery import AcceleratedSR, accelerate
from amsr.zoo import imdtn, swinir
from amsr.zoo.descriptor import SparseRules
from amsr.zoo.swinir_arch import SwinTransformerBlock, window_partition
from tests.conftest import weight_file
from tests.zoo.test_imdtn import random_imdtn
from tests.zoo.test_swinir import random_swinir, tiny


def _block(shift: int, ws: int = 8, dim: int = 16, seed: int = 0) -> SwinTransformerBlock:
    torch.manual_seed(seed)
    block = SwinTransformerBlock(dim=dim, num_heads=2, window_size=ws, shift_size=shift, mlp_ratio=2.0).eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_(0, 0.5)  # non-zero bias, as in a trained model
    return block


def _masked(block: SwinTransformerBlock, mask: torch.Tensor, threshold: float = 0.5,
            mode: str = "sparse") -> MaskedSwinBlock:
    ctx = MaskContext()
    ctx.mask = mask
    return MaskedSwinBlock(block, ctx, threshold, mode=mode)  # type: ignore[arg-type]


def _swin_blocks(model: nn.Module) -> list[MaskedSwinBlock]:
    return [m for m in model.modules() if isinstance(m, MaskedSwinBlock)]


class _Fixed(nn.Module):
    """An accelerated model run with a given mask (for ``run_counting_macs``)."""

    def __init__(self, acc: AcceleratedSR, mask: torch.Tensor) -> None:
        super().__init__()
        self.acc, self.mask = acc, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.acc(x, mask=self.mask)


# --- the block on its own ---------------------------------------------------------------------------------------

def test_window_token_index_is_the_blocks_roll_and_partition() -> None:
    h, w, ws, s = 16, 24, 8, 4
    x = torch.randn(2, h, w, 5)
    index = window_token_index(h, w, ws, s)
    want = window_partition(torch.roll(x, shifts=(-s, -s), dims=(1, 2)), ws).reshape(2, -1, ws * ws, 5)
    assert torch.equal(x.reshape(2, h * w, 5)[:, index], want)
    assert sorted(index.flatten().tolist()) == list(range(h * w))


@pytest.mark.parametrize("shift", [0, 4])
@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.5, 1.0])
def test_sparse_path_equals_dense_reference(shift: int, threshold: float) -> None:
    block = _block(shift)
    g = torch.Generator().manual_seed(int(10 * threshold) + shift)
    x = torch.randn(2, 24 * 40, 16, generator=g)
    # Blocky random mask (4×4 cells) so that windows get every fill level from 0 to 1.
    mask = (torch.rand(2, 1, 6, 10, generator=g) > 0.5).float().repeat_interleave(4, 2).repeat_interleave(4, 3)
    sparse, dense = _masked(block, mask, threshold), _masked(block, mask, threshold, "dense")
    with torch.no_grad():
        ys, yd, full = sparse(x, (24, 40)), dense(x, (24, 40)), block(x, (24, 40))
    assert (ys - yd).abs().max() <= 1e-5
    assert sparse.last_selected == dense.last_selected and sparse.last_total == 2 * 3 * 5
    assert 0 < sparse.last_selected <= sparse.last_total
    if threshold == 0:
        assert sparse.last_selected == sparse.last_total
        assert (ys - full).abs().max() <= 1e-5
    # Every token is either the block's output (its window selected) or the input, bit for bit.
    kept = (ys == x).all(dim=-1)
    computed = (ys - full).abs().amax(dim=-1) <= 1e-5
    assert bool((kept | computed).all())
    assert int((~kept).sum()) == sparse.last_selected * 64


def test_threshold_selects_by_the_windows_mean() -> None:
    mask = torch.zeros(1, 1, 8, 16)
    mask[..., :4, :8] = 1  # left window: 32/64 = 0.5; right window: 0
    mask[..., 0, 8] = 1  # right window: 1/64
    assert select_windows(mask, 8, 0, 0.5).tolist() == [[True, False]]
    assert select_windows(mask, 8, 0, 0.5 + 1e-9).tolist() == [[False, False]]
    assert select_windows(mask, 8, 0, 1 / 64).tolist() == [[True, True]]
    assert select_windows(mask, 8, 0, 0.0).tolist() == [[True, True]]
    assert select_windows(torch.ones(1, 1, 8, 16), 8, 0, 1.0001).tolist() == [[False, False]]


def _changed_tokens(block: SwinTransformerBlock, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """The h×w map of tokens the masked block changed (random input, random weights)."""
    h, w = mask.shape[-2:]
    x = torch.randn(1, h * w, block.dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = _masked(block, mask, threshold)(x, (h, w))
    return (y != x).any(dim=-1).reshape(h, w)


def test_shifted_block_uses_the_rolled_mask() -> None:
    unshifted, shifted = _block(0), _block(4)
    # Mask = exactly the top-left window of the unshifted grid (24×24 map, 3×3 windows of 8).
    mask = torch.zeros(1, 1, 24, 24)
    mask[..., :8, :8] = 1
    want = torch.zeros(24, 24, dtype=torch.bool)
    want[:8, :8] = True
    assert torch.equal(_changed_tokens(unshifted, mask, 0.5), want)
    # The shifted grid is offset by 4 and wraps around: the mask covers a quarter (16/64) of four shifted
    # windows, whose tokens are original rows/cols 4..11 and the wrapped 20..23 + 0..3.
    assert not _changed_tokens(shifted, mask, 0.5).any()
    rows = torch.zeros(24, dtype=torch.bool)
    rows[:12] = True
    rows[20:] = True
    assert torch.equal(_changed_tokens(shifted, mask, 0.25), rows[:, None] & rows[None, :])
    # A mask equal to one shifted window (original rows/cols 4..11) selects that window only.
    mask = torch.zeros(1, 1, 24, 24)
    mask[..., 4:12, 4:12] = 1
    want = torch.zeros(24, 24, dtype=torch.bool)
    want[4:12, 4:12] = True
    assert torch.equal(_changed_tokens(shifted, mask, 0.5), want)
    assert not _changed_tokens(unshifted, mask, 0.5).any()


def test_empty_selection_is_the_identity_and_costs_nothing() -> None:
    x = torch.randn(1, 16 * 16, 16)
    for mask, threshold in ((torch.zeros(1, 1, 16, 16), 0.5), (torch.ones(1, 1, 16, 16), 1.5)):
        layer = _masked(_block(4), mask, threshold)
        assert layer(x, (16, 16)) is x
        assert layer.last_selected == 0 and layer.effective_macs() == 0


def test_dense_macs_include_the_attention_matmuls() -> None:
    block = _block(4)
    x = torch.randn(2, 16 * 24, 16)
    _, macs = run_counting_macs(_Tokens(block, (16, 24)), x)
    tokens, c, n, hidden = 2 * 16 * 24, 16, 64, 32
    linear = tokens * (c * 3 * c + c * c + c * hidden + hidden * c)
    matmuls = 2 * tokens * n * c  # q·kᵀ and attn·v: per token, ws² keys of c channels each
    assert macs == linear + matmuls
    assert macs == 2 * 2 * 3 * MaskedSwinBlock(block, MaskContext()).window_macs()


def test_effective_macs_scale_with_the_selected_windows() -> None:
    block = _block(4)
    x = torch.randn(1, 24 * 24, 16)
    _, dense = run_counting_macs(_Tokens(block, (24, 24)), x)
    mask = torch.zeros(1, 1, 24, 24)
    mask[..., 4:20, 4:12] = 1  # two of the nine shifted windows, fully
    layer = _masked(block, mask, 0.5)
    _, sparse = run_counting_macs(_Tokens(layer, (24, 24)), x)
    assert layer.last_selected == 2 and layer.last_total == 9
    assert sparse == dense * 2 // 9 and dense % 9 == 0


class _Tokens(nn.Module):
    """Calls a block with a fixed size, so that ``run_counting_macs(model, x)`` can drive it."""

    def __init__(self, block: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.block, self.size = block, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, self.size)


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="≥ 0"):
        MaskedSwinBlock(_block(0), MaskContext(), threshold=-0.1)
    with pytest.raises(UnsupportedModelError, match="SwinTransformerBlock"):
        MaskedSwinBlock(nn.Linear(4, 4), MaskContext())
    with pytest.raises(RuntimeError, match="no mask set"):
        MaskedSwinBlock(_block(0), MaskContext())(torch.randn(1, 64, 16), (8, 8))
    with pytest.raises(ValueError, match="window_threshold"):
        MaskConfig(window_threshold=-1)


# --- whole models through surgery -------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["classical", "lightweight", "real"])
def test_every_window_gives_the_dense_swinir(variant: str) -> None:
    net = random_swinir(tiny(variant, 2))
    acc = accelerate(net, swinir.ARCH.rules, MaskConfig(window_threshold=0.5))
    assert len(_swin_blocks(acc)) == 4
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = net(x)
        assert (acc(x, mask=torch.ones(1, 1, 16, 24)) - ref).abs().max() <= 1e-5
        assert acc.window_fraction() == 1.0
        everything = accelerate(net, swinir.ARCH.rules, MaskConfig(window_threshold=0))
        assert (everything(x) - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("variant", ["classical", "lightweight"])
def test_empty_mask_skips_every_block(variant: str) -> None:
    net = random_swinir(tiny(variant, 2))
    acc = accelerate(net, swinir.ARCH.rules)
    x = torch.rand(1, 3, 16, 24)
    seen: list[bool] = []
    for b in _swin_blocks(acc):
        b.register_forward_hook(lambda _m, inp, out: seen.append(torch.equal(inp[0], out)))
    zeros = torch.zeros(1, 1, 16, 24)
    _, macs = run_counting_macs(_Fixed(acc, zeros), x)
    assert seen == [True] * 4
    assert all(b.effective_macs() == 0 for b in _swin_blocks(acc))
    assert acc.window_fraction() == 0.0
    _, dense = run_counting_macs(net, x)
    blocks = sum(b.window_macs() * b.last_total for b in _swin_blocks(acc))
    assert macs == dense - blocks


def test_partial_mask_macs_and_sparse_equals_dense_mode() -> None:
    net = random_swinir(tiny("classical", 2))
    acc = accelerate(net, swinir.ARCH.rules, MaskConfig(window_threshold=0.5))
    x = torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(1, 1, 24, 40)
    mask[..., 2:14, 6:30] = 1
    ys, macs = run_counting_macs(_Fixed(acc, mask), x)
    blocks = _swin_blocks(acc)
    selected, total = [b.last_selected for b in blocks], [b.last_total for b in blocks]
    assert all(0 < s < t for s, t in zip(selected, total))
    _, dense = run_counting_macs(net, x)
    skipped = sum((t - s) * b.window_macs() for b, s, t in zip(blocks, selected, total))
    assert macs == dense - skipped
    assert acc.window_fraction() == pytest.approx(sum(selected) / sum(total))
    acc.set_mode("dense")
    assert all(b.mode == "dense" for b in blocks)
    with torch.no_grad():
        yd = acc(x, mask=mask)
    assert (ys - yd).abs().max() <= 1e-5
    assert [b.last_selected for b in blocks] == selected


def test_conv_and_window_rules_together() -> None:
    net = random_swinir(tiny("classical", 2))
    rules = SparseRules(convs=("layers.*.conv",), windows=("layers.*.residual_group.blocks.*",))
    acc = accelerate(net, rules)
    assert sum(isinstance(m, MaskedConv2d) for m in acc.modules()) == 2
    assert len(_swin_blocks(acc)) == 4
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert (acc(x, mask=torch.ones(1, 1, 16, 16)) - net(x)).abs().max() <= 1e-5
    acc.set_mode("dense")
    assert all(m.mode == "dense" for m in acc.modules() if isinstance(m, (MaskedConv2d, MaskedSwinBlock)))


@pytest.mark.parametrize("rules, msg", [
    (SparseRules(windows=("conv_first",)), "matches no SwinTransformerBlock"),
    (SparseRules(windows=("layers.*.residual_group.blocks.*", "nothing.*")), "matches no SwinTransformerBlock"),
    (SparseRules(convs=("layers.*.residual_group.blocks.0.*",), windows=("layers.*.residual_group.blocks.*",)),
     "expected nn.Conv2d"),
])
def test_bad_window_rules_are_clear_errors(rules: SparseRules, msg: str) -> None:
    with pytest.raises(UnsupportedModelError, match=msg):
        accelerate(random_swinir(tiny("classical", 2)), rules)


def test_imdtn_rules_accelerate_every_swin_block() -> None:
    net = random_imdtn()
    acc = accelerate(net, imdtn.ARCH.rules, MaskConfig(window_threshold=0))
    assert len(_swin_blocks(acc)) == 4
    x = torch.rand(1, 3, 18, 24)
    with torch.no_grad():
        assert (acc(x) - net(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("lr_size", [(5, 7), (13, 19)])
@pytest.mark.parametrize("arch", ["swinir", "imdtn"])
def test_any_input_size_end_to_end(arch: str, lr_size: tuple[int, int]) -> None:
    if arch == "swinir":
        model = LoadedModel(swinir.ARCH, 2, random_swinir(tiny("classical", 2)), Path("random"))
    else:
        model = LoadedModel(imdtn.ARCH, 4, random_imdtn(), Path("random"))
    x = torch.rand(1, 3, *lr_size, generator=torch.Generator().manual_seed(7))
    s = model.scale
    with torch.no_grad():
        ref = model.dense()(x)
        everything = model.accelerated(MaskConfig(window_threshold=0))(x)
        sparse_model = model.accelerated(MaskConfig(window_threshold=0.5, dilation=0))
        ys = sparse_model(x)
        dense_model = model.accelerated(MaskConfig(window_threshold=0.5, dilation=0), mode="dense")
        yd = dense_model(x)
    assert ref.shape == ys.shape == (1, 3, lr_size[0] * s, lr_size[1] * s)
    assert (everything - ref).abs().max() <= 1e-5
    assert (ys - yd).abs().max() <= 1e-5
    assert unwrap_accelerated(sparse_model).window_fraction() is not None


def test_real_imdtn_every_window_equals_dense(weights_dir: Path, data_dir: Path) -> None:
    from amsr.io.images import read_rgb8, to_tensor

    model = load_model("imdtn", 4, weights=weight_file(weights_dir, "imdtn_x4.pth"))
    x = to_tensor(read_rgb8(data_dir / "Set5" / "x4" / "LR" / "img_003.png"))[..., 20:80, 10:82]  # 60×72
    acc = model.accelerated(MaskConfig(window_threshold=0.5))
    with torch.no_grad():
        ref = model.net(x)
        out = unwrap_accelerated(acc)(x, mask=torch.ones(1, 1, *x.shape[-2:]))
        assert (out - ref).abs().max() <= 1e-5
        part = acc(x)
    fraction = unwrap_accelerated(acc).window_fraction()
    assert fraction is not None and 0 < fraction < 1
    assert part.shape == ref.shape


def test_cli_window_threshold_and_hf_floor() -> None:
    import argparse

    p = argparse.ArgumentParser()
    add_mask_args(p)
    assert mask_config_from(p.parse_args([])).window_threshold == MaskConfig().window_threshold
    assert mask_config_from(p.parse_args(["--window-threshold", "0.25"])).window_threshold == 0.25
    assert mask_config_from(p.parse_args(["--hf-floor", "0.04"])).hf_floor == 0.04
    assert mask_config_from(p.parse_args([])).hf_floor is None  # the paper's mask unless asked
    with pytest.raises(AmsrError, match="window_threshold"):
        mask_config_from(p.parse_args(["--window-threshold", "-1"]))


def test_conv_rules_inside_a_masked_block_are_refused() -> None:
    net = random_swinir(tiny("classical", 2))
    net.layers[0].residual_group.blocks[0].extra = nn.Conv2d(16, 16, 3, padding=1)  # type: ignore[union-attr]
    rules = SparseRules(convs=("*.extra",), windows=("layers.*.residual_group.blocks.*",))
    with pytest.raises(UnsupportedModelError, match="inside masked window blocks"):
        accelerate(net, rules)
