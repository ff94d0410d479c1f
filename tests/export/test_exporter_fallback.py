"""``export_onnx`` where the dynamo exporter fails: a dense graph falls back to the TorchScript exporter and says
so in ``amsr.exporter``; an accelerated graph (its stages need dynamo's module scopes), or both exporters
failing, is one ``ExportError`` line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx", reason="ONNX export tests need the onnx extra: pip install 'amsr[onnx]'")
pytest.importorskip("onnx_graphsurgeon", reason="needs onnx-graphsurgeon (pip install 'amsr[onnx]')")
pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (pip install 'amsr[onnx]')")
pytest.importorskip("onnxruntime", reason="parity checks need onnxruntime (pip install 'amsr[onnx]')")
pytest.importorskip("polygraphy", reason="parity checks need polygraphy (pip install 'amsr[onnx]')")

import amsr
from amsr.core.errors import ExportError
from amsr.export import onnx_export
from amsr.runtime.export_check import onnxruntime_check


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.up = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        return self.up(f + torch.relu(self.body(f)))


def _failing_dynamo(*args: object, **kwargs: object) -> None:
    raise RuntimeError("PassError: the pass manager gave up\n(long trace)")


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture()
def model() -> amsr.LoadedModel:
    torch.manual_seed(0)
    return amsr.user_model(Small(), scale=2)[0]


def test_dynamo_is_the_exporter_that_ran_normally(model: amsr.LoadedModel, tmp_path: Path) -> None:
    path = onnx_export.export_onnx(model.dense(), tmp_path / "dense.onnx")
    assert _metadata(path)["amsr.exporter"] == "dynamo"


def test_a_dense_graph_falls_back_to_torchscript_and_still_matches_pytorch(
        model: amsr.LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(onnx_export, "_dynamo_export", _failing_dynamo)
    path = onnx_export.export_onnx(model.dense(), tmp_path / "dense.onnx", verify=onnxruntime_check)
    meta = _metadata(path)
    assert meta["amsr.exporter"] == "torchscript" and meta["amsr.kind"] == "dense"
    assert "exported with the TorchScript exporter" in caplog.text and "PassError" in caplog.text
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 19, 26)
    (y,) = session.run(None, {"lr": x.numpy()})
    assert y.shape == (1, 3, 38, 52)  # H and W stay dynamic


def test_an_accelerated_graph_does_not_fall_back(model: amsr.LoadedModel, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_export, "_dynamo_export", _failing_dynamo)
    with pytest.raises(ExportError, match=r"^torch.onnx.export failed for PaddedForExport: RuntimeError: PassError: "
                                          r"the pass manager gave up$"):
        onnx_export.export_onnx(model.accelerated(amsr.MaskConfig(dilation=1)), tmp_path / "fast.onnx")
    assert not (tmp_path / "fast.onnx").exists()


def test_both_exporters_failing_is_one_line_naming_both(model: amsr.LoadedModel, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_torchscript(*args: object, **kwargs: object) -> None:
        raise ValueError("unsupported operator aten::weird")

    monkeypatch.setattr(onnx_export, "_dynamo_export", _failing_dynamo)
    monkeypatch.setattr(onnx_export, "_torchscript_export", failing_torchscript)
    with pytest.raises(ExportError) as e:
        onnx_export.export_onnx(model.dense(), tmp_path / "dense.onnx")
    message = str(e.value)
    assert "\n" not in message
    assert "with both exporters: dynamo: RuntimeError: PassError" in message
    assert "TorchScript: ValueError: unsupported operator aten::weird" in message
