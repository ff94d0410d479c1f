"""export/trt_support.py: every exported graph passes the TensorRT 10.0 parser table; graphs with an
unsupported op or a rejected form are flagged, each with the node and the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="needs onnx (pip install 'amsr[onnx]')")
pytest.importorskip("onnx_graphsurgeon", reason="needs onnx-graphsurgeon (pip install 'amsr[onnx]')")

from onnx import TensorProto, helper, numpy_helper

from amsr.core.errors import ExportError
from amsr.export.trt_support import TRT_TABLE_VERSION, check_trt_support, require_trt_support
from tests.conftest import weight_file


@pytest.fixture(scope="module")
def carn_weights(weights_dir: Path) -> Path:
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (pip install 'amsr[onnx]')")
    return weight_file(weights_dir, "carn_m.pth")


@pytest.mark.parametrize("kind", ["dense", "accelerated"])
def test_exported_carn_m_graphs_are_importable(kind: str, carn_weights: Path) -> None:
    from tests.onnx_exports import exported

    path = exported(kind, carn_weights)
    assert check_trt_support(path) == []
    require_trt_support(path)  # no raise


def test_plugin_graph_is_importable(carn_weights: Path) -> None:
    from amsr.export.plugin_export import plugin_graph_from
    from tests.onnx_exports import exported

    model = plugin_graph_from(onnx.load(exported("accelerated", carn_weights)))
    assert check_trt_support(model) == []


# Every other export tests/onnx_exports.py provides (transformers: SwinIR random-weight, IMDTN x4).
_TRANSFORMER_EXPORTS = [("swinir", "classical", "dense"), ("swinir", "lightweight", "dense"),
                        ("swinir", "real", "dense"), ("swinir", "classical", "accelerated"),
                        ("imdtn", "", "dense"), ("imdtn", "", "accelerated")]


@pytest.mark.parametrize(("arch", "variant", "kind"), _TRANSFORMER_EXPORTS)
def test_exported_transformer_graphs_are_importable(arch: str, variant: str, kind: str, weights_dir: Path) -> None:
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (pip install 'amsr[onnx]')")
    from tests import onnx_exports

    if not hasattr(onnx_exports, f"exported_{arch}"):
        pytest.skip(f"tests/onnx_exports.py provides no {arch} export")
    if arch == "swinir":
        path = onnx_exports.exported_swinir(variant, kind)
    else:
        path = onnx_exports.exported_imdtn(kind, weight_file(weights_dir, "imdtn_x4.pth"))
    problems = check_trt_support(path)
    assert problems == [], [str(p) for p in problems]
    model = onnx.load(str(path))
    if any(n.name.startswith("sparse_conv_") for n in model.graph.node):  # and its plugin form
        from amsr.export.plugin_export import plugin_graph_from

        plugin = plugin_graph_from(model)
        assert any(n.domain == "amsr" for n in plugin.graph.node)
        assert check_trt_support(plugin) == []


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "t", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])


def _vi(name: str, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _scatter(**attrs) -> onnx.ModelProto:
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="scatter", **attrs)
    return _model([node], [_vi("x", [4, 3]), _vi("i", [2, 1], TensorProto.INT64), _vi("u", [2, 3])],
                  [_vi("y", [4, 3])], opset=18)


def test_scatternd_with_any_reduction_attribute_is_flagged() -> None:
    assert check_trt_support(_scatter()) == []
    problems = check_trt_support(_scatter(reduction="none"))
    assert [(p.node, p.op) for p in problems] == [("scatter", "ScatterND")]
    assert "reduction" in problems[0].reason
    assert check_trt_support(_scatter(reduction="add"))


def test_unsupported_and_unknown_ops_are_flagged() -> None:
    unique = helper.make_node("Unique", ["x"], ["y"], name="uniq")
    made_up = helper.make_node("Frobnicate", ["x"], ["z"], name="frob")
    custom = helper.make_node("Thing", ["x"], ["w"], name="custom", domain="acme")
    model = _model([unique, made_up, custom], [_vi("x", [4])], [_vi("y", None), _vi("z", None), _vi("w", None)],
                   extra_opsets=[helper.make_opsetid("acme", 1)])
    problems = {p.node: p.reason for p in check_trt_support(model)}
    assert set(problems) == {"uniq", "frob", "custom"}
    assert TRT_TABLE_VERSION in problems["uniq"] and "acme::Thing" in problems["custom"]
    with pytest.raises(ExportError, match="3 node"):
        require_trt_support(model)


def test_resize_and_pad_modes_and_opset_are_checked() -> None:
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
    cubic = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="cubic", mode="cubic")
    linear = helper.make_node("Resize", ["x", "", "scales"], ["y2"], name="linear", mode="linear",
                              coordinate_transformation_mode="half_pixel")
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64), "pads")
    reflect = helper.make_node("Pad", ["x", "pads"], ["p"], name="reflect", mode="reflect")
    model = _model([cubic, linear, reflect], [_vi("x", [1, 1, 4, 4])],
                   [_vi("y", None), _vi("y2", None), _vi("p", None)], initializers=[scales, pads])
    assert [p.node for p in check_trt_support(model)] == ["cubic"]
    model.opset_import[0].version = 21
    assert any(p.op == "opset" for p in check_trt_support(model))


def test_non_constant_axes_and_dynamic_squeeze_are_flagged() -> None:
    squeeze_dyn = helper.make_node("Squeeze", ["x"], ["s"], name="squeeze_dyn")
    reduce_dyn = helper.make_node("ReduceSum", ["x", "axes"], ["r"], name="reduce_dyn")
    axes_c = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes_c")
    reduce_ok = helper.make_node("ReduceSum", ["x", "axes_c"], ["r2"], name="reduce_ok")
    model = _model([squeeze_dyn, reduce_dyn, reduce_ok],
                   [_vi("x", ["N", 1, "H"]), _vi("axes", [1], TensorProto.INT64)],
                   [_vi("s", None), _vi("r", None), _vi("r2", None)], initializers=[axes_c])
    problems = {p.node: p.reason for p in check_trt_support(model)}
    assert set(problems) == {"squeeze_dyn", "reduce_dyn"}
    assert "static" in problems["squeeze_dyn"] and "initializer" in problems["reduce_dyn"]
