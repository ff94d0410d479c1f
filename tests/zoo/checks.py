"""Checks every CNN zoo entry shares: checksum of the shared file, official PSNR, conv rules."""

from __future__ import annotations

import hashlib
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from torch import nn

from amsr.core.checkpoint import load_checkpoint
from amsr.sparse.pixel import check_maskable_conv
from amsr.zoo import Architecture
from tests.conftest import mean_psnr, weight_file


def assert_sha256_matches_shared_file(arch: Architecture, weights_dir: Path, scale: int) -> None:
    w = arch.weight_file(scale)
    assert hashlib.sha256(weight_file(weights_dir, w.filename).read_bytes()).hexdigest() == w.sha256


def assert_official_psnr(arch: Architecture, data_dir: Path, weights_dir: Path, filename: str, scale: int,
                         expected: float, tol: float = 0.05) -> None:
    """The shared checkpoint is detected, builds, and scores ``expected`` ± ``tol`` dB on Set5."""
    sd = load_checkpoint(weight_file(weights_dir, filename))
    assert arch.detect(sd)
    assert mean_psnr(arch.build(sd, scale), data_dir, "Set5", scale) == pytest.approx(expected, abs=tol)


def conv_rule_matches(arch: Architecture, model: nn.Module) -> set[str]:
    """Names the architecture's conv rules select; each pattern matches ≥ 1 maskable 3×3 conv."""
    selected: set[str] = set()
    for pattern in arch.rules.convs:
        hits = {n: m for n, m in model.named_modules() if fnmatchcase(n, pattern)}
        assert hits, f"{pattern!r} matches nothing"
        for name, m in hits.items():
            check_maskable_conv(m, name)
        selected |= set(hits)
    return selected
