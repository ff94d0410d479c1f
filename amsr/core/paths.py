"""Where amsr finds data and weights: environment variables first, then the documented defaults."""

from __future__ import annotations

import os
from pathlib import Path

# The shared benchmark data and checkpoints sit beside a developer's checkout; users point the variables
# at their own copies.
_REPO_ROOT = Path(__file__).resolve().parents[2]  # amsr/core/paths.py → the checkout


def data_dir() -> Path:
    """``$AMSR_DATA_DIR``, default ``<checkout>/../shared/data``."""
    return Path(os.environ.get("AMSR_DATA_DIR", _REPO_ROOT.parent / "shared" / "data"))


def weights_dir() -> Path:
    """``$AMSR_WEIGHTS_DIR``, default ``<checkout>/../shared/weights``."""
    return Path(os.environ.get("AMSR_WEIGHTS_DIR", _REPO_ROOT.parent / "shared" / "weights"))


def cache_dir() -> Path:
    """``$AMSR_CACHE_DIR``, default ``$XDG_CACHE_HOME/amsr`` or ``~/.cache/amsr``: downloads go here."""
    if "AMSR_CACHE_DIR" in os.environ:
        return Path(os.environ["AMSR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "amsr"
