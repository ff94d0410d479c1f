"""HiT-SRF: official key layout, strict loading, detection, window rules, padding/bias rewrites, Set5 accuracy."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from amsr.core.checkpoint import load_checkpoint
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.zoo import get_architecture
from amsr.zoo.descriptor import StateDict
from amsr.zoo.hit_srf import infer_config
from amsr.zoo.hit_srf_arch import (
    HierarchicalTransformerBlock,
    HiTSRF,
    HiTSRFConfig,
    SpatialChannelCorrelation,
    mirror_index,
    pad_to_windows,
    window_partition,
    window_reverse,
)
from amsr.zoo.padding import PaddedSR
from tests.conftest import mean_psnr, weight_file
from tests.zoo.checks import assert_sha256_matches_shared_file

ARCH = get_architecture("hit_srf")
# Small but complete: one group with all six hierarchical windows (4…64), one shorter group.
SMALL = HiTSRFConfig(scale=4, embed_dim=24, depths=(2, 6), num_heads=(2, 3), mlp_hidden=36)


def _random_net(cfg: HiTSRFConfig) -> HiTSRF:
    torch.manual_seed(0)
    net = HiTSRF(cfg).eval()
    with torch.no_grad():  # perturb every tensor (LayerNorms too) so a swapped key would change the output
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _saved(tmp_path: Path, sd: StateDict) -> StateDict:
    torch.save({"params": sd}, tmp_path / "hit_srf.pth")  # the official BasicSR wrapper
    return load_checkpoint(tmp_path / "hit_srf.pth")


@pytest.mark.parametrize(("upsampler", "scale"), [("pixelshuffledirect", 4), ("pixelshuffle", 3)])
def test_random_checkpoint_roundtrip(tmp_path: Path, upsampler: str, scale: int) -> None:
    cfg = HiTSRFConfig(scale=scale, embed_dim=SMALL.embed_dim, depths=SMALL.depths, num_heads=SMALL.num_heads,
                       mlp_hidden=SMALL.mlp_hidden, upsampler=upsampler)
    net = _random_net(cfg)
    sd = _saved(tmp_path, net.state_dict())
    assert ARCH.detect(sd)
    built = ARCH.build(sd, scale)
    assert isinstance(built, HiTSRF) and built.cfg == cfg
    x = torch.rand(1, 3, 20, 36)  # smaller than the 48/64 windows: exercises the multi-reflection padding
    with torch.no_grad():
        want = PaddedSR(net, scale, ARCH.size)(x)
        got = PaddedSR(built, scale, ARCH.size)(x)
    assert got.shape == (1, 3, 20 * scale, 36 * scale)
    assert torch.isfinite(got).all()
    assert torch.equal(got, want)


def test_real_checkpoint_layout_and_sha(weights_dir: Path) -> None:
    assert_sha256_matches_shared_file(ARCH, weights_dir, 4)
    sd = load_checkpoint(weight_file(weights_dir, "hit_srf_x4.pth"))
    assert ARCH.detect(sd)
    assert infer_config(sd, 4) == HiTSRFConfig()  # the official defaults: 60 ch, 4×6 blocks, 6 heads, ratio 2
    own = {k: tuple(v.shape) for k, v in HiTSRF(HiTSRFConfig()).state_dict().items()}
    assert own == {k: tuple(v.shape) for k, v in sd.items()}


@pytest.mark.slow
def test_real_checkpoint_set5_psnr(weights_dir: Path, data_dir: Path) -> None:
    net = ARCH.build(load_checkpoint(weight_file(weights_dir, "hit_srf_x4.pth")), 4)
    psnr = mean_psnr(PaddedSR(net, 4, ARCH.size), data_dir, "Set5", 4)
    assert psnr == pytest.approx(32.55, abs=0.05)  # published 32.55


def test_bad_checkpoints_raise(tmp_path: Path) -> None:
    sd = _random_net(SMALL).state_dict()
    renamed = dict(sd)
    renamed["norm.weights"] = renamed.pop("norm.weight")
    with pytest.raises(CheckpointError, match="norm.weight"):
        ARCH.build(_saved(tmp_path, renamed), 4)
    extra = dict(sd, **{"layers.0.residual_group.blocks.2.norm1.weight": torch.ones(24)})  # a stray 3rd block
    with pytest.raises(CheckpointError):
        ARCH.build(extra, 4)
    with pytest.raises(CheckpointError, match="x4, not x2"):
        ARCH.build(sd, 2)
    too_deep = dict(sd)  # a 7th block: no published window ratio for it
    for k, v in sd.items():
        if k.startswith("layers.1.residual_group.blocks.0."):
            too_deep[k.replace("blocks.0.", "blocks.6.")] = v
    with pytest.raises(CheckpointError, match="allow 1 to 6"):
        ARCH.build(too_deep, 4)


def test_detect_rejects_swinir_and_hit_sir() -> None:
    swinir = {"conv_first.weight": torch.zeros(60, 3, 3, 3),
              "layers.0.residual_group.blocks.0.attn.qkv.weight": torch.zeros(180, 60),
              "layers.0.residual_group.blocks.0.attn.relative_position_bias_table": torch.zeros(225, 6),
              "upsample.0.weight": torch.zeros(48, 60, 3, 3)}
    assert not ARCH.detect(swinir)
    hit_sir = {k: v for k, v in _random_net(SMALL).state_dict().items() if ".dwconv." not in k}  # plain-MLP sibling
    assert not ARCH.detect(hit_sir)


def test_detect_rejects_every_other_shared_checkpoint(weights_dir: Path) -> None:
    others = sorted(p for p in weights_dir.glob("*.pth") if p.name != "hit_srf_x4.pth")
    if not others:
        pytest.skip(f"no other checkpoints in {weights_dir}")
    assert [p.name for p in others if ARCH.detect(load_checkpoint(p))] == []


def test_window_patterns_select_every_block() -> None:
    net = _random_net(SMALL)
    names = {n for n, m in net.named_modules() if isinstance(m, HierarchicalTransformerBlock)}
    assert len(names) == sum(SMALL.depths)
    for pattern in ARCH.rules.windows:
        assert any(fnmatchcase(n, pattern) for n in names), pattern
    selected = {n for n, _ in net.named_modules() if any(fnmatchcase(n, p) for p in ARCH.rules.windows)}
    assert selected == names  # blocks only, never their sub-modules


def test_block_interface() -> None:
    net = _random_net(SMALL)
    blocks = net.layers[1].residual_group.blocks
    assert [b.window_size for b in blocks] == [(4, 4), (8, 8), (16, 16), (32, 32), (48, 48), (64, 64)]
    assert [b.base_window for b in blocks] == [(4, 4)] + [(8, 8)] * 5
    block = blocks[2]
    x = torch.randn(1, 13, 21, SMALL.embed_dim)
    with torch.no_grad():
        y = x + block.attention_branch(x)
        assert torch.equal(block(x), y + block.mlp_branch(y))


@pytest.mark.parametrize(("h", "w"), [(20, 36), (10, 60), (1, 5), (7, 7)])
def test_mirror_padding_matches_official_two_pass_reflect(h: int, w: int) -> None:
    x = torch.randn(1, h, w, 2)
    for win in (4, 16, 48, 64):
        got = pad_to_windows(x, (win, win))
        hp, wp = -(-h // win) * win, -(-w // win) * win
        assert got.shape == (1, hp, wp, 2)
        assert torch.equal(got[:, :h, :w], x)
        # the official check_image_size: a first reflection by (size − 1) when one pass cannot reach, then the rest
        ph, pw = hp - h, wp - w
        y = x.permute(0, 3, 1, 2)
        if min(h, w) > 1 and (ph >= h or pw >= w):
            y = F.pad(y, (0, w - 1, 0, h - 1), mode="reflect")
            ph, pw = ph - (h - 1), pw - (w - 1)
        if min(h, w) > 1 and ph < y.shape[2] and pw < y.shape[3]:  # otherwise the official code raises
            want = F.pad(y, (0, pw, 0, ph), mode="reflect").permute(0, 2, 3, 1)
            assert torch.equal(got, want)
    assert mirror_index(3, 9, torch.device("cpu")).tolist() == [0, 1, 2, 1, 0, 1, 2, 1, 0]


def test_window_partition_roundtrip() -> None:
    x = torch.randn(2, 16, 24, 3)
    win = window_partition(x, (8, 8))
    assert win.shape == (2 * 2 * 3, 64, 3)
    assert torch.equal(win[1], x[0, :8, 8:16].reshape(64, 3))  # (batch, row, column) order, row-major tokens
    assert torch.equal(window_reverse(win, (8, 8), 16, 24), x)


@pytest.mark.parametrize("window", [(4, 4), (8, 8), (16, 16), (24, 24)])
def test_position_bias_matches_official_gather_and_mean(window: tuple[int, int]) -> None:
    torch.manual_seed(0)
    scc = SpatialChannelCorrelation(32, 2, window, (8, 8))
    wh, ww = window
    (bh, bw), (sh, sw) = scc.base_window, scc.sub
    # official: table over all (dy, dx), gathered with a Swin relative index into L×L, averaged per base cell
    dy, dx = torch.arange(1 - wh, wh), torch.arange(1 - ww, ww)
    table = scc.pos(torch.stack(torch.meshgrid(dy, dx, indexing="ij")).flatten(1).t().float())
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    index = (rel[..., 0] + wh - 1) * (2 * ww - 1) + rel[..., 1] + ww - 1
    full = table[index.reshape(-1)].view(wh * ww, bh, sh, bw, sw, -1)
    want = full.permute(0, 1, 3, 5, 2, 4).reshape(wh * ww, bh * bw, 2, -1).mean(-1).permute(2, 0, 1)
    with torch.no_grad():
        torch.testing.assert_close(scc.position_bias(), want)


def test_descriptor() -> None:
    assert ARCH.id == "hit_srf" and ARCH.scales == (4,)
    assert ARCH.weight_file(4).filename == "hit_srf_x4.pth"
    assert not ARCH.supports_half
    with pytest.raises(UnsupportedModelError):
        ARCH.weight_file(2)
