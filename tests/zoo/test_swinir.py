"""SwinIR: official key layout (with and without the official buffers), hyper-parameter inference, masks."""

from __future__ import annotations

import dataclasses
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch

from amsr.core.checkpoint import load_checkpoint
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.zoo import get_architecture
from amsr.zoo.swinir import ARCH, build, detect, detect_variant, infer_config
from amsr.zoo.swinir_arch import (
    SwinIR,
    SwinIRConfig,
    SwinTransformerBlock,
    relative_position_index,
    window_partition,
    window_reverse,
)
from tests.conftest import weight_file

# --- the official constructions, written out independently of amsr's code -----------------------------------

def official_relative_position_index(ws: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid([torch.arange(ws), torch.arange(ws)], indexing="ij"))
    flat = torch.flatten(coords, 1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def official_attn_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    img_mask = torch.zeros((1, h, w, 1))
    slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    cnt = 0
    for hs in slices:
        for wsl in slices:
            img_mask[:, hs, wsl, :] = cnt
            cnt += 1
    win = img_mask.view(1, h // ws, ws, w // ws, ws, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def official_state_dict(net: SwinIR, with_buffers: bool = True) -> dict[str, torch.Tensor]:
    """The net's weights in the release layout: learned tensors plus, per block, the two official buffers."""
    sd = dict(net.state_dict())
    if not with_buffers:
        return sd
    img = net.config.img_size
    for name, m in net.named_modules():
        if isinstance(m, SwinTransformerBlock):
            sd[f"{name}.attn.relative_position_index"] = official_relative_position_index(m.window_size)
            if m.shift_size:
                sd[f"{name}.attn_mask"] = official_attn_mask(img, img, m.window_size, m.shift_size)
    return sd


def random_swinir(cfg: SwinIRConfig, seed: int = 0) -> SwinIR:
    net = SwinIR(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():  # non-trivial values everywhere (the bias tables start at 0)
            base = 1.0 if name.endswith("norm1.weight") or name.endswith("norm2.weight") else 0.0
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
    return net


def tiny(variant: str, scale: int, **changes: object) -> SwinIRConfig:
    upsampler = {"classical": "pixelshuffle", "lightweight": "pixelshuffledirect", "real": "nearest+conv"}[variant]
    cfg = SwinIRConfig(upscale=scale, img_size=32, embed_dim=16, depths=(2, 2), num_heads=(2, 2), window_size=8,
                       mlp_ratio=2.0, upsampler=upsampler, num_feat=64 if variant == "lightweight" else 16)
    return dataclasses.replace(cfg, **changes)  # type: ignore[arg-type]


CASES = [
    ("classical", 2, None, {}),
    ("classical", 3, "params", {}),
    ("classical", 4, "params_ema", {"patch_norm": False}),
    ("lightweight", 2, "params", {"embed_dim": 12}),
    ("lightweight", 3, None, {}),
    ("lightweight", 4, None, {"mlp_ratio": 1.5, "depths": (2, 3), "num_heads": (2, 4)}),
    ("real", 4, "params_ema", {"resi_connection": "3conv"}),
    ("real", 2, None, {}),
    ("classical", 2, None, {"img_size": 8}),  # patch ≤ window: the official model disables shifting
]


@pytest.mark.parametrize(("variant", "scale", "wrapper", "changes"), CASES)
def test_official_layout_roundtrip(tmp_path: Path, variant: str, scale: int, wrapper: str | None,
                                   changes: dict[str, object]) -> None:
    cfg = tiny(variant, scale, **changes)
    net = random_swinir(cfg)
    sd = official_state_dict(net)
    path = tmp_path / "swinir.pth"
    torch.save({wrapper: sd} if wrapper else sd, path)

    loaded = load_checkpoint(path)
    assert detect(loaded)
    assert detect_variant(loaded) == variant
    assert infer_config(loaded, scale) == cfg
    built = build(loaded, scale)
    assert built.config == cfg
    for size in ((24, 40), (21, 37)):
        x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            want, got = net(x), built(x)
        assert got.shape == (1, 3, size[0] * scale, size[1] * scale)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_loads_without_official_buffers() -> None:
    cfg = tiny("classical", 2)
    net = random_swinir(cfg)
    sd = official_state_dict(net, with_buffers=False)
    assert not any("attn_mask" in k or "relative_position_index" in k for k in sd)
    built = build(sd, 2)
    assert built.config == dataclasses.replace(cfg, img_size=64)  # the patch size is then unknown: default
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(built(x), net(x), rtol=0, atol=1e-6)


def test_forward_accepts_any_size_like_check_image_size() -> None:
    net = random_swinir(tiny("lightweight", 2))
    x = torch.rand(1, 3, 13, 19)
    padded = torch.nn.functional.pad(x, (0, 5, 0, 3), mode="reflect")
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(padded)[..., :26, :38], rtol=0, atol=0)


def _sd(variant: str = "classical", scale: int = 2) -> dict[str, torch.Tensor]:
    return official_state_dict(random_swinir(tiny(variant, scale)))


def test_bad_checkpoints_raise() -> None:
    sd = _sd()
    extra = dict(sd, **{"layers.0.residual_group.blocks.0.attn.extra": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected"):
        build(extra, 2)
    missing = {k: v for k, v in sd.items() if k != "conv_last.weight"}
    with pytest.raises(CheckpointError, match="missing"):
        build(missing, 2)
    renamed = {k.replace("conv_first", "conv_start"): v for k, v in sd.items()}
    with pytest.raises(CheckpointError, match="not a SwinIR"):
        build(renamed, 2)
    bad_index = dict(sd)
    key = "layers.0.residual_group.blocks.0.attn.relative_position_index"
    bad_index[key] = bad_index[key].flip(0)
    with pytest.raises(CheckpointError, match="relative position index"):
        build(bad_index, 2)
    bad_mask = dict(sd)
    bad_mask["layers.0.residual_group.blocks.1.attn_mask"] = torch.zeros(16, 64, 64)
    with pytest.raises(CheckpointError, match="shifted-window mask"):
        build(bad_mask, 2)
    misshaped = dict(sd, **{"conv_after_body.weight": torch.zeros(16, 16, 1, 1)})
    with pytest.raises(CheckpointError, match="shape"):
        build(misshaped, 2)
    with pytest.raises(CheckpointError, match="x2, not x4"):
        build(sd, 4)
    with pytest.raises(UnsupportedModelError):
        build(_sd("real", 4), 3)
    denoise = {k: v for k, v in sd.items() if not k.startswith(("conv_before_upsample", "upsample"))}
    with pytest.raises(UnsupportedModelError, match="not a super-resolution"):
        build(denoise, 2)


def test_window_patterns_select_every_swin_block() -> None:
    net = build(_sd(), 2)
    blocks = {n for n, m in net.named_modules() if isinstance(m, SwinTransformerBlock)}
    assert len(blocks) == 4
    selected: set[str] = set()
    for pattern in ARCH.rules.windows:
        hits = {n for n in blocks if fnmatch(n, pattern)}
        assert hits, f"{pattern} selects no SwinTransformerBlock"
        selected |= hits
    assert selected == blocks


def test_block_interface() -> None:
    net = build(_sd(), 2)
    block = net.layers[0].residual_group.blocks[1]
    assert isinstance(block, SwinTransformerBlock)
    assert (block.window_size, block.shift_size) == (8, 4)
    assert net.layers[0].residual_group.blocks[0].shifted_window_mask(16, 16) is None
    for name in ("norm1", "attn", "norm2", "mlp"):
        assert isinstance(getattr(block, name), torch.nn.Module)


@pytest.mark.parametrize(("h", "w"), [(8, 8), (16, 16), (24, 40), (32, 32), (40, 16)])
def test_shifted_window_mask_matches_official(h: int, w: int) -> None:
    block = SwinTransformerBlock(dim=8, num_heads=2, window_size=8, shift_size=4, mlp_ratio=2.0)
    mask = block.shifted_window_mask(h, w, torch.device("cpu"))
    assert mask is not None
    torch.testing.assert_close(mask, official_attn_mask(h, w, 8, 4), rtol=0, atol=0)


def test_mask_and_index_equal_the_files_buffers() -> None:
    sd = _sd()
    net = build(sd, 2)
    for name, m in net.named_modules():
        if isinstance(m, SwinTransformerBlock):
            assert torch.equal(m.attn.relative_position_index, sd[f"{name}.attn.relative_position_index"])
            if m.shift_size:
                assert torch.equal(m.shifted_window_mask(32, 32), sd[f"{name}.attn_mask"])
    assert torch.equal(relative_position_index(6), official_relative_position_index(6))


def test_window_partition_roundtrip() -> None:
    x = torch.randn(2, 16, 24, 5)
    windows = window_partition(x, 8)
    assert windows.shape == (2 * 2 * 3, 8, 8, 5)
    assert torch.equal(windows[1], x[0, :8, 8:16])  # batch-major, then row-major over windows
    assert torch.equal(window_reverse(windows, 8, 16, 24), x)


def test_descriptor() -> None:
    assert get_architecture("swinir") is ARCH
    assert ARCH.size.multiple_of == 8 and not ARCH.supports_half
    assert ARCH.weight_file(4, "real").filename == "003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth"
    assert ARCH.weight_file(3, "lightweight").url.endswith("002_lightweightSR_DIV2K_s64w8_SwinIR-S_x3.pth")
    assert ARCH.weight_file(2).variant == "classical"
    with pytest.raises(UnsupportedModelError):
        ARCH.weight_file(2, "real")


def test_not_confused_with_swin_style_relatives(weights_dir: Path) -> None:
    for name in ("hit_srf_x4.pth", "imdtn_x4.pth"):
        assert not detect(load_checkpoint(weight_file(weights_dir, name)))
