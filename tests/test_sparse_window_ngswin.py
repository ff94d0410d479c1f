"""Window-level token selection in NGswin's N-gram Swin blocks (NSTB): the sparse path equals the dense
reference, every window gives the dense network, no window is the identity, the N-gram context is read per
unshifted window, and the effective MACs (windows + context) are what the dense network counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from amsr.core.cost import run_counting_macs
from amsr.masking.mask import MaskConfig
from amsr.models import LoadedModel, load_model, unwrap_accelerated
from amsr.sparse.pixel import MaskContext
from amsr.sparse.window import MaskedSwinBlock
from amsr.surgery import accelerate
from amsr.zoo import get_architecture
from amsr.zoo.ngswin_arch import NSTB, NGswin
from tests.conftest import weight_file
from tests.zoo.test_ngswin import SMALL, _random_net


def _nstb(shift: int, seed: int = 0) -> NSTB:
    torch.manual_seed(seed)
    block = NSTB(dim=16, num_heads=2, head_dim=6, window_size=8, shift_size=shift, ngram=2, mlp_hidden=24).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn(p.shape))  # non-zero bias tables and norms, as in a trained model
    return block


def _masked(block: NSTB, mask: torch.Tensor, threshold: float = 0.5, mode: str = "sparse") -> MaskedSwinBlock:
    ctx = MaskContext()
    ctx.mask = mask
    return MaskedSwinBlock(block, ctx, threshold, mode=mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("shift", [0, 4])
@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
def test_sparse_path_equals_dense_reference(shift: int, threshold: float) -> None:
    block = _nstb(shift)
    g = torch.Generator().manual_seed(7 + shift)
    h, w = 24, 32
    x = torch.randn(2, h * w, 16, generator=g)
    mask = (torch.rand(2, 1, 6, 8, generator=g) > 0.5).float().repeat_interleave(4, 2).repeat_interleave(4, 3)
    mask[0, :, :12, :12] = 1  # one full window in both the plain and the shifted grid
    sparse, dense = _masked(block, mask, threshold), _masked(block, mask, threshold, "dense")
    with torch.no_grad():
        ys, yd, full = sparse(x, (h, w)), dense(x, (h, w)), block(x, (h, w))
    assert (ys - yd).abs().max() <= 1e-5
    assert sparse.last_selected == dense.last_selected and sparse.last_total == 2 * 3 * 4
    assert 0 < sparse.last_selected <= sparse.last_total
    if threshold == 0:
        assert (ys - full).abs().max() <= 1e-5
    # A token is either the block's output or its input: nothing in between.
    kept = (ys == x).all(dim=-1)
    computed = (ys - full).abs().amax(dim=-1) <= 1e-5
    assert bool((kept | computed).all())
    assert int((~kept).sum()) == sparse.last_selected * 64


def test_context_comes_from_the_whole_map() -> None:
    """A selected window's output depends on its unselected neighbours through the N-gram context."""
    block = _nstb(0)
    h, w = 16, 16
    x = torch.randn(1, h * w, 16, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, h, w)
    mask[..., :8, :8] = 1  # only the top-left window
    layer = _masked(block, mask)
    x2 = x.clone().reshape(1, h, w, 16)
    x2[:, 8:, 8:] += 1.0  # change the bottom-right (unselected) window only
    x2 = x2.reshape(1, h * w, 16)
    with torch.no_grad():
        a, b = layer(x, (h, w)), layer(x2, (h, w))
        ref = block(x2, (h, w)).reshape(1, h, w, 16)
    top_left = (slice(None), slice(0, 8), slice(0, 8))
    assert not torch.allclose(a.reshape(1, h, w, 16)[top_left], b.reshape(1, h, w, 16)[top_left])
    assert (b.reshape(1, h, w, 16)[top_left] - ref[top_left]).abs().max() <= 1e-5


def test_empty_selection_is_the_identity_and_costs_nothing() -> None:
    x = torch.randn(1, 16 * 16, 16)
    layer = _masked(_nstb(4), torch.zeros(1, 1, 16, 16))
    assert layer(x, (16, 16)) is x
    assert layer.last_selected == 0 and layer.effective_macs() == 0


def test_macs_match_the_dense_block_and_scale_with_windows() -> None:
    block = _nstb(4)
    h, w = 16, 24

    class Tokens(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.inner(t, (h, w))

    x = torch.randn(2, h * w, 16)
    _, dense = run_counting_macs(Tokens(block), x)
    everything = _masked(block, torch.ones(2, 1, h, w), 0.0)
    _, counted = run_counting_macs(Tokens(everything), x)
    assert counted == dense  # windows + context, as the dense block's own layers count them
    mask = torch.zeros(2, 1, h, w)
    mask[0, :, 4:12, 4:12] = 1  # exactly the first shifted window
    part = _masked(block, mask, 0.5)
    _, some = run_counting_macs(Tokens(part), x)
    assert part.last_selected == 1
    assert some == part.window_macs() + 2 * part.context_macs(h, w)


def _small_model() -> LoadedModel:
    arch = get_architecture("ngswin")
    return LoadedModel(arch, 2, _random_net(SMALL), Path("random"))


def test_every_window_gives_the_dense_network_and_none_skips_every_block() -> None:
    model = _small_model()
    x = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(2))
    acc = unwrap_accelerated(model.accelerated(MaskConfig(window_threshold=0.5)))
    with torch.no_grad():
        ref = model.dense()(x)
        padded = torch.nn.functional.pad(x, (0, 64 - 52, 0, 64 - 40), mode="reflect")
        ones = acc(padded, mask=torch.ones(1, 1, 64, 64))[..., :80, :104]
        assert (ones - ref).abs().max() <= 1e-5
        acc(padded, mask=torch.zeros(1, 1, 64, 64))
    blocks = [m for m in acc.modules() if isinstance(m, MaskedSwinBlock)]
    assert len(blocks) == 4 and all(isinstance(m.block, NSTB) for m in blocks)
    assert all(m.last_selected == 0 and m.effective_macs() == 0 for m in blocks)


def test_accelerate_wraps_only_the_lr_resolution_blocks() -> None:
    net = NGswin(SMALL)
    acc = accelerate(net, get_architecture("ngswin").rules)
    names = {n for n, m in acc.net.named_modules() if isinstance(m, MaskedSwinBlock)}
    assert names == {f"{s}.blocks.{i}" for s in ("encoder_layer1", "decoder_layer1") for i in range(2)}


def test_real_ngswin_sparse_equals_dense_mode(weights_dir: Path, data_dir: Path) -> None:
    from amsr.io.images import read_rgb8, to_tensor

    model = load_model("ngswin", 2, weights=weight_file(weights_dir, "ngswin_x2.pth"))
    x = to_tensor(read_rgb8(data_dir / "Set5" / "x2" / "LR" / "img_003.png"))[..., 10:74, 20:84]  # 64×64
    cfg = MaskConfig(window_threshold=0.5)
    sparse, dense = model.accelerated(cfg), model.accelerated(cfg, mode="dense")
    with torch.no_grad():
        ys, macs = run_counting_macs(sparse, x)
        yd, dense_macs = run_counting_macs(dense, x)
        _, ref_macs = run_counting_macs(model.dense(), x)
    assert (ys - yd).abs().max() <= 1e-4
    fraction = unwrap_accelerated(sparse).window_fraction()
    assert fraction is not None and 0 < fraction < 1
    assert dense_macs == ref_macs and macs < ref_macs
