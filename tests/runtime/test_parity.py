"""runtime/parity.py: CARN-M x4 ONNX vs PyTorch on real Set5 x4 images (outputs, masks, PSNR) through
Polygraphy, and a mismatch being reported as one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("polygraphy", reason="the ONNX runtime helpers need polygraphy (pip install 'amsr[onnx]')")

from amsr.core.errors import BackendUnavailableError
from amsr.runtime.parity import check_parity_on_set, compare_with_torch
from tests.conftest import weight_file


@pytest.fixture(scope="module")
def carn_weights(weights_dir: Path) -> Path:
    for module in ("onnxruntime", "onnxscript", "onnx_graphsurgeon"):
        pytest.importorskip(module, reason=f"needs {module} (pip install 'amsr[onnx]')")
    return weight_file(weights_dir, "carn_m.pth")


@pytest.mark.parametrize("kind", ["dense", "accelerated"])
def test_set5_x4_parity(kind: str, carn_weights: Path, data_dir: Path) -> None:
    from tests.onnx_exports import carn_m_x4, exported

    loaded = carn_m_x4(carn_weights)
    # The accelerated reference runs MaskedConv2d's dense reference path (unfold, matmul, select: the same
    # values as its sparse path, ~6x faster in PyTorch on CPU); tests/export compares the sparse path itself.
    model = loaded.dense() if kind == "dense" else loaded.accelerated(mode="dense")
    result = check_parity_on_set(model, exported(kind, carn_weights), data_dir / "Set5" / "x4")
    assert result.passed and result.accuracy_passed, result.summary()
    assert [r.name for r in result.rows] == [f"img_00{i}.png" for i in range(1, 6)]
    assert result.max_abs_diff <= 1e-4
    assert result.mask_mismatch_pixels == 0
    assert result.psnr_diff is not None and result.psnr_diff <= 1e-3
    assert all(r.psnr_torch is not None and r.psnr_torch > 20 for r in result.rows)


def test_a_different_model_fails_parity(carn_weights: Path) -> None:
    from tests.onnx_exports import carn_m_x4, exported

    x = np.random.default_rng(5).random((1, 3, 40, 40), dtype=np.float32)
    result = compare_with_torch(carn_m_x4(carn_weights).dense(), exported("accelerated", carn_weights), [x])
    assert not result.passed and not result.accuracy_passed
    assert result.max_abs_diff > 1e-2
    assert result.summary().startswith("FAILED")


def test_missing_onnxruntime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from torch import nn

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailableError, match="pip install onnxruntime"):
        compare_with_torch(nn.Identity(), tmp_path / "none.onnx", [np.zeros((1, 3, 4, 4), np.float32)])
