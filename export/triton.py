"""Triton Inference Server model repositories for exported amsr models (onnxruntime backend).

Layout written (atomically per file)::

    REPO/<model_name>/config.pbtxt
    REPO/<model_name>/1/model.onnx

The config is built as Triton's own ``ModelConfig`` protobuf (shipped in ``tritonclient``), so a field
Triton does not know cannot be written, and the text is parsed back and checked before it is saved.
H and W stay dynamic (``-1``). ``max_batch_size: 0`` by default: SR requests rarely share a size, and
Triton's dynamic batcher can only stack equal shapes; the batch axis is then an explicit ``-1`` dim.
No Triton server runs on the development machines: the repository is validated, not served, here.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amsr.core.errors import BackendUnavailableError, ExportError
from amsr.core.files import atomic_path, save_bytes

_ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 7: "TYPE_INT64", 6: "TYPE_INT32", 2: "TYPE_UINT8"}


@dataclass(frozen=True)
class TritonOptions:
    """What the generated ``config.pbtxt`` asks of Triton.

    Attributes:
        model_name: directory and ``name`` in the config.
        instance_kind: ``"KIND_CPU"``, ``"KIND_GPU"`` or ``"KIND_AUTO"``.
        instance_count: model instances (onnxruntime sessions) per device.
        max_batch_size: 0 = no Triton batching (batch is an explicit dynamic dim).
        tensorrt: ask the onnxruntime backend for its TensorRT execution accelerator (GPU instances).
        tensorrt_fp16: TensorRT precision FP16 instead of FP32 (refuse for models without fp16 support).
        workspace_bytes: TensorRT workspace limit.
    """

    model_name: str
    instance_kind: str = "KIND_AUTO"
    instance_count: int = 1
    max_batch_size: int = 0
    tensorrt: bool = False
    tensorrt_fp16: bool = False
    workspace_bytes: int = 1 << 30


def _model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise BackendUnavailableError("writing a Triton repository needs Triton's model-config schema: "
                                      f"pip install 'tritonclient[grpc]' ({e})") from None
    return model_config_pb2


def _io_specs(onnx_path: Path) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)

    def spec(values: Any) -> list[tuple[str, str, int]]:
        out = []
        for v in values:
            elem = v.type.tensor_type.elem_type
            if elem not in _ONNX_TO_TRITON:
                raise ExportError(f"{onnx_path}: tensor {v.name} has ONNX type {elem}, not mapped to Triton")
            out.append((v.name, _ONNX_TO_TRITON[elem], len(v.type.tensor_type.shape.dim)))
        return out

    inits = {i.name for i in model.graph.initializer}
    return spec([i for i in model.graph.input if i.name not in inits]), spec(model.graph.output)


def build_config(onnx_path: Path, opts: TritonOptions) -> Any:
    """The ``ModelConfig`` protobuf for ``onnx_path``: all non-channel dims dynamic."""
    pb = _model_config_pb2()
    inputs, outputs = _io_specs(onnx_path)
    cfg = pb.ModelConfig(name=opts.model_name, backend="onnxruntime", max_batch_size=opts.max_batch_size)

    def dims(rank: int) -> list[int]:
        # N×C×H×W: C = 3 for images, everything else dynamic; Triton drops the batch dim when batching.
        full = [-1, 3, -1, -1] if rank == 4 else [-1] * rank
        return full[1:] if opts.max_batch_size > 0 else full

    for name, dtype, rank in inputs:
        cfg.input.add(name=name, data_type=pb.DataType.Value(dtype), dims=dims(rank))
    for name, dtype, rank in outputs:
        cfg.output.add(name=name, data_type=pb.DataType.Value(dtype), dims=dims(rank))
    cfg.instance_group.add(kind=pb.ModelInstanceGroup.Kind.Value(opts.instance_kind), count=opts.instance_count)
    if opts.tensorrt:
        acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        acc.parameters["precision_mode"] = "FP16" if opts.tensorrt_fp16 else "FP32"
        acc.parameters["max_workspace_size_bytes"] = str(opts.workspace_bytes)
    return cfg


def validate_config_text(text: str) -> Any:
    """Parse ``config.pbtxt`` text with Triton's schema; ``ExportError`` on unknown fields or bad values."""
    from google.protobuf import text_format

    pb = _model_config_pb2()
    try:
        cfg = text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as e:
        raise ExportError(f"config.pbtxt does not follow Triton's ModelConfig schema: {e}") from None
    if not cfg.name or cfg.backend != "onnxruntime":
        raise ExportError("config.pbtxt needs a name and backend 'onnxruntime'")
    for t in list(cfg.input) + list(cfg.output):
        if not t.dims:
            raise ExportError(f"config.pbtxt: tensor {t.name} has no dims")
    return cfg


def write_triton_repo(onnx_path: str | Path, repo: str | Path, opts: TritonOptions) -> Path:
    """Write ``repo/<name>/config.pbtxt`` and ``repo/<name>/1/model.onnx``; returns the model directory."""
    from google.protobuf import text_format

    onnx_path, model_dir = Path(onnx_path), Path(repo) / opts.model_name
    text = text_format.MessageToString(build_config(onnx_path, opts))
    validate_config_text(text)
    with atomic_path(model_dir / "1" / "model.onnx") as tmp:
        shutil.copyfile(onnx_path, tmp)
    save_bytes(model_dir / "config.pbtxt", text.encode())
    return model_dir
