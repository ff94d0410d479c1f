"""Window-level token selection in HiT-SRF blocks: sparse == dense reference for every window size and odd
map sizes, exact with every window, identity without, reflect-padded mask tiles, effective MACs, and the real
checkpoint."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from amsr.core.cost import run_counting_macs
from amsr.core.errors import UnsupportedModelError
from amsr.masking.mask import MaskConfig, compute_mask
from amsr.models import load_model
from amsr.sparse.hit import MaskedHiTBlock, select_hit_windows
from amsr.sparse.pixel import MaskContext
from amsr.sparse.window import MaskedWindowLayer
from amsr.zoo.hit_srf_arch import HierarchicalTransformerBlock, HiTSRF
from tests.conftest import weight_file

DIM, HEADS, HIDDEN = 20, 2, 40


def _block(ws: int, seed: int = 0) -> HierarchicalTransformerBlock:
    torch.manual_seed(seed)
    block = HierarchicalTransformerBlock(DIM, HEADS, (ws, ws), (8, 8), HIDDEN).eval()
    with torch.no_grad():  # perturb every tensor (biases, LayerNorms) so that no term is trivially zero
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return block


def _masked(block: nn.Module, mask: torch.Tensor, threshold: float = 0.5, mode: str = "sparse") -> MaskedHiTBlock:
    ctx = MaskContext()
    ctx.mask = mask
    return MaskedHiTBlock(block, ctx, threshold, mode=mode)  # type: ignore[arg-type]


def _keep(mask: torch.Tensor, ws: int, threshold: float) -> torch.Tensor:
    """B×H×W: tokens of the selected windows, from the selection's definition (independent of the module)."""
    h, w = mask.shape[-2:]
    sel = select_hit_windows(mask, (ws, ws), threshold)
    return sel.repeat_interleave(ws, 1).repeat_interleave(ws, 2)[:, :h, :w]


