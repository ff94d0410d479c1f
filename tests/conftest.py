"""Shared fixtures: the benchmark data and checkpoints, found through amsr's own path rules."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from amsr.core import paths
from amsr.io.images import list_images, read_rgb8, to_tensor, to_uint8
from amsr.io.metrics import psnr_y


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = paths.data_dir()
    if not (d / "Set5").is_dir():
        pytest.skip(f"benchmark data not found at {d} (set AMSR_DATA_DIR)")
    return d


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    d = paths.weights_dir()
    if not d.is_dir():
        pytest.skip(f"checkpoints not found at {d} (set AMSR_WEIGHTS_DIR)")
    return d


def weight_file(weights_dir: Path, name: str) -> Path:
    """Path of a shared checkpoint; skip the test with a reason when it is absent."""
    p = weights_dir / name
    if not p.is_file():
        pytest.skip(f"checkpoint {name} not found in {weights_dir}")
    return p


@torch.no_grad()
def mean_psnr(model: torch.nn.Module, data_dir: Path, set_name: str, scale: int) -> float:
    """Mean Y-PSNR of ``model`` (forward: [0,1] RGB LR → SR) over one benchmark set."""
    folder = data_dir / set_name / f"x{scale}"
    scores = []
    for lr_path in list_images(folder / "LR"):
        lr = to_tensor(read_rgb8(lr_path))
        hr = read_rgb8(folder / "HR" / lr_path.name)
        scores.append(psnr_y(to_uint8(model(lr)), hr, shave=scale))
    return float(np.mean(scores))


@pytest.fixture(scope="session")
def fsrcnn_x2_onnx(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dense FSRCNN x2 (13K parameters: the fastest graph to export and run) exported through
    ``Upscaler.from_model``'s cache into a per-session folder; skipped without the checkpoint or ONNX tools."""
    for module in ("onnxruntime", "onnxscript", "onnx_graphsurgeon", "polygraphy"):
        pytest.importorskip(module, reason=f"needs {module} (pip install 'amsr[onnx]')")
    weights = weight_file(weights_dir, "fsrcnn_y_x2.pth")
    from amsr.runtime.upscaler import exported_model_path

    return exported_model_path("fsrcnn", 2, accelerated=False, weights=weights,
                               cache_dir=tmp_path_factory.mktemp("onnx-cache"))


def load_script(stem: str) -> ModuleType:
    """``scripts/<stem>.py`` as a module (scripts/ is not a package), imported once per session."""
    name = f"amsr_scripts_{stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "scripts" / f"{stem}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve their annotations through sys.modules
        spec.loader.exec_module(module)
    return sys.modules[name]


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist each worker gets an equal share of the cores for torch's intra-op threads: 2 workers
    # × 2 threads on the 2-core CI machine would oversubscribe it (exports, the bulk of the suite, are
    # single-threaded Python, which is why the suite runs in 2 workers at all).
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    if not hasattr(config, "workerinput") and getattr(config.option, "numprocesses", None):
        # The controller names the run (xdist hands the id to every worker) so that it knows what to remove.
        import uuid

        config.option.testrunuid = config.option.testrunuid or uuid.uuid4().hex


def pytest_sessionfinish(session: pytest.Session) -> None:
    # The export folder the xdist workers share (tests/onnx_exports.py) is removed by the controller, after
    # every worker is done with it.
    from tests.onnx_exports import run_dir

    run_id = None if hasattr(session.config, "workerinput") else getattr(session.config.option, "testrunuid", None)
    if run_id:
        shutil.rmtree(run_dir(run_id), ignore_errors=True)
