"""NGswin: official key layout, hyper-parameter inference, strict loading errors, window rules, Set5 accuracy."""

from __future__ import annotations

import dataclasses
import hashlib
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import torch

from amsr.core.checkpoint import load_checkpoint
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.zoo import detect_architecture, get_architecture
from amsr.zoo.descriptor import StateDict
from amsr.zoo.ngswin import build, detect, infer_config
from amsr.zoo.ngswin_arch import NSTB, CosineWindowAttention, NGswin, NGswinConfig, StageConfig, seq_reflect_index
from amsr.zoo.padding import PaddedSR
from tests.conftest import mean_psnr, weight_file
from tests.zoo.test_swinir import (
    official_attn_mask,
    official_relative_position_index,
    official_state_dict,
    random_swinir,
    tiny,
)

ARCH = get_architecture("ngswin")
# Small but complete: three stages, head_dim ≠ dim/heads (as released), 2-gram context, window 8.
SMALL = NGswinConfig(scale=2, embed_dim=32, encoder=(StageConfig(2, 2, 12, 2, 48), StageConfig(2, 2, 12, 2, 48),
                                                     StageConfig(1, 2, 8, 2, 40)),
                     decoder=StageConfig(2, 2, 12, 2, 48))


def _random_net(cfg: NGswinConfig, seed: int = 0) -> NGswin:
    net = NGswin(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # perturb every tensor (bias tables start at 0) so a swapped key changes the output
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net


def _saved(tmp_path: Path, sd: StateDict) -> StateDict:
    path = tmp_path / "NGswin_x.pth"
    torch.save(dict(sd), path)  # the official files are plain state dicts, without buffers
    return load_checkpoint(path)


def _official_buffers(net: NGswin, training_patch: int = 64) -> StateDict:
    """What a full ``state_dict()`` of the official model adds: every index, and masks at the training size."""
    sd = dict(net.state_dict())
    for name, m in net.named_modules():
        if isinstance(m, CosineWindowAttention):
            sd[f"{name}.relative_position_index"] = official_relative_position_index(m.window_size)
        if isinstance(m, NSTB) and m.shift_size:
            side = training_patch // m.feature_stride
            sd[f"{name}.attn_mask"] = official_attn_mask(side, side, m.window_size, m.shift_size)
    return sd


@pytest.mark.parametrize("scale", [2, 3])
def test_random_checkpoint_roundtrip(tmp_path: Path, scale: int) -> None:
    cfg = dataclasses.replace(SMALL, scale=scale)
    net = _random_net(cfg)
    sd = _saved(tmp_path, net.state_dict())
    assert detect(sd) and detect_architecture(sd) is ARCH
    assert infer_config(sd, scale) == cfg
    built = build(sd, scale)
    x = torch.rand(1, 3, 40, 70)  # not a multiple of 32, and below the 64 minimum in height
    with torch.no_grad():
        want = PaddedSR(net, scale, ARCH.size)(x)
        got = PaddedSR(built, scale, ARCH.size)(x)
    assert got.shape == (1, 3, 40 * scale, 70 * scale)
    assert torch.isfinite(got).all()
    assert torch.equal(got, want)


def test_files_with_official_buffers_load(tmp_path: Path) -> None:
    net = _random_net(SMALL)
    sd = _saved(tmp_path, _official_buffers(net))
    built = build(sd, 2)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(built(x), net(x))
    bad = dict(sd)
    key = "encoder_layer1.blocks.0.ngram_window_partition.ngram_context.ngram_attn.relative_position_index"
    bad[key] = bad[key].flip(0)
    with pytest.raises(CheckpointError, match="relative position index"):
        build(bad, 2)
    bad = dict(sd, **{"decoder_layer1.blocks.1.attn_mask": torch.zeros(16, 64, 64)})
    with pytest.raises(CheckpointError, match="shifted-window mask"):
        build(bad, 2)


def test_wrong_keys_are_named() -> None:
    sd = dict(_random_net(SMALL).state_dict())
    renamed = dict(sd)
    renamed["bottleneck.norm.weights"] = renamed.pop("bottleneck.norm.weight")
    with pytest.raises(CheckpointError, match=r"bottleneck\.norm\.weight"):
        build(renamed, 2)
    missing = {k: v for k, v in sd.items() if k != "encoder_layer2.blocks.0.attn.logit_scale"}
    with pytest.raises(CheckpointError, match=r"encoder_layer2\.blocks\.0\.attn\.logit_scale"):
        build(missing, 2)
    no_signature = {k: v for k, v in sd.items() if not k.startswith("shallow_extract")}
    assert not detect(no_signature)
    with pytest.raises(CheckpointError, match="not an NGswin"):
        build(no_signature, 2)
    misshaped = dict(sd, **{"norm.weight": torch.ones(16)})
    with pytest.raises(CheckpointError, match="shape"):
        build(misshaped, 2)
    extra = dict(sd, **{"decoder_layer2.blocks.0.norm1.weight": torch.ones(32)})
    with pytest.raises(CheckpointError, match="unexpected"):
        build(extra, 2)


def test_wrong_scale_is_an_error() -> None:
    sd = dict(_random_net(SMALL).state_dict())
    with pytest.raises(CheckpointError, match="x2, not x3"):
        build(sd, 3)
    x5 = dict(sd, **{"to_target.before_shuffle.weight": torch.zeros(75, 32, 3, 3),
                     "to_target.before_shuffle.bias": torch.zeros(75)})
    with pytest.raises(UnsupportedModelError, match="x5"):
        build(x5, 5)


def test_window_patterns_select_the_lr_resolution_blocks() -> None:
    net = NGswin(SMALL)
    blocks = {n: m for n, m in net.named_modules() if isinstance(m, NSTB)}
    lr_blocks = {n for n, m in blocks.items() if m.feature_stride == 1}
    assert lr_blocks == {f"{stage}.blocks.{i}" for stage in ("encoder_layer1", "decoder_layer1") for i in range(2)}
    selected: set[str] = set()
    for pattern in ARCH.rules.windows:
        hits = {n for n in blocks if fnmatchcase(n, pattern)}
        assert hits, f"{pattern!r} selects no NSTB"
        selected |= hits
    assert selected == lr_blocks
    assert {m.feature_stride for n, m in blocks.items() if n.startswith("encoder_layer3")} == {4}


def test_block_interface() -> None:
    net = NGswin(SMALL)
    block = net.decoder_layer1.blocks[1]
    assert isinstance(block, NSTB)
    assert (block.window_size, block.shift_size) == (8, 4)
    assert net.decoder_layer1.blocks[0].shifted_window_mask(16, 16) is None
    for name in ("ngram_window_partition", "attn", "norm1", "ffn", "norm2"):
        assert isinstance(getattr(block, name), torch.nn.Module)
    x = torch.rand(2, 16, 24, 32)
    windows = block.ngram_window_partition(x)
    assert windows.shape == (2 * 2 * 3, 64, 32)
    assert block.attn(windows, block.shifted_window_mask(16, 24)).shape == windows.shape


def _official_seq_refl_win_pad(x: torch.Tensor, n: int, back: bool) -> torch.Tensor:
    """The official padding, written out: zero-pad n−1, then copy rows and columns in place."""
    pad = (n - 1, 0, n - 1, 0) if back else (0, n - 1, 0, n - 1)
    x = torch.nn.functional.pad(x, pad)
    if back:
        x[:, :, : n - 1, :] = x[:, :, n: 2 * n - 1, :]
        x[:, :, :, : n - 1] = x[:, :, :, n: 2 * n - 1]
    else:
        x[:, :, -(n - 1):, :] = x[:, :, -2 * n + 1: -n, :]
        x[:, :, :, -(n - 1):] = x[:, :, :, -2 * n + 1: -n]
    return x


@pytest.mark.parametrize(("n", "h", "w"), [(2, 2, 5), (2, 4, 4), (3, 3, 6), (3, 5, 4)])
def test_seq_reflect_padding_matches_official(n: int, h: int, w: int) -> None:
    x = torch.randn(1, 2, h, w)
    for back in (False, True):
        got = x.index_select(2, seq_reflect_index(h, n, not back)).index_select(3, seq_reflect_index(w, n, not back))
        assert torch.equal(got, _official_seq_refl_win_pad(x, n, back))
    with pytest.raises(ValueError, match="too small"):
        seq_reflect_index(1, 2, True)


def test_descriptor() -> None:
    assert ARCH.id == "ngswin" and ARCH.scales == (2, 3) and not ARCH.supports_half
    assert (ARCH.size.multiple_of, ARCH.size.minimum, ARCH.size.pad_mode) == (32, 64, "reflect")
    assert [w.filename for w in ARCH.weights] == ["ngswin_x2.pth", "ngswin_x3.pth"]
    assert ARCH.weight_file(3).url == "https://github.com/rami0205/NGramSwin/raw/main/pretrain/NGswin_x3.pth"
    with pytest.raises(UnsupportedModelError):
        ARCH.weight_file(4)


@pytest.mark.parametrize("scale", [2, 3])
def test_real_checkpoint_layout_and_sha(weights_dir: Path, scale: int) -> None:
    path = weight_file(weights_dir, f"ngswin_x{scale}.pth")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ARCH.weight_file(scale).sha256
    sd = load_checkpoint(path)
    assert detect_architecture(sd) is ARCH
    assert infer_config(sd, scale) == NGswinConfig(scale=scale)  # the official defaults
    other = 3 if scale == 2 else 2
    with pytest.raises(CheckpointError, match=f"x{scale}, not x{other}"):
        build(sd, other)


def test_not_confused_with_other_shared_checkpoints(weights_dir: Path) -> None:
    others = sorted(p for p in weights_dir.glob("*.pth") if not p.name.startswith("ngswin"))
    if not others:
        pytest.skip(f"no other checkpoints in {weights_dir}")
    for path in others:
        assert not detect(load_checkpoint(path)), path.name


@pytest.mark.parametrize("variant", ["classical", "lightweight", "real"])
def test_swinir_layouts_are_not_ngswin(variant: str) -> None:
    assert not detect(official_state_dict(random_swinir(tiny(variant, 2))))


@pytest.mark.slow
def test_set5_x2_psnr(data_dir: Path, weights_dir: Path) -> None:
    sd = load_checkpoint(weight_file(weights_dir, "ngswin_x2.pth"))
    net = build(sd, 2)
    assert mean_psnr(PaddedSR(net, 2, ARCH.size), data_dir, "Set5", 2) == pytest.approx(38.04, abs=0.05)
