"""Atomic file writes (a reader never sees a half-written output) and output-path checks done before the work.

Temporary files are ``.<name>.<random>.part`` beside their destination. They are removed on any exception,
``SystemExit`` included (the CLIs turn SIGTERM into one, ``amsr.cli.common``); what a SIGKILL or a power cut
leaves is swept by the next atomic write in that folder once it is older than ``STALE_PART_SECONDS``.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from amsr.core.errors import AmsrError

log = logging.getLogger(__name__)

# Age after which a ``.part`` file is taken as left by a killed writer. Age, not the writer's pid: output
# folders are shared between hosts and containers (NFS, Ray workers, bind mounts) where a pid cannot be checked,
# and no amsr write keeps a temporary file unmodified for an hour (the slowest, an accelerated transformer
# export, rewrites its temporary within minutes on 2 cores).
STALE_PART_SECONDS = 3600.0
_swept: set[Path] = set()  # folders already swept by this process: one scan per folder, not one per write


class OutputPathError(AmsrError):
    """An output path that cannot be written: a directory where a file is expected, a file in its parent path,
    or a folder that refuses new files."""


@contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it replaces ``dest`` in one ``os.replace``.

    On an exception the temporary file is removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_parts(dest.parent)
    tmp_path = _create_temp(dest)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _create_temp(dest: Path) -> Path:
    """A new empty file ``.<name>.<random>.part`` beside ``dest`` with the permissions of an ordinary new file.

    ``tempfile.mkstemp`` creates its files 0600, and ``os.replace`` keeps that mode, so every output would be
    private to its owner; opening with mode 0666 lets the process umask decide, as for any other file.
    """
    for _ in range(100):
        tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.part"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {dest}")


def save_bytes(dest: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically and return the path."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def save_with(dest: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and move the result to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        writer(tmp)
    return Path(dest)


def sweep_stale_parts(folder: Path, max_age: float = STALE_PART_SECONDS) -> list[Path]:
    """Remove the ``.*.part`` files in ``folder`` last modified more than ``max_age`` seconds ago (once per folder
    and process); returns what was removed. Errors are ignored: sweeping is housekeeping, never a reason to fail."""
    key = folder.resolve()
    if key in _swept:
        return []
    _swept.add(key)
    removed = []
    cutoff = time.time() - max_age
    try:
        candidates = list(folder.glob(".*.part"))
    except OSError:
        return []
    for p in candidates:
        try:
            if p.is_file() and p.stat().st_mtime < cutoff:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    if removed:
        log.info("removed %d stale temporary file(s) in %s", len(removed), folder)
    return removed


def check_writable(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Refuse, before any work, an output FILE path that cannot be written: an existing directory, a path
    below a regular file, or a folder that refuses new files. Creates nothing that stays.

    Raises:
        OutputPathError: one line naming ``what`` (e.g. ``--json``) and the reason.
    """
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{what} {p} is a directory: give a file name")
    _check_folder(p.parent, what, p)
    return p


def check_writable_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """``check_writable`` for an output FOLDER (created later if missing): it must not be a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{what} {p} is a file, not a directory")
    _check_folder(p, what, p)
    return p


def _check_folder(folder: Path, what: str, target: Path) -> None:
    """The nearest existing ancestor of ``folder`` must be a directory that accepts a new file (tried, not asked:
    ``os.access`` says yes to root on a read-only directory and knows nothing about read-only mounts)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{what} {target}: {existing} is a file, not a directory")
    probe = existing / f".amsr-write-test.{os.getpid()}.{secrets.token_hex(4)}.part"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as e:
        raise OutputPathError(f"{what} {target}: cannot write in {existing} ({e.strerror or e})") from None
    probe.unlink(missing_ok=True)
