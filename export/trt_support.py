"""Static check: can the TensorRT ONNX parser import every node of an exported graph?

The table below encodes ``docs/operators.md`` of onnx/onnx-tensorrt at the 10.0 GA release (commit
``eb43908``), the version floor of pyproject's ``tensorrt`` extra (``tensorrt>=10.0``): opsets 9–20, the
operators it lists as supported, and the restrictions it states, plus the few the 10.0 importer source
(``onnxOpImporters.cpp``) enforces that the table leaves implicit:

- ``ScatterND``: the importer rejects a node that has a ``reduction`` attribute at all (even ``"none"``).
- ``Squeeze`` without ``axes``: only for inputs whose shape is static (the importer cannot pick dims of a
  dynamic shape).
- ``GatherND``: any ``batch_dims`` (mapped to ``IGatherLayer::setNbElementWiseDims``).
- ``NonZero``: supported (data-dependent output shape, ``INonZeroLayer``); its consumers must then handle a
  dynamic row count, which TensorRT ≥ 8.6 does. Listed as a note, not a problem.
- ``Pad``: modes constant/reflect/edge/wrap; ``axes`` (opset ≥ 18) must be an initializer.

``check_trt_support(model)`` returns a list of ``TrtSupportProblem`` (empty = importable as far as the
documented table can tell). It does not run the parser: a GPU machine with TensorRT is the final word
(``runtime.trt.build_engine``). Nodes in the ``amsr`` domain are accepted as plugins when their op type is
one amsr ships (``plugins/``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

#: The TensorRT version whose parser table this module encodes, and the opset range it documents.
TRT_TABLE_VERSION = "10.0"
MIN_OPSET, MAX_OPSET = 9, 20

_UNSUPPORTED = frozenset(["AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "BlackmanWindow", "Col2Im", "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det", "DynamicQuantizeLinear", "HammingWindow", "HannWindow", "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement", "QLinearConv", "QLinearMatMul", "RegexFullMatch", "STFT", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit", "TfIdfVectorizer", "Unique"])

_SUPPORTED = frozenset(["Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization", "GRU", "HardSigmoid", "HardSwish", "Hardmax", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LRN", "LSTM", "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu", "QuantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RNN", "RoiAlign", "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor"])

#: op → index of the input that the table says "must be an initializer" (a build-time constant).
_CONST_INPUT = {"CumSum": 1, "Pad": 3, "Slice": 3, "Squeeze": 1, "Unsqueeze": 1, "OneHot": 1,
                **{op: 1 for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                                    "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")}}
_PAD_MODES = {"constant", "reflect", "edge", "wrap"}
_RESIZE_COORD = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_POOL_OPS = {"AveragePool", "MaxPool", "LpPool"}


def _amsr_plugin_ops() -> set[str]:
    from amsr.plugins.masked_conv3x3 import ONNX_OP_TYPE

    return {ONNX_OP_TYPE}


@dataclass(frozen=True)
class TrtSupportProblem:
    """One node TensorRT's ONNX parser (``TRT_TABLE_VERSION``) would reject, and why."""

    node: str
    op: str
    reason: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op}): {self.reason}"


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    import onnx

    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _check_node(node: onnx.NodeProto, constants: set[str], static: set[str], plugins: set[str]) -> Iterable[str]:
    op, attrs = node.op_type, _attrs(node)
    if node.domain not in ("", "ai.onnx"):
        if node.domain == "amsr" and op in plugins:
            return
        yield f"custom-domain op {node.domain}::{op} is neither ONNX nor an amsr plugin"
        return
    if op in _UNSUPPORTED:
        yield f"not supported by the TensorRT {TRT_TABLE_VERSION} ONNX parser"
        return
    if op not in _SUPPORTED:
        yield f"not in the TensorRT {TRT_TABLE_VERSION} operator table"
        return
    idx = _CONST_INPUT.get(op)
    if idx is not None and len(node.input) > idx and node.input[idx] and node.input[idx] not in constants:
        yield f"input {idx} ({node.input[idx]}) must be an initializer/constant"
    if op == "Squeeze" and (len(node.input) < 2 or not node.input[1]) and "axes" not in attrs \
            and node.input[0] not in static and node.input[0] not in constants:
        yield "Squeeze without axes needs a static input shape"
    if op == "ScatterND" and "reduction" in attrs:
        yield f"reduction attribute ({attrs['reduction']!r}) is rejected by the importer, even 'none'"
    if op == "Pad" and attrs.get("mode", "constant") not in _PAD_MODES:
        yield f"Pad mode {attrs['mode']!r} (supported: {sorted(_PAD_MODES)})"
    if op == "Resize":
        if attrs.get("mode", "nearest") not in _RESIZE_MODES:
            yield f"Resize mode {attrs['mode']!r} (supported: {sorted(_RESIZE_MODES)})"
        coord = attrs.get("coordinate_transformation_mode", "half_pixel")
        if coord not in _RESIZE_COORD:
            yield f"Resize coordinate_transformation_mode {coord!r}"
        if attrs.get("mode", "nearest") == "nearest" and attrs.get("nearest_mode", "round_prefer_floor") \
                not in _RESIZE_NEAREST:
            yield f"Resize nearest_mode {attrs['nearest_mode']!r}"
        if attrs.get("antialias", 0):
            yield "Resize antialias is not supported"
        if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            yield f"Resize keep_aspect_ratio_policy {attrs['keep_aspect_ratio_policy']!r} (only 'stretch')"
    if op in _POOL_OPS and any(d != 1 for d in attrs.get("dilations", [])):
        yield "dilations must be empty or all ones"
    if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
        yield "the Indices output is not supported"
    if op in ("DequantizeLinear", "QuantizeLinear") and len(node.input) > 2 and node.input[2]:
        yield "a zero point input must be zero (not checked statically: verify it is)"


def check_trt_support(model: onnx.ModelProto | str | Path) -> list[TrtSupportProblem]:
    """Problems the TensorRT ONNX parser would report for ``model`` (a ModelProto or path); [] = none found."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    problems = []
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and not MIN_OPSET <= opset.version <= MAX_OPSET:
            problems.append(TrtSupportProblem("<model>", "opset", f"opset {opset.version} is outside "
                                              f"{MIN_OPSET}–{MAX_OPSET} (TensorRT {TRT_TABLE_VERSION})"))
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 (shape inference is only used to find static shapes)
        inferred = model
    static = set()
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            static.add(vi.name)
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    plugins = _amsr_plugin_ops()
    for i, node in enumerate(model.graph.node):
        for reason in _check_node(node, constants, static, plugins):
            problems.append(TrtSupportProblem(node.name or f"node_{i}", node.op_type, reason))
    return problems


def require_trt_support(model: onnx.ModelProto | str | Path) -> None:
    """``ExportError`` listing every problem ``check_trt_support`` finds (up to 20)."""
    from amsr.core.errors import ExportError

    problems = check_trt_support(model)
    if problems:
        listed = "; ".join(str(p) for p in problems[:20])
        more = f" (+{len(problems) - 20} more)" if len(problems) > 20 else ""
        raise ExportError(f"{len(problems)} node(s) TensorRT {TRT_TABLE_VERSION} cannot import: {listed}{more}")
