"""export/: CARN-M x4 dense and accelerated graphs (validity, dynamic H×W, gather/scatter stages, parity with
PyTorch at odd sizes), the mask-only graph, the export twins, dynamic padding, opset 17 and error paths."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx", reason="ONNX export tests need the onnx extra: pip install 'amsr[onnx]'")
gs = pytest.importorskip("onnx_graphsurgeon", reason="needs onnx-graphsurgeon (pip install 'amsr[onnx]')")
pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (pip install 'amsr[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="parity checks need onnxruntime (pip install 'amsr[onnx]')")
pytest.importorskip("polygraphy", reason="parity checks need polygraphy (pip install 'amsr[onnx]')")

from amsr.core.errors import ExportError
from amsr.export.exportable import prepare_for_export
from amsr.export.onnx_export import export_mask_only, export_onnx
from amsr.export.passes import (
    downgrade_to_opset17,
    expose_mask_output,
    name_mask_subgraph,
)
from amsr.io.images import list_images, read_rgb8, to_tensor
from amsr.masking.mask import MaskConfig, compute_mask
from amsr.models import unwrap_accelerated
from amsr.runtime.export_check import onnxruntime_check
from amsr.runtime.onnxrt import OrtUpscaler
from amsr.runtime.parity import compare_with_torch
from amsr.sparse.pixel import MaskedConv2d
from amsr.tools.calibrate import make_lr
from amsr.zoo.descriptor import SizeRequirements
from amsr.zoo.padding import PaddedSR
from tests.conftest import weight_file
from tests.onnx_exports import carn_m_x4, exported, exported_blend

ODD_SIZES = [(2, 17, 23), (1, 32, 48), (1, 50, 37)]


@pytest.fixture(scope="module")
def carn_weights(weights_dir: Path) -> Path:
    return weight_file(weights_dir, "carn_m.pth")


def _random_inputs(shapes: list[tuple[int, int, int]], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((n, 3, h, w), dtype=np.float32) for n, h, w in shapes]


def _ops(model: onnx.ModelProto) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in model.graph.node)


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_dense_graph_is_valid_with_dynamic_batch_and_size(carn_weights: Path) -> None:
    path = exported("dense", carn_weights)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in model.graph.input] == ["lr"] and [o.name for o in model.graph.output] == ["sr"]
    n, c, h, w = _dims(model.graph.input[0])
    assert c == 3 and all(isinstance(d, str) for d in (n, h, w))
    assert not {"NonZero", "GatherND", "ScatterND"} & set(_ops(model))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["amsr.kind"] == "dense" and meta["amsr.scale"] == "4"

    result = compare_with_torch(carn_m_x4(carn_weights).dense(), path, _random_inputs(ODD_SIZES))
    assert result.passed, result.summary()
    assert result.max_abs_diff <= 1e-4
    assert [r.shape for r in result.rows] == [(n, 3, h, w) for n, h, w in ODD_SIZES]


def test_accelerated_graph_gathers_and_scatters_in_named_stages(carn_weights: Path) -> None:
    model = onnx.load(exported("accelerated", carn_weights))
    dense = onnx.load(exported("dense", carn_weights))
    onnx.checker.check_model(model, full_check=True)
    ops = _ops(model)
    acc = carn_m_x4(carn_weights).accelerated()
    calls = 18  # 6 masked modules, each run 3 times by CARN-M's weight-shared cascading blocks
    assert ops["NonZero"] == 1 and ops["GatherND"] == calls and ops["ScatterND"] == calls and ops["MatMul"] == calls
    # The masked convs are gone from the dense part (the one extra Conv is the mask's Gaussian blur).
    assert ops["Conv"] == _ops(dense)["Conv"] - calls + 1
    for node in model.graph.node:
        if node.op_type == "ScatterND":
            assert all(a.s in (b"", b"none") for a in node.attribute if a.name == "reduction")

    names = [n.name for n in model.graph.node]
    masked_modules = {name for name, m in acc.named_modules() if isinstance(m, MaskedConv2d)}
    stages = {}
    for name in names:
        if name.startswith("sparse_conv_"):
            stage, module, _ = name.split("/", 2)
            stages.setdefault(stage, set()).add(module)
    assert sorted(stages, key=lambda s: int(s.rsplit("_", 1)[1])) == [f"sparse_conv_{i}" for i in range(calls)]
    assert all(len(mods) == 1 and mods <= masked_modules for mods in stages.values())
    # Execution order: body.0 then body.2 of b1, three times, then b2, then b3.
    assert stages["sparse_conv_0"] == {"net.net.b1.b1.body.0"} and stages["sparse_conv_1"] == {"net.net.b1.b1.body.2"}
    assert stages["sparse_conv_17"] == {"net.net.b3.b1.body.2"}

    mask_ops = collections.Counter(n.op_type for n in model.graph.node if n.name.startswith("mask/"))
    assert mask_ops["MaxPool"] == 1 and mask_ops["NonZero"] == 1 and mask_ops["ReduceSum"] >= 50
    produced = {t for n in model.graph.node for t in n.output}
    assert {"mask", "mask/pixels", "sparse/taps", "sparse/pixels"} <= produced
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["amsr.kind"] == "accelerated" and meta["amsr.sparse_stages"] == str(calls)
    assert json.loads(meta["amsr.mask_config"])["kmeans_iters"] == acc.net.config.kmeans_iters


def test_accelerated_matches_torch_and_masks_are_identical_at_odd_sizes(carn_weights: Path) -> None:
    result = compare_with_torch(carn_m_x4(carn_weights).accelerated(), exported("accelerated", carn_weights),
                                _random_inputs(ODD_SIZES, seed=1))
    assert result.passed, result.summary()
    assert result.mask_mismatch_pixels == 0 and result.max_abs_diff <= 1e-4


def test_default_operating_point_with_output_blend_exports_and_matches_torch(carn_weights: Path) -> None:
    """The shipped default (output blend) exports as CARN-M's row program (``amsr.rows``: body and tail computed
    only where a kept SR pixel needs them), equal to PyTorch, and both masks come from one mask stage."""
    from amsr.operating_point import default_operating_point

    cfg = default_operating_point("carn_m", 4)
    assert cfg is not None and cfg.output_dilation is not None
    acc = carn_m_x4(carn_weights).accelerated(cfg)
    path = exported_blend(carn_weights)
    result = compare_with_torch(acc, path, _random_inputs(ODD_SIZES, seed=3))
    assert result.passed, result.summary()
    assert result.mask_mismatch_pixels == 0 and result.max_abs_diff <= 1e-4
    model = onnx.load(path)
    produced = {t for n in model.graph.node for t in n.output}
    assert {"mask", "mask/output"} <= produced
    assert {p.key: p.value for p in model.metadata_props}["amsr.execution"] == "rows"
    mask_ops = collections.Counter(n.op_type for n in model.graph.node if n.name.startswith("mask/"))
    assert mask_ops["MaxPool"] == 2 and mask_ops["NonZero"] == 0  # the rows' indices are built after the masks
    # the blend's upsampling is conv + DepthToSpace and a broadcast (amsr.core.upsample), not onnxruntime's slow Resize
    assert "Resize" not in {n.op_type for n in model.graph.node}


def test_mask_only_graph_gives_the_torch_mask(carn_weights: Path, data_dir: Path, tmp_path: Path) -> None:
    # 10 k-means steps instead of 50 keep this export at a few seconds; the default configuration's mask is
    # checked below, cut out of the accelerated graph.
    config = MaskConfig(kmeans_iters=10)
    path = export_mask_only(carn_m_x4(carn_weights).accelerated(config), tmp_path / "mask.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["lr"] and [o.name for o in model.graph.output] == ["mask"]
    n, c, h, w = _dims(model.graph.output[0])
    assert c == 1 and all(isinstance(d, str) for d in (n, h, w))
    assert not {"GatherND", "ScatterND", "NonZero", "MatMul"} & set(_ops(model))
    assert all(node.name.startswith("mask/") for node in model.graph.node)
    assert {p.key: p.value for p in model.metadata_props}["amsr.kind"] == "mask"

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cut_out = OrtUpscaler(exported("accelerated", carn_weights))  # mask stage of the full graph (50 steps)
    default = unwrap_accelerated(carn_m_x4(carn_weights).accelerated()).config
    for lr_path in list_images(data_dir / "Set5" / "x4" / "LR"):
        x = to_tensor(read_rgb8(lr_path))
        np.testing.assert_array_equal(session.run(["mask"], {"lr": x.numpy()})[0], compute_mask(x, config).numpy())
        np.testing.assert_array_equal(cut_out.mask(x.numpy()), compute_mask(x, default).numpy())


def test_mask_graph_with_an_hf_floor_gives_the_torch_mask(carn_weights: Path, data_dir: Path, tmp_path: Path) -> None:
    t53 = data_dir / "train" / "T91" / "t53.bmp"
    if not t53.is_file():
        pytest.skip(f"{t53} not found (set AMSR_DATA_DIR)")
    config = MaskConfig(kmeans_iters=10, hf_floor=0.04)
    path = export_mask_only(carn_m_x4(carn_weights).accelerated(config), tmp_path / "mask.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    t53_lr = to_tensor(make_lr(read_rgb8(t53), 4)[0])  # as calibration makes it
    for x in [t53_lr, *(to_tensor(read_rgb8(p)) for p in list_images(data_dir / "Set5" / "x4" / "LR"))]:
        np.testing.assert_array_equal(session.run(["mask"], {"lr": x.numpy()})[0], compute_mask(x, config).numpy())
    x = t53_lr  # the floor is in the graph: without it this image's mask is much thinner
    assert compute_mask(x, config).mean() > compute_mask(x, MaskConfig(kmeans_iters=10)).mean() + 0.1


def test_mask_can_be_exposed_as_a_second_output(carn_weights: Path) -> None:
    graph = gs.import_onnx(onnx.load(exported("accelerated", carn_weights)))
    model = gs.export_onnx(expose_mask_output(graph))
    assert [o.name for o in model.graph.output] == ["sr", "mask"]
    x = _random_inputs([(1, 21, 30)], seed=6)[0]
    sr, mask = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"lr": x})
    assert sr.shape == (1, 3, 84, 120)
    np.testing.assert_array_equal(mask, compute_mask(torch.from_numpy(x)).numpy())


def test_export_twins_compute_the_same_values(carn_weights: Path) -> None:
    acc = carn_m_x4(carn_weights).accelerated()
    twin = prepare_for_export(acc)
    assert not any(isinstance(m, MaskedConv2d) for m in twin.modules())
    x = torch.from_numpy(_random_inputs([(2, 19, 26)], seed=2)[0])
    with torch.no_grad():
        ref, got = acc(x), twin(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert any(isinstance(m, MaskedConv2d) for m in acc.modules())  # the original is untouched


class _TinySR(nn.Module):
    """3×3 conv + pixel shuffle ×2: a fast stand-in for a zoo net."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 12, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


