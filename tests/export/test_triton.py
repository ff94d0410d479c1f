"""Triton model repositories: written atomically, valid against Triton's ModelConfig schema."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from amsr.core.errors import ExportError
from export.triton import TritonOptions, validate_config_text, write_triton_repo

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] not installed")


def _onnx(tmp_path: Path) -> Path:
    lr = helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"])
    sr = helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 3, "H", "W"])
    graph = helper.make_graph([helper.make_node("Identity", ["lr"], ["sr"])], "g", [lr], [sr])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_repository_layout_and_config(tmp_path: Path) -> None:
    from tritonclient.grpc import model_config_pb2 as pb

    d = write_triton_repo(_onnx(tmp_path), tmp_path / "repo", TritonOptions("carn_m_x4", instance_kind="KIND_GPU",
                                                                            tensorrt=True, tensorrt_fp16=True))
    assert (d / "1" / "model.onnx").read_bytes() == (tmp_path / "m.onnx").read_bytes()
    cfg = validate_config_text((d / "config.pbtxt").read_text())
    assert cfg.name == "carn_m_x4" and cfg.backend == "onnxruntime" and cfg.max_batch_size == 0
    assert [(t.name, list(t.dims), t.data_type) for t in cfg.input] == [("lr", [-1, 3, -1, -1], pb.TYPE_FP32)]
    assert [(t.name, list(t.dims)) for t in cfg.output] == [("sr", [-1, 3, -1, -1])]
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    trt = cfg.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert sorted(p.name for p in d.rglob("*")) == ["1", "config.pbtxt", "model.onnx"]


def test_batching_drops_the_batch_dim(tmp_path: Path) -> None:
    d = write_triton_repo(_onnx(tmp_path), tmp_path / "repo", TritonOptions("m", max_batch_size=4))
    cfg = validate_config_text((d / "config.pbtxt").read_text())
    assert cfg.max_batch_size == 4 and list(cfg.input[0].dims) == [3, -1, -1]


@pytest.mark.parametrize("text, msg", [
    ('name: "m" backend: "onnxruntime" input [{ name: "lr" dims: [-1] colour: 3 }]', "schema"),
    ('name: "m" backend: "tensorflow"', "onnxruntime"),
    ('name: "m" backend: "onnxruntime" input [{ name: "lr" data_type: TYPE_FP32 }]', "no dims"),
])
def test_invalid_configs_are_rejected(text: str, msg: str) -> None:
    with pytest.raises(ExportError, match=msg):
        validate_config_text(text)