class _Run(nn.Module):
    """Wraps a block so that ``run_counting_macs`` can drive it (it owns the block's cost hooks)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


# --- sparse == dense reference --------------------------------------------------------------------------------

SIZES = [(13, 21), (5, 3), (16, 32), (37, 40), (1, 9)]


@pytest.mark.parametrize("ws", [4, 8, 16, 32])
@pytest.mark.parametrize("size", SIZES)
def test_sparse_path_equals_dense_reference(ws: int, size: tuple[int, int]) -> None:
    h, w = size
    block = _block(ws, seed=ws)
    g = torch.Generator().manual_seed(ws * 1000 + h * 50 + w)
    x = torch.randn(2, h, w, DIM, generator=g)
    # Two different masks in one batch: blocky (2×2 cells) random with different densities.
    cells = torch.rand(2, 1, -(-h // 2), -(-w // 2), generator=g) < torch.tensor([0.35, 0.7]).view(2, 1, 1, 1)
    mask = cells.float().repeat_interleave(2, 2).repeat_interleave(2, 3)[..., :h, :w]
    for threshold in (0.25, 0.5):
        sparse, dense = _masked(block, mask, threshold), _masked(block, mask, threshold, "dense")
        with torch.no_grad():
            ys, yd = sparse(x), dense(x)
        assert ys.shape == x.shape
        assert (ys - yd).abs().max() <= 1e-5
        assert sparse.last_selected == dense.last_selected
        assert sparse.last_total == dense.last_total == dense.last_computed == 2 * math.ceil(h / ws) * math.ceil(w / ws)
        assert sparse.last_computed == sparse.last_selected
        # Tokens of unselected windows are passed through bit for bit; the others are changed.
        keep = _keep(mask, ws, threshold)
        unchanged = (ys == x).all(dim=-1)
        assert torch.equal(unchanged, ~keep)


@pytest.mark.parametrize("ws", [4, 8, 16])
def test_dense_reference_is_the_documented_formula(ws: int) -> None:
    """x1 = where(keep, x + attention(x), x); out = where(keep, x1 + mlp(x1), x1), for a mask with
    selected and unselected windows next to each other (their halos matter)."""
    h, w = 2 * ws + 3, 3 * ws - 1
    block = _block(ws, seed=1)
    x = torch.randn(1, h, w, DIM, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(1, 1, h, w)
    mask[..., :ws, ws:2 * ws] = 1  # one window, with unselected neighbours on three sides
    mask[..., ws:, :ws] = 1  # a window and the bottom border window below it (3 rows + their reflection)
    keep = _keep(mask, ws, 0.5)[..., None]
    assert int(keep.sum()) == 2 * ws * ws + 3 * ws
    with torch.no_grad():
        x1 = torch.where(keep, x + block.attention_branch(x), x)
        want = torch.where(keep, x1 + block.mlp_branch(x1), x1)
        got = _masked(block, mask)(x)
        whole = block(x)
    assert (got - want).abs().max() <= 1e-5
    # Not the whole block's output cut to the selected windows: the unselected neighbours change the MLP input.
    assert (torch.where(keep, whole, x) - want).abs().max() > 1e-4


# --- all / nothing ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ws", [4, 8, 32])
@pytest.mark.parametrize("size", [(13, 21), (3, 5), (16, 16)])
def test_every_window_gives_the_original_block(ws: int, size: tuple[int, int]) -> None:
    block = _block(ws)
    x = torch.randn(2, *size, DIM, generator=torch.Generator().manual_seed(4))
    ones = torch.ones(2, 1, *size)
    with torch.no_grad():
        ref = block(x)
        for threshold, mode in ((1.0, "sparse"), (0.5, "sparse"), (1.0, "dense")):
            layer = _masked(block, ones, threshold, mode)
            assert (layer(x) - ref).abs().max() <= 1e-5
            assert layer.last_selected == layer.last_total == layer.last_computed
        assert (_masked(block, torch.zeros(2, 1, *size), 0.0)(x) - ref).abs().max() <= 1e-5  # threshold 0


@pytest.mark.parametrize("mask_value, threshold", [(0.0, 0.5), (1.0, 1.5)])
def test_empty_selection_is_the_identity_and_costs_nothing(mask_value: float, threshold: float) -> None:
    block = _block(8)
    x = torch.randn(2, 13, 21, DIM)
    mask = torch.full((2, 1, 13, 21), mask_value)
    layer = _masked(block, mask, threshold)
    with torch.no_grad():
        assert layer(x) is x
    assert layer.last_selected == 0 and layer.last_computed == 0 and layer.last_total == 2 * 2 * 3
    assert layer.effective_macs() == 0
    dense = _masked(block, mask, threshold, "dense")
    with torch.no_grad():
        assert torch.equal(dense(x), x)
    assert dense.last_computed == dense.last_total == 12 and dense.effective_macs() > 0


# --- what is computed and what it costs ------------------------------------------------------------------------

@pytest.mark.parametrize("ws", [4, 8, 16])
@pytest.mark.parametrize("size", [(16, 32), (13, 21), (3, 5)])
def test_dense_mode_reports_the_whole_block(ws: int, size: tuple[int, int]) -> None:
    block = _block(ws)
    x = torch.randn(2, *size, DIM)
    mask = (torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    dense = _masked(block, mask, 0.5, "dense")
    _, counted = run_counting_macs(_Run(dense), x)
    _, original = run_counting_macs(block, x)
    windows = 2 * math.ceil(size[0] / ws) * math.ceil(size[1] / ws)
    # The dense block counts its window matmuls through SpatialChannelCorrelation.extra_macs.
    assert counted == dense.effective_macs() == original
    assert original > windows * block.correlation.correlate_macs() > 0
    if size[0] % ws == 0 and size[1] % ws == 0:
        assert counted == windows * dense.window_macs() + dense.position_bias_macs()
    # The sparse path with every window selected does the same work when each side is a multiple of the
    # window or smaller than it.
    everything = _masked(block, torch.ones(2, 1, *size))
    _, sparse_all = run_counting_macs(_Run(everything), x)
    if all(s % ws == 0 or s < ws for s in size):
        assert sparse_all == counted
    else:
        assert counted < sparse_all < 1.5 * counted


def test_sparse_macs_are_the_selected_windows_plus_their_halos() -> None:
    ws, c, mid = 4, DIM, DIM // 5
    block = _block(ws)
    x = torch.randn(1, 20, 20, DIM)
    layer = _masked(block, torch.zeros(1, 1, 20, 20))
    halo = ((ws + 2) ** 2 - ws * ws) * c * mid + ((ws + 4) ** 2 - ws * ws) * c * HIDDEN
    one = layer.window_macs() + halo
    mask = torch.zeros(1, 1, 20, 20)
    mask[..., 4:8, 4:8] = 1  # window (1, 1): interior, its halos inside the map
    _, macs = run_counting_macs(_Run(_masked(block, mask)), x)
    assert macs == one + layer.position_bias_macs()
    mask[..., 12:16, 12:16] = 1  # window (3, 3): halos disjoint from the first one's
    layer = _masked(block, mask)
    _, macs = run_counting_macs(_Run(layer), x)
    assert layer.last_computed == 2 and layer.last_total == 25
    assert macs == layer.effective_macs() == 2 * one + layer.position_bias_macs()
    # Neighbouring windows share their halo pixels: the front-end runs once per pixel.
    mask[..., 4:8, 8:12] = 1
    _, three = run_counting_macs(_Run(_masked(block, mask)), x)
    assert 2 * one + layer.window_macs() < three - layer.position_bias_macs() < 3 * one
    # And the dense reference reports all 25 windows of the block.
    dense = _masked(block, mask, mode="dense")
    _, all_windows = run_counting_macs(_Run(dense), x)
    assert all_windows == 25 * layer.window_macs() + layer.position_bias_macs()


def test_sparse_path_computes_only_the_selected_windows() -> None:
    """The window-level modules see exactly the selected windows, one batch per call."""
    ws = 8
    block = _block(ws)
    seen: list[tuple[int, ...]] = []
    block.correlation.register_forward_hook(lambda *_: seen.append(("whole",)))  # the dense SCC: must not run
    handle = block.correlation.proj.register_forward_hook(lambda _m, inp, _o: seen.append(tuple(inp[0].shape)))
    x = torch.randn(2, 24, 24, DIM)
    mask = torch.zeros(2, 1, 24, 24)
    mask[0, :, :8, :8] = 1
    mask[1, :, 8:24, 16:24] = 1
    layer = _masked(block, mask)
    with torch.no_grad():
        layer(x)
    assert layer.last_selected == layer.last_computed == 3 and layer.last_total == 18
    assert seen == [(3 * ws * ws, DIM)]
    handle.remove()


# --- selection rule ------------------------------------------------------------------------------------------------

def test_threshold_is_the_mean_over_the_reflect_padded_tile() -> None:
    mask = torch.zeros(1, 1, 8, 16)
    mask[..., :4, :8] = 1  # left window: 32/64 = 0.5
    mask[..., 0, 8] = 1  # right window: 1/64
    assert select_hit_windows(mask, (8, 8), 0.5).tolist() == [[[True, False]]]
    assert select_hit_windows(mask, (8, 8), 0.5 + 1e-9).tolist() == [[[False, False]]]
    assert select_hit_windows(mask, (8, 8), 1 / 64).tolist() == [[[True, True]]]
    assert select_hit_windows(mask, (8, 8), 0.0).tolist() == [[[True, True]]]
    assert select_hit_windows(torch.ones(1, 1, 8, 16), (8, 8), 1.0001).tolist() == [[[False, False]]]
    # 12 rows, window 8: the bottom tile holds rows 8..11 and their reflection 10, 9, 8, 7. Row 10 set → 2 rows.
    mask = torch.zeros(1, 1, 12, 8)
    mask[..., 10, :] = 1
    assert select_hit_windows(mask, (8, 8), 16 / 64).tolist() == [[[False], [True]]]
    assert select_hit_windows(mask, (8, 8), 16 / 64 + 1e-9).tolist() == [[[False], [False]]]
    # A map smaller than the window: 3×5 reflected to 8×8.
    small = torch.zeros(1, 1, 3, 5)
    small[..., 0, 0] = 1  # row 0 recurs at padded row 4 (period 4), col 0 nowhere else (period 8) → 2 of 64
    assert select_hit_windows(small, (8, 8), 2 / 64).tolist() == [[[True]]]
    assert select_hit_windows(small, (8, 8), 2 / 64 + 1e-9).tolist() == [[[False]]]


def test_the_block_uses_the_threshold_exactly() -> None:
    block = _block(4)
    mask = torch.zeros(1, 1, 4, 8)
    mask[..., :2, :3] = 1  # window 0: 6/16; window 1: 0
    x = torch.randn(1, 4, 8, DIM)
    for threshold, selected in ((6 / 16, 1), (6 / 16 + 1e-9, 0), (0.0, 2)):
        layer = _masked(block, mask, threshold)
        with torch.no_grad():
            layer(x)
        assert layer.last_selected == selected


def test_bad_arguments_are_clear_errors() -> None:
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="≥ 0"):
            MaskedHiTBlock(_block(4), MaskContext(), threshold=bad)
    with pytest.raises(UnsupportedModelError, match="HierarchicalTransformerBlock"):
        MaskedHiTBlock(nn.Linear(4, 4), MaskContext(), name="layers.0.residual_group.blocks.0")
    with pytest.raises(RuntimeError, match="no mask set"):
        MaskedHiTBlock(_block(4), MaskContext())(torch.randn(1, 8, 8, DIM))
    with pytest.raises(ValueError, match="mask batch"):
        _masked(_block(4), torch.ones(2, 1, 8, 8))(torch.randn(1, 8, 8, DIM))
    with pytest.raises(ValueError, match="B, H, W, C"):
        _masked(_block(4), torch.ones(1, 1, 8, 8))(torch.randn(1, 64, DIM))
    assert isinstance(MaskedHiTBlock(_block(4), MaskContext()), MaskedWindowLayer)


# --- the real checkpoint -------------------------------------------------------------------------------------------

def _wrapped(net: HiTSRF, ctx: MaskContext, threshold: float, mode: str) -> HiTSRF:
    """A copy of ``net`` with every block replaced by a ``MaskedHiTBlock`` reading ``ctx``."""
    out = copy.deepcopy(net)
    for layer in out.layers:
        blocks = layer.residual_group.blocks  # type: ignore[union-attr]
        for j, block in enumerate(blocks):
            blocks[j] = MaskedHiTBlock(block, ctx, threshold, mode=mode)  # type: ignore[arg-type]
    return out


def test_real_checkpoint_sparse_equals_dense_and_every_window_equals_the_network(weights_dir: Path,
                                                                                 data_dir: Path) -> None:
    from amsr.io.images import read_rgb8, to_tensor

    model = load_model("hit_srf", 4, weights=weight_file(weights_dir, "hit_srf_x4.pth"))
    net = model.net
    assert isinstance(net, HiTSRF)
    x = to_tensor(read_rgb8(data_dir / "Set5" / "x4" / "LR" / "img_003.png"))[..., 20:61, 10:80]  # 41×54 of 64×64
    ctx = MaskContext()
    ctx.mask = compute_mask(x, MaskConfig(dilation=1))
    assert 0 < float(ctx.mask.mean()) < 1
    sparse, dense = _wrapped(net, ctx, 0.5, "sparse"), _wrapped(net, ctx, 0.5, "dense")
    with torch.no_grad():
        ref = net(x)
        ys, yd = sparse(x), dense(x)
        blocks = [m for m in sparse.modules() if isinstance(m, MaskedHiTBlock)]
        assert len(blocks) == 24
        selected = sum(b.last_selected for b in blocks)
        total = sum(b.last_total for b in blocks)
        assert 0 < selected < total
        assert (ys - yd).abs().max() <= 1e-4
        assert (ys - ref).abs().max() > 1e-3  # the mask really changed something
        ctx.mask = torch.ones_like(ctx.mask)
        assert (sparse(x) - ref).abs().max() <= 1e-4
        assert all(b.last_selected == b.last_total for b in blocks)
