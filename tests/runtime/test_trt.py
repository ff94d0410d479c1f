"""runtime/trt.py: BuildConfig validation, the fp16 guard, the engine cache key and sidecar (a mismatch is
refused), errors without TensorRT or a GPU, the parity tolerances; engine build/run on a GPU (skipped here)."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="needs onnx (pip install 'amsr[onnx]')")
pytest.importorskip("polygraphy", reason="needs polygraphy (pip install 'amsr[onnx]')")

from onnx import TensorProto, helper

from amsr.core.errors import BackendUnavailableError, ExportError, UnsupportedModelError
from amsr.runtime import trt as trt_mod
from amsr.runtime.trt import (
    BuildConfig,
    EngineMismatchError,
    build_engine,
    check_fp16,
    check_sidecar,
    engine_cache_key,
    engine_path_for,
    import_tensorrt,
    load_engine,
    make_sidecar,
    read_sidecar,
    sidecar_path,
)
from amsr.runtime.trt_parity import trt_tolerances


def _tiny_onnx(path: Path, min_size: int = 1, op: str = "Identity") -> Path:
    node = helper.make_node(op, ["lr"], ["sr"], name="n0")
    graph = helper.make_graph([node], "t", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="amsr.min_input_size", value=str(min_size))
    model.metadata_props.add(key="amsr.scale", value="1")
    onnx.save(model, str(path))
    return path


def test_build_config_defaults_are_sane() -> None:
    c = BuildConfig()
    assert c.min_shape == (1, 3, 16, 16) and c.opt_shape == (1, 3, 256, 256) and c.max_shape == (1, 3, 1024, 1024)
    assert not c.fp16 and c.precision == "fp32" and min(c.min_shape) >= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.fp16 = True  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, match", [
    ({"min_shape": (1, 3, 0, 0)}, "positive"),
    ({"min_shape": (1, 3, 512, 512)}, "min ≤ opt ≤ max"),
    ({"opt_shape": (1, 3, 2048, 256)}, "min ≤ opt ≤ max"),
    ({"max_shape": (1, 4, 1024, 1024)}, "3 channels"),
    ({"max_shape": (1, 3, 1024)}, "four"),
    ({"workspace_bytes": 1000}, "MiB"),
])
def test_build_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BuildConfig(**kwargs)


def test_fp16_guard_refuses_models_without_half_support(tmp_path: Path) -> None:
    check_fp16(BuildConfig(fp16=True), supports_half=True)
    check_fp16(BuildConfig(), supports_half=False)
    with pytest.raises(UnsupportedModelError, match="swinir.*supports_half=False"):
        check_fp16(BuildConfig(fp16=True), supports_half=False, model_name="swinir")
    # build_engine applies it before anything needs TensorRT
    with pytest.raises(UnsupportedModelError):
        build_engine(_tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine", BuildConfig(fp16=True),
                     supports_half=False)


def test_fp16_guard_uses_the_zoo_and_cannot_be_skipped(tmp_path: Path) -> None:
    onnx_path = _tiny_onnx(tmp_path / "m.onnx")
    assert trt_mod.model_supports_half("carn_m") and not trt_mod.model_supports_half("swinir")
    with pytest.raises(UnsupportedModelError, match="swinir"):
        build_engine(onnx_path, tmp_path / "m.engine", BuildConfig(fp16=True), model_name="swinir")
    with pytest.raises(UnsupportedModelError, match="model_name"):
        build_engine(onnx_path, tmp_path / "m.engine", BuildConfig(fp16=True))


def test_missing_tensorrt_names_the_pip_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match="pip install tensorrt"):
        import_tensorrt()
    with pytest.raises(BackendUnavailableError, match="pip install tensorrt"):
        build_engine(_tiny_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists() and not sidecar_path(tmp_path / "m.engine").exists()


def test_no_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trt_mod.shutil, "which", lambda name: None)
    with pytest.raises(BackendUnavailableError, match="no NVIDIA GPU"):
        trt_mod.gpu_name()


def test_build_engine_checks_graph_and_min_size_before_tensorrt(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="min_shape"):
        build_engine(_tiny_onnx(tmp_path / "m.onnx", min_size=32), tmp_path / "m.engine")
    with pytest.raises(ExportError, match="Unique"):
        build_engine(_tiny_onnx(tmp_path / "u.onnx", op="Unique"), tmp_path / "u.engine")


def test_cache_key_changes_with_everything_an_engine_depends_on(tmp_path: Path) -> None:
    base = engine_cache_key("a" * 64, BuildConfig(), "10.3.0", "NVIDIA H100")
    assert base == engine_cache_key("a" * 64, BuildConfig(), "10.3.0", "NVIDIA H100") and len(base) == 16
    variants = [engine_cache_key("b" * 64, BuildConfig(), "10.3.0", "NVIDIA H100"),
                engine_cache_key("a" * 64, BuildConfig(fp16=True), "10.3.0", "NVIDIA H100"),
                engine_cache_key("a" * 64, BuildConfig(max_shape=(1, 3, 512, 512)), "10.3.0", "NVIDIA H100"),
                engine_cache_key("a" * 64, BuildConfig(), "10.4.0", "NVIDIA H100"),
                engine_cache_key("a" * 64, BuildConfig(), "10.3.0", "NVIDIA A100")]
    assert len({base, *variants}) == 6
    onnx_path = _tiny_onnx(tmp_path / "m.onnx")
    p = engine_path_for(onnx_path, BuildConfig(), tmp_path / "cache", "10.3.0", "NVIDIA H100")
    assert p.parent == tmp_path / "cache" and p.name.startswith("m-") and p.suffix == ".engine"


def _fake_engine(tmp_path: Path, trt: str = "10.3.0", gpu: str = "NVIDIA H100") -> tuple[Path, Path]:
    onnx_path = _tiny_onnx(tmp_path / "m.onnx")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not a real engine")
    sidecar = make_sidecar(onnx_path, BuildConfig(), trt, gpu, engine_sha256=trt_mod.sha256_of(engine))
    sidecar_path(engine).write_text(json.dumps(sidecar))
    return onnx_path, engine


def test_sidecar_records_what_the_engine_depends_on(tmp_path: Path) -> None:
    onnx_path, engine = _fake_engine(tmp_path)
    s = read_sidecar(engine)
    assert s["tensorrt_version"] == "10.3.0" and s["gpu_name"] == "NVIDIA H100" and s["precision"] == "fp32"
    assert s["onnx_sha256"] == trt_mod.sha256_of(onnx_path) and s["config"]["opt_shape"] == [1, 3, 256, 256]
    assert s["onnx_metadata"]["amsr.scale"] == "1" and s["amsr_version"]
    check_sidecar(s, "10.3.0", "NVIDIA H100", onnx_path=onnx_path, config=BuildConfig())  # no raise


@pytest.mark.parametrize("what", ["tensorrt", "gpu", "onnx", "config"])
def test_mismatched_sidecar_is_refused(what: str, tmp_path: Path) -> None:
    onnx_path, engine = _fake_engine(tmp_path)
    s = read_sidecar(engine)
    trt, gpu, config = "10.3.0", "NVIDIA H100", BuildConfig()
    if what == "tensorrt":
        trt = "10.7.0"
    elif what == "gpu":
        gpu = "NVIDIA L4"
    elif what == "onnx":
        _tiny_onnx(onnx_path, min_size=8)  # same name, new content
    else:
        config = BuildConfig(fp16=True)
    with pytest.raises(EngineMismatchError, match={"tensorrt": "TensorRT 10.3.0", "gpu": "GPU", "onnx": "sha256",
                                                    "config": "build config"}[what]):
        check_sidecar(s, trt, gpu, onnx_path=onnx_path, config=config)


def test_load_engine_refuses_mismatch_before_deserializing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _, engine = _fake_engine(tmp_path, trt="10.0.1")
    monkeypatch.setattr(trt_mod, "import_tensorrt", lambda: types.SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setattr(trt_mod, "gpu_name", lambda: "NVIDIA H100")
    with pytest.raises(EngineMismatchError, match="TensorRT 10.0.1 ≠ installed 10.3.0"):
        load_engine(engine)
    sidecar_path(engine).unlink()
    with pytest.raises(EngineMismatchError, match="no sidecar"):
        load_engine(engine)


def test_parity_tolerances_are_looser_for_fp16() -> None:
    atol32, mean32, psnr32 = trt_tolerances(fp16=False)
    atol16, mean16, psnr16 = trt_tolerances(fp16=True)
    assert atol32 < 1 / 255 < atol16 and mean32 is None and mean16 is not None and psnr32 < psnr16


# --- GPU: build and run engines ---------------------------------------------------------------------------


def _gpu_reason() -> str | None:
    try:
        import_tensorrt()
        trt_mod.gpu_name()
    except BackendUnavailableError as e:
        return f"TensorRT engines need tensorrt and an NVIDIA GPU: {e}"
    return None


needs_gpu = pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))


@pytest.fixture(scope="module")
def carn_weights(weights_dir: Path) -> Path:
    from tests.conftest import weight_file

    return weight_file(weights_dir, "carn_m.pth")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("kind, fp16", [("dense", False), ("dense", True), ("accelerated", False)])
def test_engine_matches_pytorch(kind: str, fp16: bool, carn_weights: Path, tmp_path: Path) -> None:
    from amsr.runtime.trt import TrtUpscaler
    from amsr.runtime.trt_parity import compare_engine_with_torch
    from tests.onnx_exports import carn_m_x4, exported

    onnx_path = exported(kind, carn_weights)
    config = BuildConfig(opt_shape=(1, 3, 64, 64), max_shape=(1, 3, 128, 128), fp16=fp16)
    engine = build_engine(onnx_path, tmp_path / f"{kind}.engine", config)
    assert read_sidecar(engine)["precision"] == config.precision
    model = carn_m_x4(carn_weights)
    model = model.dense() if kind == "dense" else model.accelerated()
    inputs = [np.random.default_rng(i).random((1, 3, h, w), dtype=np.float32) for i, (h, w) in
              enumerate([(64, 64), (17, 23)])]
    result = compare_engine_with_torch(model, engine, inputs, onnx_path=onnx_path)
    assert result.passed, result.summary()
    big = np.random.default_rng(9).random((1, 3, 200, 150), dtype=np.float32)
    assert TrtUpscaler(engine).upscale_tiled(big, tile=64, per_tile_mask=kind != "dense").shape == (1, 3, 800, 600)


def test_trt_upscaler_tiles_within_its_profile() -> None:
    """The tile loop (borrowed from OrtUpscaler) on a stand-in runner: every run fits the profile."""
    from amsr.core.errors import InputImageError, UnsupportedModelError
    from amsr.runtime.trt import TrtUpscaler

    seen = []

    class FakeRunner:
        is_active = False

        def infer(self, feed, copy_outputs_to_host=True):
            x = feed["lr"]
            seen.append(x.shape)
            return {"sr": x.repeat(2, axis=2).repeat(2, axis=3)}

    up = object.__new__(TrtUpscaler)
    up.sidecar = {"config": BuildConfig(min_shape=(1, 3, 16, 16), opt_shape=(1, 3, 64, 64),
                                        max_shape=(1, 3, 96, 96)).as_json()}
    up.metadata, up.scale, up.min_input_size, up.max_input_size = {"amsr.kind": "dense"}, 2, 16, 96
    up.accelerated, up.input_name, up.output_name, up._runner = False, "lr", "sr", FakeRunner()
    x = np.random.default_rng(0).random((1, 3, 150, 203), dtype=np.float32)
    with pytest.raises(InputImageError, match="profile"):
        up(x)
    y = up.upscale_tiled(x, tile=256, overlap=16)
    np.testing.assert_array_equal(y, x.repeat(2, axis=2).repeat(2, axis=3))
    assert len(seen) > 1 and all(16 <= s <= 96 for shape in seen for s in shape[2:])
    # An accelerated engine computes its masks inside: tiling it silently would threshold each tile alone.
    up.accelerated = True
    with pytest.raises(UnsupportedModelError, match="per-tile"):
        up.upscale_tiled(x, tile=64)
