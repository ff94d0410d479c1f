"""One naming scheme for cached ONNX exports (``Upscaler.from_model``'s cache and ``amsr-bench``'s), and the
sidecar that makes a cache entry trusted by its content, not by its file name.

An entry ``<key>.onnx`` is named after everything that changes the graph (``ExportKey``); beside it
``<key>.onnx.json`` records the file's sha256 and size and the key fields. ``cached_export`` serves an entry only
when both match; a truncated, swapped or half-copied file, or a missing/corrupt sidecar, is exported again
(one log line), so a damaged cache heals itself instead of failing on every later run.

Concurrent first uses stay safe: file and sidecar are each written atomically; a race between two writers
can at worst pair one's sidecar with the other's file, which the next use detects and re-exports.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amsr.core.files import save_bytes

if TYPE_CHECKING:
    from amsr.masking.mask import MaskConfig

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True)
class ExportKey:
    """Everything a cached export depends on.

    Attributes:
        model, variant, scale: the zoo model.
        kind: ``dense``, or ``amsr-d<dilation>-<MaskConfig.digest()>`` for an accelerated graph, with
            ``-tile<T>`` for amsr-bench's tile network and ``-<execution>`` for another execution (other graphs).
        weights_sha256: the checkpoint file's sha256.
        opset: ONNX opset of the export.
        toolchain: ``onnx_export.toolchain_hash()`` (torch/onnx/onnxscript versions and amsr's source).
    """

    model: str
    variant: str
    scale: int
    kind: str
    weights_sha256: str
    opset: int
    toolchain: str

    @property
    def file_name(self) -> str:
        variant = f"-{self.variant}" if self.variant else ""
        return (f"{self.model}{variant}_x{self.scale}_{self.kind}_w{self.weights_sha256[:12]}"
                f"_op{self.opset}_{self.toolchain}.onnx")


def export_key(model: str, scale: int, weights: str | os.PathLike[str], config: MaskConfig | None,
               variant: str = "", opset: int | None = None, tile: int | None = None,
               execution: str | None = None) -> ExportKey:
    """The key of an export: ``config=None`` is the dense network; ``tile`` names amsr-bench's tile network,
    ``execution`` another graph of the same settings (``"stages"``: the per-stage path where a row program
    exists)."""
    from amsr.export.onnx_export import MIN_OPSET, toolchain_hash
    from amsr.weights import sha256_of

    kind = "dense" if config is None else f"amsr-d{config.dilation}-{config.digest()}"
    if tile is not None:
        if config is None:
            raise ValueError("a tile network is an accelerated graph: pass its mask config")
        kind += f"-tile{tile}"
    if execution:
        kind += f"-{execution}"
    return ExportKey(model=model, variant=variant, scale=scale, kind=kind, weights_sha256=sha256_of(weights),
                     opset=MIN_OPSET if opset is None else opset, toolchain=toolchain_hash())


def sidecar_path(entry: str | os.PathLike[str]) -> Path:
    return Path(str(entry) + SIDECAR_SUFFIX)


def entry_problem(entry: Path, key: ExportKey) -> str | None:
    """Why ``entry`` cannot be served for ``key`` (``None``: it can): missing file or sidecar, unreadable
    sidecar, other key fields, or a file whose size or sha256 differs from the recorded ones."""
    from amsr.weights import sha256_of

    if not entry.is_file():
        return "not cached"
    side = sidecar_path(entry)
    try:
        record: Any = json.loads(side.read_text())
    except FileNotFoundError:
        return f"no sidecar {side.name}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"unreadable sidecar {side.name} ({type(e).__name__})"
    if not isinstance(record, dict) or record.get("key") != asdict(key):
        return f"sidecar {side.name} records another export"
    if record.get("size") != entry.stat().st_size:  # cheap first: a truncated file needs no hashing
        return f"size {entry.stat().st_size} ≠ recorded {record.get('size')}"
    if record.get("sha256") != sha256_of(entry):
        return "sha256 differs from the recorded one"
    return None


def record_entry(entry: Path, key: ExportKey) -> Path:
    """Write ``entry``'s sidecar (atomically): its sha256, size and ``key``."""
    from amsr.weights import sha256_of

    record = {"sha256": sha256_of(entry), "size": entry.stat().st_size, "key": asdict(key)}
    return save_bytes(sidecar_path(entry), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def cached_export(entry: Path, key: ExportKey, export: Callable[[Path], object]) -> Path:
    """``entry`` when its sidecar vouches for it, else ``export(entry)`` (which writes it atomically) and a new
    sidecar. A damaged entry is re-exported with one warning naming the reason."""
    problem = entry_problem(entry, key)
    if problem is None:
        log.info("using cached export %s", entry)
        return entry
    if problem != "not cached":
        log.warning("cached export %s not used (%s): exporting it again", entry.name, problem)
    export(entry)
    record_entry(entry, key)
    return entry
