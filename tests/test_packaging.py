"""The package list in pyproject.toml names every package in the tree.

setuptools' ``packages`` is an explicit list (the ``package-dir`` mapping of export/, runtime/ and plugins/
into ``amsr.*`` rules out plain auto-discovery), so a new sub-package that is not added to it is silently left
out of a wheel: an editable install still works, a normal ``pip install .`` then fails on import. That
happened once (``amsr.rows``, the shipped default's execution path, missing from the wheel)."""
from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> tuple[set[str], dict[str, str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(config["packages"]), dict(config["package-dir"])


def _on_disk(package_dir: dict[str, str]) -> set[str]:
    found: set[str] = set()
    for name, folder in package_dir.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            relative = init.parent.relative_to(base).parts
            found.add(".".join((name, *relative)))
    return found


def test_every_package_in_the_tree_is_declared() -> None:
    declared, package_dir = _declared()
    missing = _on_disk(package_dir) - declared
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_every_declared_package_exists() -> None:
    declared, package_dir = _declared()
    assert declared <= _on_disk(package_dir), sorted(declared - _on_disk(package_dir))


def test_public_api_resolves_lazily() -> None:
    """``import amsr`` stays light (no torch: CLIs start fast) and every public name resolves to its module's."""
    import subprocess
    import sys

    code = "import sys, amsr; assert 'torch' not in sys.modules, 'torch imported'; print(sorted(amsr.__all__))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    import amsr
    from amsr.masking.mask import MaskConfig
    from amsr.models import load_model
    from amsr.surgery import accelerate, find_identity_convs

    assert amsr.MaskConfig is MaskConfig and amsr.load_model is load_model
    assert amsr.accelerate is accelerate and amsr.find_identity_convs is find_identity_convs
    assert all(hasattr(amsr, name) for name in amsr.__all__)
    assert set(amsr.__all__) - {"__version__"} == set(amsr._API)
    with pytest.raises(AttributeError, match="no attribute"):
        amsr.not_a_name  # noqa: B018