def test_padding_stays_dynamic_for_sizes_the_sample_did_not_need(tmp_path: Path) -> None:
    # PaddedSR skips the pad when the size is already a multiple: traced naively at 64×64 the graph would
    # never pad, and 17×23 would come out wrong. export_onnx verifies at 17×23 itself; more sizes here.
    model = PaddedSR(_TinySR(), 2, SizeRequirements(multiple_of=8, pad_mode="reflect")).eval()
    path = export_onnx(model, tmp_path / "tiny.onnx", verify=onnxruntime_check)
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta["amsr.min_input_size"] == "8"
    result = compare_with_torch(model, path, _random_inputs([(1, 9, 8), (2, 20, 31), (1, 64, 64)], seed=3))
    assert result.passed, result.summary()


def test_a_failing_verification_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def reject(*args: object) -> None:
        raise ExportError("verification failed")

    monkeypatch.setattr("amsr.export.onnx_export._verify", reject)
    with pytest.raises(ExportError, match="verification failed"):
        export_onnx(PaddedSR(_TinySR(), 2, SizeRequirements()).eval(), tmp_path / "bad.onnx", verify=onnxruntime_check)
    assert list(tmp_path.iterdir()) == []


def test_export_errors(tmp_path: Path, carn_weights: Path) -> None:
    model = carn_m_x4(carn_weights)
    with pytest.raises(ExportError, match="opset 16"):
        export_onnx(model.dense(), tmp_path / "a.onnx", opset=16)
    with pytest.raises(ExportError, match="sample_size"):
        export_onnx(model.dense(), tmp_path / "b.onnx", sample_size=(1, 64))
    with pytest.raises(ExportError, match="dense model"):
        export_mask_only(model.dense(), tmp_path / "c.onnx")
    assert list(tmp_path.iterdir()) == []


