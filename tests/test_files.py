"""amsr/core/files.py: atomic replacement and the permissions of what it writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from amsr.core.files import atomic_path, save_bytes


def test_outputs_get_ordinary_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = save_bytes(tmp_path / "a" / "x.bin", b"data")
    finally:
        os.umask(old)
    assert out.read_bytes() == b"data"
    assert out.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    dest = save_bytes(tmp_path / "x.bin", b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            assert tmp.parent == dest.parent and tmp.name.startswith(".x.bin.") and tmp.suffix == ".part"
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_shared_folders_default_beside_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the variables, data and weights are ``<checkout>/../shared`` (a moved ``paths.py`` that got this
    wrong would turn every weight-dependent test into a skip, silently)."""
    from amsr.core import paths

    monkeypatch.delenv("AMSR_DATA_DIR", raising=False)
    monkeypatch.delenv("AMSR_WEIGHTS_DIR", raising=False)
    checkout = Path(__file__).resolve().parents[1]
    assert paths.data_dir() == checkout.parent / "shared" / "data"
    assert paths.weights_dir() == checkout.parent / "shared" / "weights"
