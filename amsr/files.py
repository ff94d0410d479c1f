"""Atomic file writes: a reader never sees a half-written output."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it replaces ``dest`` in one ``os.replace``.

    On an exception the temporary file is removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
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
