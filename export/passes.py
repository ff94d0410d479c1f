"""Small named onnx-graphsurgeon passes over an exported amsr graph, and the mask-only export.

Each pass takes a ``gs.Graph``, edits it in place and returns it (or what it did). ``name_mask_subgraph``,
``fold_and_cleanup`` and ``downgrade_to_opset17`` keep what the graph computes; ``expose_mask_output`` adds
the mask as an output, ``extract_mask_subgraph`` keeps only the mask and ``mask_as_input`` replaces the mask
stage by an input (the tiled runner uses the last two). Stage membership comes from the torch exporter's node metadata
(``pkg.torch.onnx.name_scopes`` / ``pkg.torch.onnx.class_hierarchy``), read with ``torch_scopes`` before the
graph is imported, because onnx-graphsurgeon does not carry node metadata.

Names given by ``name_mask_subgraph``:

- ``mask/…``: the mask generator (blur, unrolled 2-means, dilation) and the pixel indices of its mask;
  its output tensor is renamed ``mask`` (N×1×H×W float, 0/1) and the NonZero rows ``mask/pixels`` (P×3
  int64, (n, i, j)); the index tensors all sparse stages share are ``sparse/taps`` (GatherND, P×9×3) and
  ``sparse/pixels`` (ScatterND, P×3).
- ``sparse_conv_<i>/<module>/…``: the i-th masked conv call in execution order, ``<module>`` the qualified
  name of its torch module (CARN-M runs each body conv three times: three stages share one module name).
- ``sparse_window_<i>/<module>/…``: the i-th window-selected Swin block call (window means of the mask →
  NonZero → Gather of the selected windows' tokens → the block's layers → ScatterND), numbered separately.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from amsr.core.errors import ExportError

if TYPE_CHECKING:
    import onnx
    import onnx_graphsurgeon as gs

log = logging.getLogger(__name__)

MASK_TENSOR = "mask"
OUTPUT_MASK_TENSOR = "mask/output"  # the output blend's mask (LR size), when the model has one
MASK_PREFIX = "mask/"
SPARSE_PREFIX = "sparse_conv_"

# Classes whose torch scopes mark the stages (qualified names as the exporter records them).
_MASK_CLASSES = ("amsr.masking.mask.MaskGenerator", "amsr.export.exportable.ExportMaskGenerator")
_GENERATOR_CLASS = "amsr.masking.mask.MaskGenerator"
_SPARSE_CLASS = "amsr.export.exportable.GatherScatterConv2d"
# Tile-level sparse convs (amsr.sparse.tiles) export as they are and form sparse_conv_<i> stages too.
_SPARSE_CLASSES = (_SPARSE_CLASS, "amsr.sparse.tiles.TileMaskedConv2d")
# Window-selected Swin blocks (exportable.GatherScatterSwinBlock) form sparse_window_<i> stages.
WINDOW_PREFIX = "sparse_window_"
_WINDOW_CLASSES = ("amsr.export.exportable.GatherScatterSwinBlock", "amsr.export.exportable.GatherScatterWindowBatch")
_WINDOW_TAG = "window:"  # marks a window block's module name in the call list (module names have no ':')


@dataclass(frozen=True)
class NodeScope:
    """Where a node came from in torch: module names from the root down and the class of each."""

    modules: tuple[str, ...]
    classes: tuple[str, ...]

    @property
    def in_module(self) -> bool:
        """False for the exporter's own shape bookkeeping (``sym_size`` of the inputs), which has no module."""
        return bool(self.modules) and self.modules[0] == ""

    def module_of(self, classes: tuple[str, ...]) -> str | None:
        """Qualified name of the innermost enclosing module of one of ``classes``; ``None`` if there is none."""
        for module, cls in zip(reversed(self.modules), reversed(self.classes), strict=False):
            if cls in classes:
                return module
        return None


def torch_scopes(model: onnx.ModelProto) -> dict[str, NodeScope]:
    """Node name → its torch scope, from the dynamo exporter's metadata (nodes without it are left out)."""
    scopes: dict[str, NodeScope] = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        if "pkg.torch.onnx.name_scopes" in meta and "pkg.torch.onnx.class_hierarchy" in meta:
            modules = tuple(ast.literal_eval(meta["pkg.torch.onnx.name_scopes"]))
            classes = tuple(ast.literal_eval(meta["pkg.torch.onnx.class_hierarchy"]))
            scopes[node.name] = NodeScope(modules, classes)
    return scopes


def _short(name: str) -> str:
    return name.removeprefix("node_")


