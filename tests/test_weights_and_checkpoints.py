"""Checkpoint resolution (file, folder, cache, download with sha256) and bad checkpoints."""

from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path

import pytest
import torch

from amsr.core.checkpoint import canonicalize_state_dict, load_checkpoint
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.models import load_model
from amsr.weights import resolve_weights
from amsr.zoo import WeightFile, get_architecture


@pytest.fixture()
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Empty weights folder and cache: nothing is found locally."""
    monkeypatch.setenv("AMSR_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("AMSR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def _offline(*_a, **_k):  # type: ignore[no-untyped-def]
    raise urllib.error.URLError("network unreachable")


def test_offline_without_file_names_file_and_url(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("urllib.request.urlopen", _offline)
    with pytest.raises(CheckpointError, match=r"carn_m\.pth.*github\.com/nmhkahn.*--weights"):
        load_model("carn_m", 4)
    assert not [p for p in (isolated / "cache").rglob("*") if p.is_file()], "no partial download may remain"


def test_download_verifies_sha256_and_is_atomic(isolated: Path) -> None:
    src = isolated / "src.pth"
    torch.save({"w": torch.ones(2)}, src)
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    ok = resolve_weights(WeightFile(4, "m.pth", src.as_uri(), good))
    assert ok == isolated / "cache" / "weights" / "m.pth" and ok.read_bytes() == src.read_bytes()
    with pytest.raises(CheckpointError, match="does not match"):
        resolve_weights(WeightFile(4, "bad.pth", src.as_uri(), "0" * 64))
    leftovers = [p.name for p in (isolated / "cache" / "weights").iterdir()]
    assert leftovers == ["m.pth"], "a rejected download must leave nothing behind"


def test_env_folder_is_used(isolated: Path) -> None:
    (isolated / "weights").mkdir()
    f = isolated / "weights" / "x.pth"
    f.write_bytes(b"0")
    assert resolve_weights(WeightFile(2, "x.pth", "https://invalid.example/x.pth", "")) == f


def test_missing_explicit_file() -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_model("carn_m", 4, weights="/nonexistent/carn_m.pth")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated"])
def test_corrupt_checkpoint(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "bad.pth"
    f.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_checkpoint(f)


def test_truncated_real_checkpoint(tmp_path: Path, weights_dir: Path) -> None:
    src = weights_dir / "carn_m.pth"
    if not src.is_file():
        pytest.skip("carn_m.pth not in the shared weights")
    f = tmp_path / "carn_m.pth"
    f.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_model("carn_m", 4, weights=f)


def test_checkpoint_of_another_architecture(weights_dir: Path) -> None:
    f = weights_dir / "carn_m.pth"
    if not f.is_file():
        pytest.skip("carn_m.pth not in the shared weights")
    with pytest.raises(CheckpointError, match="not a imdn checkpoint.*carn_m"):
        load_model("imdn", 4, weights=f)


def test_unknown_model_and_scale() -> None:
    with pytest.raises(UnsupportedModelError, match="known models"):
        get_architecture("edsr")
    with pytest.raises(UnsupportedModelError, match="x5"):
        load_model("carn_m", 5)


def test_canonicalize_unwraps_and_strips() -> None:
    sd = {"module.a": torch.zeros(1), "module.b": torch.ones(1)}
    assert set(canonicalize_state_dict({"params_ema": sd, "params": {"x": torch.zeros(1)}})) == {"a", "b"}
    with pytest.raises(CheckpointError, match="no tensors"):
        canonicalize_state_dict({"epoch": 3})
