"""IMDTN: the released checkpoint on Set5, the official layout, inference of hyper-parameters, sparse rules."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch
from torch import nn

from amsr.core.checkpoint import load_checkpoint
from amsr.core.errors import CheckpointError
from amsr.zoo import get_architecture
from amsr.zoo.imdtn import ARCH, build, detect, infer_config
from amsr.zoo.imdtn_arch import IMDTN, IMDTBlock, IMDTNConfig, channel_shuffle
from amsr.zoo.padding import PaddedSR
from amsr.zoo.swinir_arch import SwinTransformerBlock, relative_position_index, shifted_window_mask
from tests.conftest import mean_psnr, weight_file

TINY = IMDTNConfig(nf=16, num_modules=2, window_size=6, num_heads=2, depth=2, mlp_ratio=2.0)


def random_imdtn(cfg: IMDTNConfig = TINY) -> IMDTN:
    net = IMDTN(cfg).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            base = 1.0 if name.endswith(("norm1.weight", "norm2.weight")) else 0.0
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
    return net


def official_state_dict(net: IMDTN, img_size: int = 48) -> dict[str, torch.Tensor]:
    """Weights plus the official Swin buffers (index everywhere, mask on shifted blocks) as the team saved."""
    sd = dict(net.state_dict())
    for name, m in net.named_modules():
        if isinstance(m, SwinTransformerBlock):
            sd[f"{name}.attn.relative_position_index"] = relative_position_index(m.window_size)
            mask = shifted_window_mask(img_size, img_size, m.window_size, m.shift_size)
            if mask is not None:
                sd[f"{name}.attn_mask"] = mask.clone()
    return sd


@pytest.mark.slow
def test_set5_psnr(weights_dir: Path, data_dir: Path) -> None:
    net = build(load_checkpoint(weight_file(weights_dir, "imdtn_x4.pth")), 4)
    psnr = mean_psnr(PaddedSR(net, 4, ARCH.size), data_dir, "Set5", 4)
    assert psnr == pytest.approx(32.15, abs=0.05)


def test_released_file_hyper_parameters(weights_dir: Path) -> None:
    sd = load_checkpoint(weight_file(weights_dir, "imdtn_x4.pth"))
    assert detect(sd)
    assert infer_config(sd, 4) == IMDTNConfig()
    assert sd["IMDTB1.transformer.residual_group.blocks.1.attn_mask"].shape == (64, 36, 36)  # 48×48 patches


def test_official_layout_roundtrip(tmp_path: Path) -> None:
    net = random_imdtn()
    path = tmp_path / "imdtn.pth"
    torch.save(official_state_dict(net), path)
    sd = load_checkpoint(path)
    assert detect(sd)
    built = build(sd, 4)
    assert built.config == TINY
    no_buffers = build(dict(net.state_dict()), 4)
    x = torch.rand(1, 3, 20, 26, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x)
        torch.testing.assert_close(built(x), want, rtol=0, atol=0)
        torch.testing.assert_close(no_buffers(x), want, rtol=0, atol=0)
    assert want.shape == (1, 3, 80, 104)


def _official_block_forward(block: IMDTBlock, x: torch.Tensor) -> torch.Tensor:
    """The team's IMDTBlock.forward, including its in-place LeakyReLU on the shuffled features."""
    act = nn.LeakyReLU(0.05, inplace=True)
    split = (block.distilled, block.remaining)
    out_c1 = channel_shuffle(block.c1(x) + x, 4)
    d1, r1 = torch.split(act(out_c1), split, dim=1)
    out_c2 = channel_shuffle(block.c2(r1) + out_c1, 4)
    d2, r2 = torch.split(act(out_c2), split, dim=1)
    out_c3 = channel_shuffle(block.c3(r2) + out_c2, 4)
    d3, r3 = torch.split(act(out_c3), split, dim=1)
    out = torch.cat([d1, d2, d3, block.c4(r3)], dim=1)
    b, c, h, w = out.shape
    tokens = out.flatten(2).transpose(1, 2)
    swin = block.transformer.residual_group(tokens, (h, w)).transpose(1, 2).reshape(b, c, h, w)
    return swin + out + x


def test_block_matches_official_formulation() -> None:
    block = random_imdtn().IMDTB1
    assert isinstance(block, IMDTBlock)
    x = torch.randn(2, 16, 12, 18)
    with torch.no_grad():
        torch.testing.assert_close(block(x), _official_block_forward(block, x), rtol=0, atol=1e-6)


def test_bad_checkpoints_raise() -> None:
    sd = official_state_dict(random_imdtn())
    with pytest.raises(CheckpointError, match="unexpected"):
        build(dict(sd, **{"IMDTB1.c5.weight": torch.zeros(1)}), 4)
    with pytest.raises(CheckpointError, match="missing"):
        build({k: v for k, v in sd.items() if k != "IMDTB2.c4.bias"}, 4)
    with pytest.raises(CheckpointError, match="not an IMDTN"):
        build({k.replace("fea_conv", "head"): v for k, v in sd.items()}, 4)
    with pytest.raises(CheckpointError, match="x4, not x2"):
        build(sd, 2)
    key = "IMDTB1.transformer.residual_group.blocks.1.attn_mask"
    with pytest.raises(CheckpointError, match="shifted-window mask"):
        build(dict(sd, **{key: torch.zeros_like(sd[key])}), 4)


def test_sparse_rules_select_the_right_modules() -> None:
    net = build(official_state_dict(random_imdtn()), 4)
    modules = dict(net.named_modules())
    blocks = {n for n, m in modules.items() if isinstance(m, SwinTransformerBlock)}
    for pattern in ARCH.rules.windows:
        assert {n for n in blocks if fnmatch(n, pattern)}, f"{pattern} selects no SwinTransformerBlock"
    assert {n for n in blocks if any(fnmatch(n, p) for p in ARCH.rules.windows)} == blocks
    # Deliberately no conv rule: the in==out convs feed residual sums (see the descriptor's comment).
    assert ARCH.rules.convs == ()


def test_descriptor() -> None:
    assert get_architecture("imdtn") is ARCH
    w = ARCH.weight_file(4)
    assert w.filename == "imdtn_x4.pth" and w.url.endswith("model_zoo/team09_imdtn.pth")
    assert ARCH.size.multiple_of % IMDTNConfig().window_size == 0