def _calls(nodes: list[tuple[gs.Node, str | None]]) -> list[tuple[str, list[gs.Node]]]:
    """Split ``(node, sparse module or None)`` in execution order into calls: maximal runs of one module.

    The exporter writes nodes in the order torch ran them, so one call of a module is a contiguous run;
    a node of another module (or of no sparse module) ends the run. CARN-M calls each body conv three times,
    with other layers in between: three runs, three stages.
    """
    calls: list[tuple[str, list[gs.Node]]] = []
    current: str | None = None
    for node, module in nodes:
        if module is None:
            current = None
        elif module == current:
            calls[-1][1].append(node)
        else:
            calls.append((module, [node]))
            current = module
    return calls


def name_mask_subgraph(graph: gs.Graph, scopes: Mapping[str, NodeScope],
                       net_dilation: int | None = None) -> dict[str, int]:
    """Prefix mask-generation nodes with ``mask/`` and each sparse conv call with ``sparse_conv_<i>/<module>/``.

    Args:
        graph: the exported graph, nodes in the exporter's order and with the names it gave them.
        scopes: ``torch_scopes`` of the same export.
        net_dilation: the network mask's dilation (``MaskConfig.dilation``): with an output blend it tells
            the network mask from the output mask; ``None``: the more dilated one is the network mask.

    Returns:
        Stage name → number of nodes renamed (empty for a dense model).
    """
    if graph.nodes and not scopes:
        raise ExportError("the graph carries no torch exporter metadata: cannot tell its stages apart")
    counts: dict[str, int] = {}
    mask_nodes, generator_nodes = [], set()
    in_order: list[tuple[gs.Node, str | None]] = []  # (node, its sparse module or window tag + name)
    for node in graph.nodes:  # the exporter's order, i.e. torch's execution order (do not toposort first)
        scope = scopes.get(node.name)
        if scope is None or not scope.in_module:  # shape bookkeeping: neither ends nor joins a stage
            continue
        if scope.module_of(_MASK_CLASSES) is not None:
            mask_nodes.append(node)
            if scope.module_of((_GENERATOR_CLASS,)) is not None:
                generator_nodes.add(id(node))
            in_order.append((node, None))
        else:
            window = scope.module_of(_WINDOW_CLASSES)
            in_order.append((node, scope.module_of(_SPARSE_CLASSES) if window is None else _WINDOW_TAG + window))

    # Shape bookkeeping outside any module joins the mask stage when only mask nodes consume it.
    in_mask = {id(n) for n in mask_nodes}
    in_sparse = {id(n) for n, module in in_order if module is not None}
    for node in reversed(graph.nodes):
        consumers = [c for t in node.outputs for c in t.outputs]
        if (id(node) not in in_mask and id(node) not in in_sparse and consumers
                and all(id(c) in in_mask for c in consumers)):
            mask_nodes.append(node)
            in_mask.add(id(node))
    for node in mask_nodes:
        node.name = MASK_PREFIX + _short(node.name)
    if mask_nodes:
        counts["mask"] = len(mask_nodes)
        _name_mask_tensors(graph, mask_nodes, generator_nodes, net_dilation)

    n_conv = n_window = 0
    for module, group in _calls(in_order):
        if module.startswith(_WINDOW_TAG):
            stage, module = f"{WINDOW_PREFIX}{n_window}", module.removeprefix(_WINDOW_TAG)
            n_window += 1
        else:
            stage = f"{SPARSE_PREFIX}{n_conv}"
            n_conv += 1
        for node in group:
            node.name = f"{stage}/{module}/{_short(node.name)}"
        counts[stage] = len(group)
    return counts