def _opset18_fixture() -> onnx.ModelProto:
    """x → Pad (no axes) → ReduceMax over axis 1 given as an input (the opset-18 form)."""
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Pad", ["x", "pads"], ["p"], mode="edge", name="pad"),
         h.make_node("ReduceMax", ["p", "axes"], ["y"], keepdims=1, name="reduce")],
        "fixture",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 1, "H2", "W2"])],
        initializer=[onnx.numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
                     onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])


def test_downgrade_to_opset17_keeps_values() -> None:
    original = _opset18_fixture()
    graph = gs.import_onnx(original)
    downgrade_to_opset17(graph)
    model = gs.export_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain == ""] == [17]
    x = np.random.default_rng(4).random((2, 3, 5, 7), dtype=np.float32)
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for m in (original, model)]
    np.testing.assert_array_equal(run[0], run[1])
    assert run[1].shape == (2, 1, 7, 9)


def test_stage_naming_needs_exporter_metadata() -> None:
    with pytest.raises(ExportError, match="metadata"):
        name_mask_subgraph(gs.import_onnx(_opset18_fixture()), {})


@pytest.mark.parametrize("d_net, d_out", [(4, 3), (2, 0), (3, 3), (1, 3), (0, 2)])
def test_blend_masks_are_told_apart_by_their_dilation(d_net: int, d_out: int) -> None:
    """The output blend's mask stage ends in two masks: the network mask (``mask``, the sparse stages index it,
    whichever strategy) has the network's dilation — the more dilated one with published weights, the less
    dilated one for a fine-tuned wide blend (d_out > d_net); the other is ``mask/output``."""
    from amsr.export.passes import _name_mask_tensors

    x = gs.Variable("lr", np.float32, [1, 1, 8, 8])
    base = gs.Variable("base", np.float32, [1, 1, 8, 8])
    nodes = [gs.Node("Relu", "gen/base", inputs=[x], outputs=[base])]
    outs = []
    for d in (d_net, d_out):
        if d == 0:
            outs.append(base)
            continue
        t = gs.Variable(f"dil{d}_{len(nodes)}", np.float32, [1, 1, 8, 8])
        nodes.append(gs.Node("MaxPool", f"gen/pool{len(nodes)}", attrs={"kernel_shape": [2 * d + 1] * 2},
                             inputs=[base], outputs=[t]))
        outs.append(t)
    later = [gs.Node("Identity", f"net{i}", inputs=[t], outputs=[gs.Variable(f"y{i}", np.float32)])
             for i, t in enumerate(outs)]
    graph = gs.Graph(nodes=nodes + later, inputs=[x], outputs=[n.outputs[0] for n in later])
    _name_mask_tensors(graph, nodes, {id(n) for n in nodes}, net_dilation=d_net)
    assert outs[0].name == "mask" and outs[1].name == "mask/output"


