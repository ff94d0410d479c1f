"""Export with the sparse stages as ``amsr::MaskedConv3x3`` plugin nodes instead of GatherND/ScatterND.

``sparse_impl`` selects how a masked 3×3 conv appears in the graph:

- ``"gather_scatter"`` (``export_onnx``'s graph): NonZero → GatherND of the 9 taps → MatMul → ScatterND.
  Runs anywhere (onnxruntime, TensorRT's built-in layers).
- ``"plugin"``: one node ``amsr::MaskedConv3x3`` per stage, inputs ``(features, mask, weight, bias)``,
  attributes ``groups``, ``plugin_namespace="amsr"``, ``plugin_version="1"``. The TensorRT ONNX parser
  imports an op it does not know through its fallback plugin importer, which looks the creator up by
  ``op_type`` (the plugin name), ``plugin_namespace`` and ``plugin_version`` and passes the attributes that
  match the creator's fields (``groups``). onnxruntime cannot run such a graph; ``onnx.reference`` can
  (``ReferenceEvaluator(model, new_ops=[amsr.plugins.masked_conv3x3.MaskedConv3x3])``).

The rewrite works on the exported graph (``plugin_graph_from``): each stage is the group of nodes named
``sparse_conv_<k>/…`` by ``passes.name_mask_subgraph``; its features are the Pad's input, its weight is the
MatMul constant (g × (C/g·9) × O/g, reshaped back to O × C/g × 3 × 3), its bias the Add constant, and its
output the stage tensor read outside the stage. The shared NonZero index nodes lose their consumers and are
removed by ``cleanup``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from amsr.core.errors import ExportError
from amsr.core.files import atomic_path
from amsr.plugins.masked_conv3x3 import ONNX_DOMAIN, ONNX_OP_TYPE, PLUGIN_NAMESPACE, PLUGIN_VERSION

if TYPE_CHECKING:
    import onnx
    import onnx_graphsurgeon as gs
    from torch import nn

    from amsr.export.onnx_export import Verifier

log = logging.getLogger(__name__)

SPARSE_IMPLS = ("gather_scatter", "plugin")
STAGE_PREFIX = "sparse_conv_"
MASK_TENSOR = "mask"


def _stages(graph: gs.Graph) -> dict[str, list[gs.Node]]:
    stages: dict[str, list[gs.Node]] = {}
    for node in graph.nodes:
        if node.name.startswith(STAGE_PREFIX):
            stages.setdefault(node.name.split("/", 1)[0], []).append(node)
    return stages


def _one(nodes: list[gs.Node], op: str, stage: str) -> gs.Node:
    found = [n for n in nodes if n.op == op]
    if len(found) != 1:
        raise ExportError(f"{stage}: expected one {op} node in a gather/scatter stage, found {len(found)}")
    return found[0]


def _replace_stage(graph: gs.Graph, stage: str, nodes: list[gs.Node], mask: gs.Tensor) -> None:
    import onnx_graphsurgeon as gs

    own = {id(n) for n in nodes}
    pad, matmul = _one(nodes, "Pad", stage), _one(nodes, "MatMul", stage)
    _one(nodes, "GatherND", stage)
    scatter = _one(nodes, "ScatterND", stage)
    features = pad.inputs[0]
    wg = matmul.inputs[1]
    if not isinstance(wg, gs.Constant) or wg.values.ndim != 3:
        raise ExportError(f"{stage}: the MatMul weight is not a g×K×O/g constant ({wg})")
    g, k, og = wg.values.shape
    cg = k // 9
    weight = np.ascontiguousarray(wg.values.transpose(0, 2, 1).reshape(g * og, cg, 3, 3))
    bias_consts = [t for n in nodes if n.op == "Add" for t in n.inputs
                   if isinstance(t, gs.Constant) and t.values.shape == (g * og,)]
    bias = bias_consts[0].values if bias_consts else np.zeros(g * og, dtype=weight.dtype)
    out = scatter.outputs[0]  # follow the stage's own chain (the NonZero index nodes also leave stage 0)
    while out not in graph.outputs and len(out.outputs) == 1 and id(out.outputs[0]) in own:
        out = out.outputs[0].outputs[0]
    if out not in graph.outputs and any(id(c) in own for c in out.outputs):
        raise ExportError(f"{stage}: the ScatterND result does not leave the stage through one chain")
    producer = out.inputs[0]
    producer.outputs.clear()
    scope = pad.name.split("/")[1] if pad.name.count("/") >= 2 else ""  # the torch module path
    name = "/".join(x for x in (stage, scope, ONNX_OP_TYPE) if x)
    graph.nodes.append(gs.Node(
        op=ONNX_OP_TYPE, name=name, domain=ONNX_DOMAIN,
        attrs={"groups": int(g), "plugin_namespace": PLUGIN_NAMESPACE, "plugin_version": PLUGIN_VERSION},
        inputs=[features, mask, gs.Constant(f"{name}/weight", weight),
                gs.Constant(f"{name}/bias", np.ascontiguousarray(bias, dtype=weight.dtype))],
        outputs=[out]))
    out.dtype, out.shape = features.dtype, features.shape


def plugin_graph_from(model: onnx.ModelProto) -> onnx.ModelProto:
    """The exported (gather/scatter) ``model`` with every sparse stage replaced by one plugin node."""
    import onnx
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    if MASK_TENSOR not in tensors:
        raise ExportError("the graph has no 'mask' tensor: only accelerated exports have sparse stages")
    stages = _stages(graph)
    if not stages:
        raise ExportError("the graph has no sparse_conv_<k> stages to replace")
    for stage, nodes in stages.items():
        _replace_stage(graph, stage, nodes, tensors[MASK_TENSOR])
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    if not any(o.domain == ONNX_DOMAIN for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(ONNX_DOMAIN, 1))
    del out.metadata_props[:]
    for prop in model.metadata_props:
        out.metadata_props.add(key=prop.key, value=prop.value)
    out.metadata_props.add(key="amsr.sparse_impl", value="plugin")
    onnx.checker.check_model(out)
    log.info("replaced %d gather/scatter stages by %s::%s", len(stages), ONNX_DOMAIN, ONNX_OP_TYPE)
    return out


def export_with_sparse_impl(model: nn.Module, out: str | Path, sparse_impl: str = "gather_scatter",
                            opset: int = 17, sample_size: tuple[int, int] = (64, 64),
                            verify: Verifier | None = None) -> Path:
    """``export_onnx`` with a choice of sparse implementation (see module docstring).

    With ``sparse_impl="plugin"`` the gather/scatter graph is exported (and verified against PyTorch in
    onnxruntime by ``verify``, when given), then rewritten; the rewrite is checked by ``onnx.checker`` only (run
    ``ReferenceEvaluator`` with the plugin's OpRun for values: it is slow on full-size graphs).
    """
    import onnx

    from amsr.export.onnx_export import export_onnx

    if sparse_impl not in SPARSE_IMPLS:
        raise ExportError(f"sparse_impl must be one of {SPARSE_IMPLS}, got {sparse_impl!r}")
    if sparse_impl == "gather_scatter":
        return export_onnx(model, out, opset=opset, sample_size=sample_size, verify=verify)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".amsr-export-", dir=out.parent) as tmp:
        # The plugin replaces per-stage GatherND/ScatterND convs: export that graph, not the row program.
        dense_path = export_onnx(model, Path(tmp) / "gather_scatter.onnx", opset=opset, sample_size=sample_size,
                                 verify=verify, rows=False)
        plugin = plugin_graph_from(onnx.load(str(dense_path)))
    with atomic_path(out) as dst:
        onnx.save(plugin, str(dst))
    return out