def _name_mask_tensors(graph: gs.Graph, mask_nodes: list[gs.Node], generator_nodes: set[int],
                       net_dilation: int | None = None) -> None:
    """Rename the generator's output ``mask``, the NonZero rows ``mask/pixels`` and the shared index tensors."""
    import numpy as np

    outputs = {id(t) for t in graph.outputs}
    inside = {id(n) for n in mask_nodes}
    mask_out = []
    for node in mask_nodes:
        if id(node) not in generator_nodes:
            continue
        for t in node.outputs:
            if id(t) in outputs or any(id(c) not in generator_nodes for c in t.outputs):
                mask_out.append(t)
    if len(mask_out) > 1:  # shape values the exporter shares with later stages (Swin blocks read H, W)
        mask_out = [t for t in mask_out if t.dtype is not None and np.issubdtype(t.dtype, np.floating)]
    if len(mask_out) > 1:  # inputs the exporter shares (the blend's bicubic pads x like the blur): masks are N×1×H×W
        single = [t for t in mask_out if t.shape is not None and len(t.shape) == 4 and t.shape[1] == 1]
        mask_out = single or mask_out
    output_mask = None
    if len(mask_out) == 2:  # the output blend: (network mask, output mask), told apart by their dilation
        # (equal dilations give equal masks: either serves)
        exact = [t for t in mask_out if _dilation_radius(t) == net_dilation]
        net = exact[0] if exact else max(mask_out, key=_dilation_radius)
        output_mask = next(t for t in mask_out if t is not net)
        mask_out = [net]
    if len(mask_out) != 1:
        log.warning("mask generator has %d output tensors; not renaming them", len(mask_out))
        return
    if not any(t.name == MASK_TENSOR for t in graph.outputs):  # a mask-only graph already calls it so
        mask_out[0].name = MASK_TENSOR
    if output_mask is not None:
        output_mask.name = OUTPUT_MASK_TENSOR
    for node in mask_nodes:  # NonZero → Transpose: the P×3 pixel rows (n, i, j)
        if node.op == "NonZero":
            for c in node.outputs[0].outputs:
                if c.op == "Transpose" and id(c) in inside:
                    c.outputs[0].name = "mask/pixels"
    # The index tensors every sparse stage shares (built once; the exporter attributes them to stage 0).
    for op, name in (("GatherND", "sparse/taps"), ("ScatterND", "sparse/pixels")):
        indices = {id(n.inputs[1]): n.inputs[1] for n in graph.nodes if n.op == op}
        if len(indices) == 1:
            next(iter(indices.values())).name = name


def _dilation_radius(t: gs.Tensor) -> int:
    """The dilation radius of a mask tensor: a MaxPool producer's kernel // 2, else 0 (undilated)."""
    producer = t.inputs[0] if t.inputs else None
    if producer is None or producer.op != "MaxPool":
        return 0
    return int(producer.attrs.get("kernel_shape", [1])[0]) // 2


def fold_and_cleanup(graph: gs.Graph) -> gs.Graph:
    """Fold constant subgraphs, drop unused nodes and tensors, and sort the nodes topologically."""
    return graph.fold_constants().cleanup().toposort()


_REDUCE_AXES_OPS = ("ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
                    "ReduceLogSumExp", "ReduceSumSquare")


_REDUCTIONS_17 = ("none", "add", "mul")  # ScatterND/ScatterElements reductions opset 17 knows


def _drop_inputs_from(node: gs.Node, index: int) -> None:
    while len(node.inputs) > index:  # SynchronizedList supports pop, not slice deletion
        node.inputs.pop()


def _split_is_even(node: gs.Node) -> bool:
    """A Split-18 whose opset-13 form (no ``num_outputs``) is the same: sizes given, or an even static split."""
    if len(node.inputs) > 1 and node.inputs[1].name != "":
        return True
    n = node.attrs.get("num_outputs")
    shape = node.inputs[0].shape
    axis = node.attrs.get("axis", 0)
    dim = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
    return n is not None and len(node.outputs) == n and isinstance(dim, int) and dim % n == 0


def _resize_is_17(node: gs.Node) -> bool:
    """A Resize-18 that Resize-13 expresses: no antialias, default aspect policy, no ``axes``."""
    return (not node.attrs.get("antialias", 0) and node.attrs.get("keep_aspect_ratio_policy", "stretch") == "stretch"
            and "axes" not in node.attrs)


