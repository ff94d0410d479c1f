"""mypy over amsr/, export/, runtime/ and plugins/ under their installed names (amsr.export, ...).

pyproject's package-dir maps export/ to amsr.export (and so on); the editable install does it with an import
hook that mypy cannot follow, so ``mypy -p amsr`` finds no amsr.export and ``mypy export`` names its files
export.*. This runs mypy's own command line on the package folders ([tool.mypy] options, extra arguments
passed through) and renames those sources to their installed names before the build.

Usage, from the repository root: ``python scripts/typecheck.py``; the exit status is mypy's."""

from __future__ import annotations

import sys
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # mypy depends on tomli before 3.11
    import tomli as tomllib

from mypy import util
from mypy.fscache import FileSystemCache
from mypy.main import process_options, run_build

ROOT = Path(__file__).resolve().parents[1]


def package_dirs() -> dict[str, str]:
    """{installed package: folder}, from [tool.setuptools] package-dir."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(config["tool"]["setuptools"]["package-dir"])


def installed_name(module: str, mapping: dict[str, str]) -> str:
    """``export.passes`` -> ``amsr.export.passes``: mypy names a file by the folders above it."""
    for name, folder in mapping.items():
        if module == folder or module.startswith(folder + "."):
            return name + module[len(folder):]
    return module


def main(argv: list[str]) -> int:
    mapping = package_dirs()
    t0 = time.time()
    fscache = FileSystemCache()
    sources, options = process_options([*argv, *mapping.values()], stdout=sys.stdout, stderr=sys.stderr,
                                       fscache=fscache)
    for source in sources:
        source.module = installed_name(source.module, mapping)
    _, messages, blockers = run_build(sources, options, fscache, t0, sys.stdout, sys.stderr)
    n_errors, n_notes, n_files = util.count_stats(messages)
    formatter = util.FancyFormatter(sys.stdout, sys.stderr, options.hide_error_codes)
    if n_errors:
        print(formatter.format_error(n_errors, n_files, len(sources), blockers=blockers,
                                     use_color=options.color_output))
    else:
        print(formatter.format_success(len(sources), options.color_output))
    if blockers:
        return 2
    return 1 if messages and n_notes < len(messages) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
