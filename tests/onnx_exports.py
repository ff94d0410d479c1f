"""ONNX exports shared by the tests (CARN-M x4; tiny SwinIR and IMDTN x4 for the transformer path): each graph
is exported once per test run.

Exporting the accelerated model takes the dynamo exporter ~60 s on 2 cores, so the files are cached for the
whole run instead of per test module. The CARN-M graphs go through the production cache
(``exported_model_path``) in ``export_cache()``, a folder every pytest-xdist worker of the run shares (atomic
writes make concurrent first uses safe), so the CLI tests that run the production path find them too.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

from torch import nn

from amsr.models import LoadedModel, load_model


#: Set by pytest-xdist in every worker, the same for all workers of one run.
RUN_ID_VAR = "PYTEST_XDIST_TESTRUNUID"


def run_dir(run_id: str) -> Path:
    """The folder the workers of the xdist run ``run_id`` share (tests/conftest.py removes it at the end)."""
    return Path(tempfile.gettempdir()) / f"amsr-onnx-tests-{run_id}"


@functools.cache
def _tmp_dir() -> Path:
    run_id = os.environ.get(RUN_ID_VAR)
    if run_id:  # shared by the workers: the controller removes it once they are done
        d = run_dir(run_id)
        d.mkdir(exist_ok=True)
        return d
    d = Path(tempfile.mkdtemp(prefix="amsr-onnx-tests-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


def export_cache() -> Path:
    """The production export cache of this test run (``exported_model_path(cache_dir=...)``,
    ``AMSR_CACHE_DIR=export_cache().parent``): graphs exported by one test are served to the others."""
    d = _tmp_dir() / "cache" / "onnx"
    d.mkdir(parents=True, exist_ok=True)
    return d


@functools.cache
def carn_m_x4(weights: Path) -> LoadedModel:
    return load_model("carn_m", 4, weights=weights)


@functools.cache
def exported(kind: str, weights: Path) -> Path:
    """``dense`` or ``accelerated`` (default mask settings) CARN-M x4 from the run's export cache (exported and
    verified on first use)."""
    from amsr.runtime.upscaler import exported_model_path

    if kind not in ("dense", "accelerated"):
        raise ValueError(kind)
    return exported_model_path("carn_m", 4, accelerated=kind == "accelerated", weights=weights,
                               cache_dir=export_cache())


@functools.cache
def exported_blend(weights: Path) -> Path:
    """CARN-M x4 at its shipped default operating point (network mask d_net, output blend d_out, sparse tail),
    from the run's export cache: the graph ``amsr-upscale --operating-point default`` runs."""
    from amsr.operating_point import default_operating_point
    from amsr.runtime.upscaler import exported_model_path

    return exported_model_path("carn_m", 4, mask=default_operating_point("carn_m", 4), weights=weights,
                               cache_dir=export_cache())


# Transformer exports (tests/export/test_transformer_export.py, export/exportable's Swin twins).

SWINIR_SAMPLE = (32, 32)  # traced LR size of the SwinIR exports (a multiple of their 8×8 window)
IMDTN_SAMPLE = (24, 30)  # traced LR size of the IMDTN exports (a multiple of its 6×6 window)


@functools.cache
def tiny_swinir(variant: str) -> nn.Module:
    """A random-weight two-stage SwinIR x2 (``tests.zoo.test_swinir.tiny``), padded like the zoo wrapper."""
    from amsr.zoo.descriptor import SizeRequirements
    from amsr.zoo.padding import PaddedSR
    from tests.zoo.test_swinir import random_swinir, tiny

    net = random_swinir(tiny(variant, 2))
    return PaddedSR(net, 2, SizeRequirements(multiple_of=net.window_size, pad_mode="reflect")).eval()


@functools.cache
def tiny_swinir_accelerated(variant: str) -> nn.Module:
    """``tiny_swinir(variant)`` with every Swin block window-selected (default mask settings)."""
    from amsr.surgery import accelerate
    from amsr.zoo.descriptor import SizeRequirements, SparseRules
    from amsr.zoo.padding import PaddedSR

    dense = tiny_swinir(variant)
    acc = accelerate(dense.net, SparseRules(windows=("layers.*.residual_group.blocks.*",)))
    return PaddedSR(acc, 2, SizeRequirements(multiple_of=dense.net.window_size, pad_mode="reflect")).eval()


@functools.cache
def exported_swinir(variant: str, kind: str) -> Path:
    """``dense`` or ``accelerated`` tiny SwinIR x2, written by ``export_onnx`` (verified at 32×32 and 17×23)."""
    from amsr.export.onnx_export import export_onnx
    from amsr.runtime.export_check import onnxruntime_check

    model = tiny_swinir(variant) if kind == "dense" else tiny_swinir_accelerated(variant)
    return export_onnx(model, _tmp_dir() / f"swinir_{variant}_{kind}.onnx", sample_size=SWINIR_SAMPLE,
                       verify=onnxruntime_check)


@functools.cache
def imdtn_x4(weights: Path) -> LoadedModel:
    return load_model("imdtn", 4, weights=weights)


@functools.cache
def exported_imdtn(kind: str, weights: Path) -> Path:
    """``dense`` or ``accelerated`` (default mask settings) IMDTN x4, written by ``export_onnx`` (verified)."""
    return _export_zoo(imdtn_x4(weights), kind, IMDTN_SAMPLE)


def _export_zoo(model: LoadedModel, kind: str, sample_size: tuple[int, int]) -> Path:
    """Export ``model``'s ``dense`` or ``accelerated`` (default mask settings) form into the run's folder (traced
    at ``sample_size``, which the production cache does not take)."""
    from amsr.export.onnx_export import export_onnx
    from amsr.runtime.export_check import onnxruntime_check

    if kind not in ("dense", "accelerated"):
        raise ValueError(kind)
    net = model.dense() if kind == "dense" else model.accelerated()
    out = _tmp_dir() / f"{model.arch.id}_x{model.scale}_{kind}.onnx"
    return export_onnx(net, out, sample_size=sample_size, verify=onnxruntime_check)
