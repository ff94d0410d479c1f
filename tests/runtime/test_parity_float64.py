"""``compare_with_torch``'s float64 arbitration: a graph that misses ``atol`` only by float32 noise passes
(it is as close to the float64 result as PyTorch's own float32 run); a wrong graph still fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx", reason="needs onnx (pip install 'amsr[onnx]')")
pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (pip install 'amsr[onnx]')")
pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install 'amsr[onnx]')")
pytest.importorskip("polygraphy", reason="needs polygraphy (pip install 'amsr[onnx]')")

import amsr
from amsr.export.onnx_export import export_onnx
from amsr.runtime.parity import compare_with_torch


class Deep(nn.Module):
    """Six 32-channel convs: enough summation for float32 results to differ between PyTorch and onnxruntime."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 32, 3, padding=1)
        self.body = nn.Sequential(*[nn.Conv2d(32, 32, 3, padding=1) for _ in range(6)])
        self.up = nn.Sequential(nn.Conv2d(32, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.body(self.head(x)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[amsr.LoadedModel, Path]:
    torch.manual_seed(0)
    model, _ = amsr.user_model(Deep(), scale=2)
    path = export_onnx(model.dense(), tmp_path_factory.mktemp("f64") / "deep.onnx")
    return model, path


def _inputs() -> list[np.ndarray]:
    return [np.random.default_rng(i).random((1, 3, 24, 20), dtype=np.float32) for i in range(2)]


def test_float32_noise_above_atol_is_arbitrated_in_float64(exported: tuple[amsr.LoadedModel, Path]) -> None:
    model, path = exported
    result = compare_with_torch(model.dense(), path, _inputs(), atol=1e-12)  # far below float32 resolution
    assert result.max_abs_diff > 1e-12  # the plain check would fail
    assert result.passed, result.summary()
    judged = [r for r in result.rows if r.onnx_error is not None]
    assert judged and all(r.float32_error is not None and r.float32_error > 0 for r in judged)
    assert "float64 arbitration on" in result.summary()


def test_a_wrong_graph_still_fails(exported: tuple[amsr.LoadedModel, Path], tmp_path: Path) -> None:
    model, path = exported
    proto = onnx.load(str(path))
    weight = next(t for t in proto.graph.initializer if len(t.dims) == 4 and t.dims[0] == 32 and t.dims[1] == 32)
    values = onnx.numpy_helper.to_array(weight).copy()
    values[0, 0, 1, 1] += 0.05  # one tap of one filter
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    wrong = tmp_path / "wrong.onnx"
    onnx.save(proto, str(wrong))
    result = compare_with_torch(model.dense(), wrong, _inputs())
    assert not result.passed
    assert all(r.onnx_error is not None and r.float32_error is not None and r.onnx_error > 100 * r.float32_error
               for r in result.rows)