def downgrade_to_opset17(graph: gs.Graph) -> gs.Graph:
    """Rewrite the opset-18 forms the exporter writes into their opset-17 equivalents.

    ``onnx.version_converter`` has no 18→17 adapter for Pad, so this does it for the ops amsr graphs use:
    Pad without ``axes`` is unchanged; ReduceMax/Min/Mean/… take constant ``axes`` back as an attribute;
    ScatterND/ScatterElements keep reductions 17 has; Resize drops its 18-only attributes at their
    defaults; Split loses ``num_outputs`` when it splits evenly.
    Anything else introduced in 18 raises ``ExportError`` (export with ``opset=18`` then).
    """
    import onnx
    import onnx_graphsurgeon as gs

    if graph.opset <= 17:
        return graph
    for node in graph.nodes:
        if (node.domain or "") not in ("", "ai.onnx") or onnx.defs.get_schema(node.op, 18, "").since_version < 18:
            continue
        if node.op == "Pad" and (len(node.inputs) < 4 or node.inputs[3].name == ""):
            _drop_inputs_from(node, 3)
        elif node.op in _REDUCE_AXES_OPS and not node.attrs.get("noop_with_empty_axes", 0):
            node.attrs.pop("noop_with_empty_axes", None)
            if len(node.inputs) > 1 and node.inputs[1].name != "":
                axes = node.inputs[1]
                if not isinstance(axes, gs.Constant):
                    raise ExportError(f"{node.name}: {node.op} with computed axes has no opset-17 form")
                node.attrs["axes"] = [int(a) for a in axes.values.reshape(-1)]
                _drop_inputs_from(node, 1)
        elif node.op in ("ScatterND", "ScatterElements") and node.attrs.get("reduction", "none") in _REDUCTIONS_17:
            pass
        elif node.op == "Resize" and _resize_is_17(node):
            node.attrs.pop("antialias", None)  # Resize-18 only added these two; at their defaults 13 is the same
            node.attrs.pop("keep_aspect_ratio_policy", None)
        elif node.op == "Split" and _split_is_even(node):
            node.attrs.pop("num_outputs", None)  # Split-13 without sizes splits evenly into its outputs
        else:
            raise ExportError(f"{node.name}: {node.op} as written at opset 18 has no opset-17 form; "
                              "export with opset=18")
    graph.opset = 17
    if graph.import_domains is not None:  # gs writes these verbatim; they are the source model's protos
        graph.import_domains = [onnx.helper.make_opsetid(d.domain, 17) if d.domain in ("", "ai.onnx") else d
                                for d in graph.import_domains]
    return graph


def _mask_tensor(graph: gs.Graph) -> gs.Variable:
    t = graph.tensors().get(MASK_TENSOR)
    if t is None:
        raise ExportError(f"graph has no tensor named {MASK_TENSOR!r}: not an accelerated amsr export "
                          "(or exported without name_mask_subgraph)")
    return t


def mask_tensors(graph: gs.Graph) -> list[gs.Variable]:
    """Every whole-image mask the graph computes from ``lr``: ``mask`` and, with an output blend, ``mask/output``.

    Both are 2-means decisions over the whole image, so a tiled run must take both from the whole image: a tile
    that recomputes either one thresholds its own content (issue #13: the blend mask recomputed per 512-px tile
    left 41.4 dB against dense on a 640×400 photo, 52.0 dB untiled).
    """
    tensors = [_mask_tensor(graph)]
    output = graph.tensors().get(OUTPUT_MASK_TENSOR)
    if output is not None:
        tensors.append(output)
    return tensors


def mask_names(graph: gs.Graph) -> list[str]:
    """The names of ``mask_tensors`` (``["mask"]`` or ``["mask", "mask/output"]``)."""
    return [t.name for t in mask_tensors(graph)]


def expose_mask_output(graph: gs.Graph) -> gs.Graph:
    """Add the ``mask`` tensor (N×1×H×W float32, 0/1) as a second graph output (no-op if it is one already)."""
    import numpy as np

    t = _mask_tensor(graph)
    if t not in graph.outputs:
        t.dtype = np.float32
        graph.outputs.append(t)
    return graph


def extract_mask_subgraph(graph: gs.Graph) -> gs.Graph:
    """Keep only what computes the masks from ``lr``: the mask-only graph, cut out of an accelerated export.

    Outputs ``mask`` and, for an output-blend graph, ``mask/output`` (``mask_tensors``).
    """
    import numpy as np

    masks = mask_tensors(graph)
    for t in masks:
        t.dtype = np.float32
    graph.outputs = masks
    return graph.cleanup().toposort()


def mask_as_input(graph: gs.Graph) -> gs.Graph:
    """Make every mask (``mask_tensors``: N×1×H×W float32, 0/1) a graph input and drop what computed them.

    The result runs the sparse network under masks computed elsewhere, e.g. once for a whole image and
    cropped per tile. Only for graphs whose masks have the input's H×W (no padding before the generator).
    """
    import numpy as np

    lr = graph.inputs[0]
    for t in mask_tensors(graph):
        if t.shape is not None and lr.shape is not None and list(t.shape[2:]) != list(lr.shape[2:]):
            raise ExportError(f"{t.name} is {t.shape} but the input is {lr.shape}: the mask is computed on a "
                              "padded input and cannot be supplied per tile")
        t.inputs.clear()
        t.dtype = np.float32
        t.shape = [lr.shape[0] if lr.shape else "N", 1, *(lr.shape[2:] if lr.shape else ["H", "W"])]
        graph.inputs.append(t)
    return graph.cleanup().toposort()
