"""The model zoo: an explicit, ordered registry of architecture descriptors.

Each entry names a module ``amsr.zoo.<module>`` that defines ``ARCH: Architecture``. Modules are imported
on first use, so a broken or heavy architecture never slows down or breaks the others.
"""

from __future__ import annotations

import importlib
from functools import cache

from amsr.core.errors import UnsupportedModelError, did_you_mean
from amsr.zoo.descriptor import Architecture, SizeRequirements, SparseRules, StateDict, WeightFile

# CLI name → module. Order is detection order: more specific layouts first.
_REGISTRY: dict[str, str] = {
    "carn": "carn",
    "carn_m": "carn_m",
    "imdn": "imdn",
    "pan": "pan",
    "fsrcnn": "fsrcnn",
    "imdtn": "imdtn",
    "hit_srf": "hit_srf",
    "swinir": "swinir",
    "ngswin": "ngswin",
}

__all__ = ["Architecture", "SizeRequirements", "SparseRules", "StateDict", "WeightFile",
           "architecture_names", "get_architecture", "architecture_at", "detect_architecture"]


def architecture_names() -> list[str]:
    """CLI names of every registered architecture, in registry order."""
    return list(_REGISTRY)


@cache
def get_architecture(name: str) -> Architecture:
    """The descriptor registered under ``name``; ``UnsupportedModelError`` listing the known names otherwise."""
    module = _REGISTRY.get(name)
    if module is None:
        guess = did_you_mean(name, _REGISTRY)
        raise UnsupportedModelError(f"unknown model {name!r}; " + (f"did you mean {guess!r}?" if guess else
                                                                  f"known models: {', '.join(_REGISTRY)}"))
    arch = importlib.import_module(f"amsr.zoo.{module}").ARCH
    if arch.id != name:
        raise AssertionError(f"registry entry {name!r} points at descriptor {arch.id!r}")
    return arch


def architecture_at(name: str, scale: int) -> Architecture:
    """``get_architecture(name)``, which must have a model at ``scale`` (``UnsupportedModelError`` otherwise)."""
    arch = get_architecture(name)
    if scale not in arch.scales:
        raise UnsupportedModelError(f"{name} has no x{scale} model (scales: {', '.join(map(str, arch.scales))})")
    return arch


def detect_architecture(sd: StateDict) -> Architecture:
    """The first registered architecture whose ``detect`` accepts the canonical state dict ``sd``."""
    for name in _REGISTRY:
        arch = get_architecture(name)
        if arch.detect(sd):
            return arch
    raise UnsupportedModelError(f"no known architecture matches this checkpoint (first keys: {', '.join(list(sd)[:4])})")
