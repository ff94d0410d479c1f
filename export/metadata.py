"""Model identity stored in an exported ONNX file, so later tools rebuild the same PyTorch reference.

Keys (``metadata_props``): ``amsr.model``, ``amsr.variant``, ``amsr.weights_sha256`` next to what the
exporter writes itself (``amsr.kind``, ``amsr.scale``, ``amsr.mask_config``, …).
"""

from __future__ import annotations

import os
from pathlib import Path

from amsr.errors import ExportError
from amsr.files import atomic_path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """All ``metadata_props`` of an ONNX file (weights are not loaded)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, OSError, …: all mean "not a readable model"
        raise ExportError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    return {p.key: p.value for p in model.metadata_props}


def add_metadata(path: str | os.PathLike[str], meta: dict[str, str]) -> Path:
    """Add or replace ``meta`` entries in an ONNX file, rewriting it atomically."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return Path(path)
