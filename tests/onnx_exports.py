"""CARN-M x4 exports shared by tests/export and tests/runtime: each graph is exported once per test run.

Exporting the accelerated model takes the dynamo exporter tens of seconds on 2 cores, so the files are
cached for the whole pytest process (a temporary folder removed at exit) instead of per test module.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from amsr.models import LoadedModel, load_model


@functools.cache
def _tmp_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="amsr-onnx-tests-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


@functools.cache
def carn_m_x4(weights: Path) -> LoadedModel:
    return load_model("carn_m", 4, weights=weights)


@functools.cache
def exported(kind: str, weights: Path) -> Path:
    """``dense`` or ``accelerated`` (default mask settings) CARN-M x4, written by ``export_onnx`` (verified)."""
    from amsr.export.onnx_export import export_onnx

    model = carn_m_x4(weights)
    out = _tmp_dir() / f"carn_m_x4_{kind}.onnx"
    if kind == "dense":
        return export_onnx(model.dense(), out)
    if kind == "accelerated":
        return export_onnx(model.accelerated(), out)
    raise ValueError(kind)
