"""Finding a named model's checkpoint: explicit file, local folder, user cache, then the official URL.

Order: ``--weights FILE``; ``$AMSR_WEIGHTS_DIR/<file>``; ``<cache>/weights/<file>``; download from the
authors' public URL into the cache, checked against the known sha256 before it is used. Offline or on a
checksum mismatch the error names the file, the places looked in and the URL to fetch it from.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from amsr.core import paths
from amsr.core.errors import CheckpointError
from amsr.core.files import atomic_path, check_writable
from amsr.zoo.descriptor import Architecture, WeightFile

log = logging.getLogger(__name__)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(wf: WeightFile, dest: Path, timeout: float = 60.0) -> Path:
    """Download ``wf.url`` to ``dest`` atomically, verifying ``wf.sha256`` (skipped when it is unknown)."""
    check_writable(dest, "checkpoint cache")  # before the download, not after it
    log.info("downloading %s from %s", wf.filename, wf.url)
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(wf.url, timeout=timeout) as resp, open(tmp, "wb") as out:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
            if wf.sha256 and (got := sha256_of(tmp)) != wf.sha256:
                raise CheckpointError(f"{wf.filename}: sha256 {got} from {wf.url} does not match the "
                                      f"official {wf.sha256}; not used")
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise CheckpointError(f"{wf.filename} is not available locally and downloading {wf.url} failed "
                              f"({reason}); download it yourself and pass --weights FILE "
                              f"(or put it in $AMSR_WEIGHTS_DIR)") from None
    if not wf.sha256:
        log.warning("%s: no official sha256 is known; downloaded file not verified", wf.filename)
    return dest


def resolve_weights(wf: WeightFile, weights: str | os.PathLike[str] | None = None,
                    allow_download: bool = True) -> Path:
    """Local path of the checkpoint ``wf`` (see module docstring for the search order)."""
    if weights is not None:
        p = Path(weights)
        if not p.is_file():
            raise CheckpointError(f"checkpoint not found: {p}")
        return p
    candidates = [paths.weights_dir() / wf.filename, paths.cache_dir() / "weights" / wf.filename]
    for p in candidates:
        if p.is_file():
            return p
    if not allow_download:
        looked = ", ".join(str(c.parent) for c in candidates)
        raise CheckpointError(f"{wf.filename} not found (looked in {looked}); get it from {wf.url}")
    return download(wf, candidates[1])


def check_official_scale(arch: Architecture, path: str | os.PathLike[str], scale: int) -> None:
    """``CheckpointError`` when ``path`` is, byte for byte (sha256), the official ``arch`` file of another scale.

    Some architectures cannot tell their scale from the weights (FSRCNN's transposed-conv stride and PAN's
    interpolation factor are not weights: an FSRCNN x2 file ran at x4 scored 10.8 dB with exit 0). The known
    checksums name the scale of every official file; a multi-scale file (CARN-M: one sha256 for x2/x3/x4) and
    unpublished checksums never refuse. Hashes only when another scale has a checksum of its own.
    """
    own = {w.sha256 for w in arch.weights if w.scale == scale and w.sha256}
    others = {w.sha256: w for w in arch.weights if w.scale != scale and w.sha256 and w.sha256 not in own}
    if not others:
        return
    match = others.get(sha256_of(path))
    if match is not None:
        raise CheckpointError(f"{path} is the official {arch.id} x{match.scale} checkpoint ({match.filename}), "
                              f"not x{scale}: pass the x{scale} file or --scale {match.scale}")