def test_export_caches_are_keyed_by_the_exporting_source(tmp_path: Path) -> None:
    """A changed amsr source file changes the key that export caches (amsr-bench, amsr-upscale) put in file
    names, so a graph exported by other code is never reused."""
    from amsr.export.onnx_export import source_hash, toolchain_hash

    (tmp_path / "pkg").mkdir()
    f = tmp_path / "pkg" / "m.py"
    f.write_text("x = 1\n")
    before = source_hash([tmp_path / "pkg"], "torch=1")
    assert source_hash([tmp_path / "pkg"], "torch=1") == before and source_hash([tmp_path / "pkg"], "torch=2") != before
    f.write_text("x = 2\n")
    assert source_hash([tmp_path / "pkg"], "torch=1") != before
    assert len(toolchain_hash()) == 8
    # A harness or CLI (an excluded folder) changes no key: editing a help string keeps every cached graph.
    (tmp_path / "pkg" / "cli").mkdir()
    now = source_hash([tmp_path / "pkg"], "torch=1", exclude=[tmp_path / "pkg" / "cli"])
    (tmp_path / "pkg" / "cli" / "tool.py").write_text("HELP = 'new words'\n")
    assert source_hash([tmp_path / "pkg"], "torch=1", exclude=[tmp_path / "pkg" / "cli"]) == now
    assert source_hash([tmp_path / "pkg"], "torch=1") != now


def test_export_verifies_on_image_like_inputs(weights_dir: Path, tmp_path: Path) -> None:
    """PAN x4 maps uniform white noise to 1e21 (in PyTorch too), so verifying on white noise failed every PAN
    export ("ONNX output differs", max |Δ| 3.6e21); the verification input is image-like and the export works."""
    from amsr.export.onnx_export import verification_image
    from amsr.models import load_model
    from tests.conftest import weight_file

    x = verification_image(40, 52, torch.Generator().manual_seed(1))
    assert x.shape == (1, 3, 40, 52) and 0 <= float(x.min()) and float(x.max()) <= 1
    density = float(compute_mask(x, MaskConfig()).mean())
    assert 0.05 < density < 0.95  # flat and textured parts, so accelerated exports are checked on both
    weights = weight_file(weights_dir, "pan_x4.pth")
    model = load_model("pan", 4, weights=weights).dense()
    with torch.no_grad():
        assert float(model(torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))).abs().max()) > 1e6
    export_onnx(model, tmp_path / "pan.onnx", verify=onnxruntime_check)  # raised ExportError before
