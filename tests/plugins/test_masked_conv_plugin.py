"""plugins/: amsr::MaskedConv3x3 — references (NumPy, torch, MaskedConv2d), the onnx.reference OpRun, the
plugin export (node name, domain, attributes, weights), plugin graph == gather/scatter graph == PyTorch,
the Triton kernel under TRITON_INTERPRET=1, and the TensorRT plugin (GPU only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="needs onnx (pip install 'amsr[onnx]')")
pytest.importorskip("onnx_graphsurgeon", reason="needs onnx-graphsurgeon (pip install 'amsr[onnx]')")

from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from amsr.core.errors import BackendUnavailableError, ExportError
from amsr.plugins.masked_conv3x3 import (
    ONNX_DOMAIN,
    ONNX_OP_TYPE,
    PLUGIN_ID,
    MaskedConv3x3,
    masked_conv3x3_numpy,
    masked_conv3x3_torch,
)
from amsr.sparse.pixel import MaskContext, MaskedConv2d
from tests.conftest import weight_file

REPO = Path(__file__).resolve().parents[2]


def _inputs(groups: int, c: int = 8, h: int = 9, w: int = 13, n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    mask = (torch.rand(n, 1, h, w, generator=g) > 0.6).float()
    weight = torch.randn(c, c // groups, 3, 3, generator=g) * 0.2
    bias = torch.randn(c, generator=g) * 0.1
    return x, mask, weight, bias


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_numpy_and_torch_references_match_masked_conv2d(groups: int) -> None:
    x, mask, weight, bias = _inputs(groups)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=groups)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    context = MaskContext()
    context.mask = mask
    with torch.no_grad():
        expected = MaskedConv2d(conv, context).forward_sparse(x, mask)
    got_torch = masked_conv3x3_torch(x, mask, weight, bias, groups)
    got_np = masked_conv3x3_numpy(x.numpy(), mask.numpy(), weight.numpy(), bias.numpy(), groups)
    assert torch.allclose(got_torch, expected, atol=1e-5)
    np.testing.assert_allclose(got_np, expected.numpy(), atol=1e-5)
    assert torch.equal(got_torch[mask.expand_as(x) == 0], x[mask.expand_as(x) == 0])  # masked-out: input kept


def test_reference_rejects_bad_shapes() -> None:
    x, mask, weight, bias = _inputs(1)
    with pytest.raises(ValueError, match="groups"):
        masked_conv3x3_numpy(x.numpy(), mask.numpy(), weight.numpy(), bias.numpy(), groups=3)
    with pytest.raises(ValueError, match="mask"):
        masked_conv3x3_numpy(x.numpy(), mask.numpy()[:, :, :4], weight.numpy(), bias.numpy())


def _single_node_model(groups: int, c: int) -> onnx.ModelProto:
    node = helper.make_node(ONNX_OP_TYPE, ["x", "mask", "w", "b"], ["y"], domain=ONNX_DOMAIN, groups=groups,
                            plugin_namespace="amsr", plugin_version="1")
    graph = helper.make_graph([node], "g", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, "H", "W"]),
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, "H", "W"]),
        helper.make_tensor_value_info("w", TensorProto.FLOAT, [c, c // groups, 3, 3]),
        helper.make_tensor_value_info("b", TensorProto.FLOAT, [c])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, "H", "W"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ONNX_DOMAIN, 1)])


@pytest.mark.parametrize("groups", [1, 4])
def test_oprun_runs_a_plugin_node_in_the_reference_evaluator(groups: int) -> None:
    x, mask, weight, bias = _inputs(groups)
    model = _single_node_model(groups, 8)
    onnx.checker.check_model(model)
    (y,) = ReferenceEvaluator(model, new_ops=[MaskedConv3x3]).run(
        None, {"x": x.numpy(), "mask": mask.numpy(), "w": weight.numpy(), "b": bias.numpy()})
    np.testing.assert_allclose(y, masked_conv3x3_torch(x, mask, weight, bias, groups).numpy(), atol=1e-5)


_TRITON_CHECK = """
import torch
from amsr.plugins.masked_conv3x3 import masked_conv3x3_torch
from amsr.plugins.masked_conv3x3_triton import launch
g = torch.Generator().manual_seed(0)
worst = 0.0
for groups, c, h, w in [(1, 8, 9, 13), (4, 32, 11, 7)]:
    x = torch.rand(2, c, h, w, generator=g)
    m = (torch.rand(2, 1, h, w, generator=g) > 0.6).float()
    m[1] = 0  # an image with nothing masked in: every block takes the copy path
    wt = torch.randn(c, c // groups, 3, 3, generator=g)
    b = torch.randn(c, generator=g)
    ref = masked_conv3x3_torch(x, m, wt, b, groups)
    got = launch(x, m, wt, b, groups)
    assert torch.equal(got[1], x[1])
    worst = max(worst, (got - ref).abs().max().item())
print(worst)
"""


def test_triton_kernel_matches_reference_in_interpreter_mode() -> None:
    pytest.importorskip("triton", reason="the Triton kernel test needs triton (pip install triton)")
    # TRITON_INTERPRET is read when the kernel is decorated, so the check runs in a fresh interpreter.
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", _TRITON_CHECK], env=env, capture_output=True, text=True, check=False,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 1e-4


_PTX_CHECK = """
from triton.backends.compiler import GPUTarget
from amsr.plugins.masked_conv3x3_triton import compile_ptx
k = compile_ptx("fp16", target=GPUTarget("cuda", 80, 32))
entry = k.ptx[k.ptx.index(".entry"):]
print(k.name, k.num_warps, entry[:entry.index(")")].count(".param"))
"""


def test_triton_kernel_compiles_ahead_of_time_to_ptx_without_a_gpu() -> None:
    """What the TensorRT plugin's aot_impl returns: PTX for sm_80 (compiled here; no GPU is needed for that)."""
    pytest.importorskip("triton", reason="the Triton kernel test needs triton (pip install triton)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    proc = subprocess.run([sys.executable, "-c", _PTX_CHECK], env=env, capture_output=True, text=True, check=False,
                          timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    name, warps, params = proc.stdout.split()
    # 4 inputs + 4 scalars + 1 output, plus Triton's 2 hidden scratch pointers (unused: compile_ptx checks it)
    assert name == "masked_conv3x3_kernel" and int(warps) >= 1 and int(params) == 11


def test_trt_plugin_module_without_tensorrt_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", None)
    monkeypatch.delitem(sys.modules, "amsr.plugins.masked_conv3x3_trt", raising=False)
    with pytest.raises(BackendUnavailableError, match="pip install 'tensorrt"):
        import amsr.plugins.masked_conv3x3_trt  # noqa: F401


# --- the plugin export on the real CARN-M x4 graph -------------------------------------------------------


@pytest.fixture(scope="module")
def carn_weights(weights_dir: Path) -> Path:
    return weight_file(weights_dir, "carn_m.pth")


@pytest.fixture(scope="module")
def plugin_model(carn_weights: Path) -> onnx.ModelProto:
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (pip install 'amsr[onnx]')")
    from amsr.export.plugin_export import plugin_graph_from
    from tests.onnx_exports import exported

    return plugin_graph_from(onnx.load(exported("accelerated", carn_weights)))


def _strip_net(path: str) -> str:
    while path.startswith("net."):
        path = path[4:]
    return path


def test_plugin_export_replaces_every_stage_with_a_matching_node(plugin_model: onnx.ModelProto,
                                                                 carn_weights: Path) -> None:
    from tests.onnx_exports import carn_m_x4

    nodes = [n for n in plugin_model.graph.node if n.op_type == ONNX_OP_TYPE]
    meta = {p.key: p.value for p in plugin_model.metadata_props}
    assert len(nodes) == int(meta["amsr.sparse_stages"]) > 0
    assert meta["amsr.sparse_impl"] == "plugin"
    assert not [n for n in plugin_model.graph.node if n.op_type in ("GatherND", "ScatterND", "NonZero")]
    assert any(o.domain == ONNX_DOMAIN for o in plugin_model.opset_import)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in plugin_model.graph.initializer}
    convs = {name: m.conv for name, m in carn_m_x4(carn_weights).accelerated().named_modules()
             if isinstance(m, MaskedConv2d)}
    for node in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert node.domain == ONNX_DOMAIN and f"{node.domain}::{node.op_type}" == PLUGIN_ID
        assert attrs["plugin_namespace"] == b"amsr" and attrs["plugin_version"] == b"1"
        assert node.input[1] == "mask" and len(node.input) == 4
        weight = inits[node.input[2]]
        scope = _strip_net(node.name.split("/")[1])  # sparse_conv_<k>/<torch module path>/MaskedConv3x3
        conv = next(c for name, c in convs.items() if _strip_net(name) == scope)
        assert attrs["groups"] == conv.groups
        np.testing.assert_array_equal(weight, conv.weight.detach().numpy())
        np.testing.assert_array_equal(inits[node.input[3]], conv.bias.detach().numpy())


def test_plugin_graph_equals_gather_scatter_graph_and_pytorch(plugin_model: onnx.ModelProto,
                                                              carn_weights: Path) -> None:
    import onnxruntime as ort

    from tests.onnx_exports import carn_m_x4, exported

    x = np.random.default_rng(3).random((1, 3, 17, 23), dtype=np.float32)
    (y_plugin,) = ReferenceEvaluator(plugin_model, new_ops=[MaskedConv3x3]).run(["sr"], {"lr": x})
    y_gs = ort.InferenceSession(str(exported("accelerated", carn_weights))).run(["sr"], {"lr": x})[0]
    with torch.no_grad():
        y_torch = carn_m_x4(carn_weights).accelerated()(torch.from_numpy(x)).numpy()
    assert np.abs(y_plugin - y_gs).max() < 1e-4
    assert np.abs(y_plugin - y_torch).max() < 1e-4


def test_plugin_export_rejects_a_dense_graph(carn_weights: Path) -> None:
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (pip install 'amsr[onnx]')")
    from amsr.export.plugin_export import plugin_graph_from
    from tests.onnx_exports import exported

    with pytest.raises(ExportError, match="mask"):
        plugin_graph_from(onnx.load(exported("dense", carn_weights)))


def test_export_with_sparse_impl_plugin_writes_the_plugin_graph(carn_weights: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The plumbing of ``sparse_impl="plugin"``; the (slow) export itself is the session-cached one."""
    import shutil

    from amsr.export import onnx_export
    from amsr.export.plugin_export import export_with_sparse_impl
    from tests.onnx_exports import carn_m_x4, exported

    cached = exported("accelerated", carn_weights)
    monkeypatch.setattr(onnx_export, "export_onnx", lambda model, out, **kw: Path(shutil.copy(cached, out)))
    out = export_with_sparse_impl(carn_m_x4(carn_weights).accelerated(), tmp_path / "m.onnx", sparse_impl="plugin")
    model = onnx.load(str(out))
    assert any(n.op_type == ONNX_OP_TYPE for n in model.graph.node)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary left behind


def test_export_with_sparse_impl_rejects_unknown_impl(tmp_path: Path) -> None:
    from amsr.export.plugin_export import export_with_sparse_impl

    with pytest.raises(ExportError, match="sparse_impl"):
        export_with_sparse_impl(torch.nn.Identity(), tmp_path / "x.onnx", sparse_impl="cuda")


def _has_gpu_and_trt_plugins() -> bool:
    try:
        import tensorrt.plugin  # noqa: F401

        from amsr.runtime.trt import gpu_name

        gpu_name()
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu_and_trt_plugins(),
                    reason="needs an NVIDIA GPU and TensorRT ≥ 10.10 (tensorrt.plugin with aot_impl); none here")
def test_plugin_engine_matches_the_reference(plugin_model: onnx.ModelProto, tmp_path: Path) -> None:
    from amsr.runtime.trt import BuildConfig, TrtUpscaler, build_engine

    path = tmp_path / "plugin.onnx"
    onnx.save(plugin_model, str(path))
    engine = build_engine(path, tmp_path / "plugin.engine", BuildConfig(opt_shape=(1, 3, 64, 64),
                                                                        max_shape=(1, 3, 128, 128)))
    x = np.random.default_rng(4).random((1, 3, 40, 56), dtype=np.float32)
    (ref,) = ReferenceEvaluator(plugin_model, new_ops=[MaskedConv3x3]).run(["sr"], {"lr": x})
    assert np.abs(TrtUpscaler(engine)(x) - ref).max() < 5e-4
