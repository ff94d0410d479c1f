"""Issue #14 (checkpoint / cache / ONNX / output-path half), library level: the export cache's one key scheme and
its content-verified sidecars, NaN/Inf and wrong-scale checkpoints, foreign ONNX files, output-path checks,
temporary-file cleanup and the TensorRT engine's own checksum. CLI cases: tests/cli/test_hardening_cli.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from amsr.core.errors import CheckpointError
from amsr.core.files import OutputPathError, atomic_path, check_writable, check_writable_dir, save_bytes
from tests.conftest import weight_file

# --- tiny ONNX graphs (onnx.helper, no zoo export) -------------------------------------------------------------


def tiny_graph(path: Path, kind: str = "ok", meta: dict[str, str] | None = None) -> Path:
    """``ok``: lr → Identity → sr (N×3×H×W); ``two_inputs``: sr = a + b; ``scalar``: sr = mean of everything."""
    import onnx
    from onnx import TensorProto, helper

    img = ["N", 3, "H", "W"]
    if kind == "two_inputs":
        nodes = [helper.make_node("Add", ["a", "b"], ["sr"])]
        inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, img) for n in ("a", "b")]
        out = helper.make_tensor_value_info("sr", TensorProto.FLOAT, img)
    elif kind == "scalar":
        nodes = [helper.make_node("ReduceMean", ["lr"], ["sr"], keepdims=0)]
        inputs = [helper.make_tensor_value_info("lr", TensorProto.FLOAT, img)]
        out = helper.make_tensor_value_info("sr", TensorProto.FLOAT, [])
    else:
        nodes = [helper.make_node("Identity", ["lr"], ["sr"])]
        inputs = [helper.make_tensor_value_info("lr", TensorProto.FLOAT, img)]
        out = helper.make_tensor_value_info("sr", TensorProto.FLOAT, img)
    model = helper.make_model(helper.make_graph(nodes, "t", inputs, [out]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime ≥ 1.15 reads
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def bad_onnx_files(folder: Path) -> dict[str, Path]:
    """Every kind of file amsr must refuse in one line where an exported graph is expected."""
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.onnx"
    empty.write_bytes(b"")
    noise = folder / "noise.onnx"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    return {"empty": empty, "random bytes": noise,
            "two inputs": tiny_graph(folder / "two.onnx", "two_inputs"),
            "scalar output": tiny_graph(folder / "scalar.onnx", "scalar"),
            "amsr.scale='x'": tiny_graph(folder / "meta.onnx", meta={"amsr.scale": "x"}),
            "amsr.min_input_size='-3'": tiny_graph(folder / "minsize.onnx", meta={"amsr.min_input_size": "-3"})}


BAD_REASON = {"empty": "holds no graph|cannot load", "random bytes": "not a readable ONNX model|cannot load",
              "two inputs": "2 inputs", "scalar output": "scalar", "amsr.scale='x'": "amsr.scale = 'x'",
              "amsr.min_input_size='-3'": "amsr.min_input_size = -3"}


# --- 6. corrupt / foreign ONNX files -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BAD_REASON))
def test_ort_upscaler_refuses_foreign_graphs_in_one_error(kind: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from amsr.runtime.onnxrt import OrtUpscaler
    from amsr.runtime.upscaler import Upscaler

    path = bad_onnx_files(tmp_path)[kind]
    for open_it in (OrtUpscaler, Upscaler.from_onnx):
        with pytest.raises(CheckpointError, match=BAD_REASON[kind]) as e:
            open_it(path)
        assert "\n" not in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize("kind", list(BAD_REASON))
def test_metadata_reader_refuses_foreign_graphs(kind: str, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from amsr.export.metadata import read_metadata

    with pytest.raises(CheckpointError, match=BAD_REASON[kind]):
        read_metadata(bad_onnx_files(tmp_path)[kind])


def test_a_well_formed_tiny_graph_still_loads(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from amsr.export.metadata import int_field, mask_config_field, read_metadata
    from amsr.runtime.onnxrt import OrtUpscaler

    path = tiny_graph(tmp_path / "ok.onnx", meta={"amsr.scale": "1", "amsr.min_input_size": "4"})
    up = OrtUpscaler(path)
    assert up.scale == 1 and up.min_input_size == 4 and up.output_name == "sr"
    x = np.random.default_rng(1).random((1, 3, 5, 6), dtype=np.float32)
    assert np.array_equal(up(x), x)
    meta = read_metadata(path)
    assert int_field(meta, "amsr.scale", "f") == 1 and mask_config_field(meta, "f") is None
    with pytest.raises(CheckpointError, match="invalid mask settings"):
        mask_config_field({"amsr.mask_config": '{"dilation": -1}'}, "f")
    with pytest.raises(CheckpointError, match="not a JSON object"):
        mask_config_field({"amsr.mask_config": "[1]"}, "f")


def test_missing_onnx_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from amsr.runtime.onnxrt import OrtUpscaler

    with pytest.raises(CheckpointError, match="not found"):
        OrtUpscaler(tmp_path / "nowhere.onnx")


# --- 4. NaN/Inf checkpoints ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_checkpoint_is_refused_naming_the_first_bad_tensor(bad: float, tmp_path: Path) -> None:
    from amsr.core.checkpoint import load_checkpoint

    sd = {"head.weight": torch.ones(2, 2), "body.0.weight": torch.ones(3), "body.1.weight": torch.ones(4),
          "steps": torch.tensor([7])}
    sd["body.0.weight"][1] = bad
    sd["body.1.weight"][0] = bad
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"'body\.0\.weight' holds 1 NaN/Inf value\(s\) of 3") as e:
        load_checkpoint(path)
    assert "body.1" not in str(e.value)


def test_non_finite_real_checkpoint_is_refused_by_load_model(weights_dir: Path, tmp_path: Path) -> None:
    from amsr.models import load_model

    sd = torch.load(weight_file(weights_dir, "fsrcnn_y_x2.pth"), map_location="cpu", weights_only=True)
    key = "mid_part.2.weight"
    sd[key].view(-1)[5] = float("nan")
    path = tmp_path / "fsrcnn_nan.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=key):
        load_model("fsrcnn", 2, weights=path)


# --- 5. a checkpoint of another scale ------------------------------------------------------------------------------


@pytest.mark.parametrize("trained, asked", [(2, 4), (2, 3), (3, 2), (4, 2), (4, 3), (3, 4)])
def test_fsrcnn_file_of_another_scale_is_refused(trained: int, asked: int, weights_dir: Path) -> None:
    from amsr.models import load_model

    path = weight_file(weights_dir, f"fsrcnn_y_x{trained}.pth")
    with pytest.raises(CheckpointError, match=f"official fsrcnn x{trained} checkpoint.*not x{asked}"):
        load_model("fsrcnn", asked, weights=path)  # by its known sha256


@pytest.mark.parametrize("trained, asked", [(2, 4), (3, 2), (4, 3)])
def test_fsrcnn_probe_tells_the_scale_without_the_checksum(trained: int, asked: int, weights_dir: Path) -> None:
    """A file whose sha256 is not known (a fine-tune, a re-save) is caught by the flat-image probe."""
    from amsr.core.checkpoint import load_checkpoint
    from amsr.zoo import get_architecture

    arch = get_architecture("fsrcnn")
    sd = load_checkpoint(weight_file(weights_dir, f"fsrcnn_y_x{trained}.pth"))
    with pytest.raises(CheckpointError, match=f"upscales x{trained}, not x{asked}"):
        arch.build(sd, asked)
    arch.build(sd, trained)  # its own scale passes


def test_right_scale_and_multi_scale_files_still_load(weights_dir: Path) -> None:
    from amsr.models import load_model

    for s in (2, 3, 4):
        assert load_model("fsrcnn", s, weights=weight_file(weights_dir, f"fsrcnn_y_x{s}.pth")).scale == s
    carn_m = weight_file(weights_dir, "carn_m.pth")  # one file, one sha256, every scale
    assert load_model("carn_m", 2, weights=carn_m).scale == 2


def test_pan_x2_file_at_x3_is_refused(weights_dir: Path) -> None:
    """PAN x2 and x3 files have identical shapes: only the checksum tells them apart."""
    from amsr.models import load_model

    with pytest.raises(CheckpointError, match="official pan x2 checkpoint"):
        load_model("pan", 3, weights=weight_file(weights_dir, "pan_x2.pth"))


# --- 7. output paths checked before the work -----------------------------------------------------------------------


def test_check_writable_refuses_directories_and_paths_below_files(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    with pytest.raises(OutputPathError, match="is a directory"):
        check_writable(tmp_path / "a_dir", "--json")
    with pytest.raises(OutputPathError, match="a_file is a file, not a directory"):
        check_writable(tmp_path / "a_file" / "sub" / "r.json", "--json")
    with pytest.raises(OutputPathError, match="is a file, not a directory"):
        check_writable_dir(tmp_path / "a_file", "--out")
    assert check_writable(tmp_path / "new" / "deeper" / "r.json") == tmp_path / "new" / "deeper" / "r.json"
    assert check_writable_dir(tmp_path / "a_dir") == tmp_path / "a_dir"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dir", "a_file"], "checks create nothing"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into a chmod 0555 folder anyway: covered by the path-below-a-file cases")
def test_check_writable_refuses_a_read_only_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputPathError, match="cannot write in"):
            check_writable(ro / "r.json", "--json")
    finally:
        ro.chmod(0o755)


# --- 8. temporary files: removed on exceptions and SIGTERM, swept when stale ----------------------------------------


def test_atomic_write_removes_its_temporary_on_system_exit(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        with atomic_path(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"half")
            raise SystemExit(143)
    assert list(tmp_path.iterdir()) == []


def test_stale_part_files_are_swept_fresh_ones_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import amsr.core.files

    monkeypatch.setattr(amsr.core.files, "_swept", set())
    stale, fresh = tmp_path / ".r.json.dead0001.part", tmp_path / ".r.json.live0002.part"
    stale.write_bytes(b"left by a SIGKILL")
    fresh.write_bytes(b"another writer, now")
    old = time.time() - amsr.core.files.STALE_PART_SECONDS - 60
    os.utime(stale, (old, old))
    save_bytes(tmp_path / "r.json", b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name, "r.json"]


def test_sigterm_in_a_cli_leaves_no_part_file(tmp_path: Path) -> None:
    """A CLI killed with SIGTERM mid-write exits 143 and removes its temporary (``exit_on_sigterm``)."""
    script = textwrap.dedent(f"""
        import argparse, sys, time
        from pathlib import Path
        from amsr.cli.common import run_main
        from amsr.core.files import atomic_path

        def body(args):
            with atomic_path(Path({str(tmp_path)!r}) / "out.bin") as tmp:
                tmp.write_bytes(b"half")
                print("writing", flush=True)
                time.sleep(60)
            return 0

        sys.exit(run_main("amsr-test", body, argparse.ArgumentParser(), []))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        assert any(p.suffix == ".part" for p in tmp_path.iterdir())
        proc.terminate()
        assert proc.wait(timeout=30) == 143
    finally:
        proc.kill()
    assert list(tmp_path.iterdir()) == [], "the .part file must be removed"


# --- 8. a TensorRT engine swapped under its sidecar ------------------------------------------------------------------


def test_engine_swapped_under_an_unchanged_sidecar_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnx")
    import amsr.runtime.trt as trt_mod
    from amsr.core.errors import BackendUnavailableError
    from amsr.runtime.trt import BuildConfig, EngineMismatchError, load_engine, make_sidecar, sidecar_path

    onnx_path = tiny_graph(tmp_path / "m.onnx", meta={"amsr.scale": "1"})
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"fake engine bytes")
    sidecar = make_sidecar(onnx_path, BuildConfig(), "10.3.0", "NVIDIA H100",
                           engine_sha256=trt_mod.sha256_of(engine))
    sidecar_path(engine).write_text(json.dumps(sidecar))

    def no_tensorrt() -> None:
        raise BackendUnavailableError("TensorRT is not installed")

    monkeypatch.setattr(trt_mod, "import_tensorrt", no_tensorrt)
    with pytest.raises(BackendUnavailableError, match="not installed"):  # intact: passes the file check
        load_engine(engine)
    engine.write_bytes(b"another engine, same sidecar")
    with pytest.raises(EngineMismatchError, match="sha256 differs"):
        load_engine(engine)
    del sidecar["engine_sha256"]
    sidecar_path(engine).write_text(json.dumps(sidecar))
    with pytest.raises(EngineMismatchError, match="records no engine sha256"):
        load_engine(engine)


# --- 3. one cache key for the bench and the upscaler; sidecar-verified entries --------------------------------------


def _fake_export(calls: list[Path]):  # type: ignore[no-untyped-def]
    def export_onnx(module: object, out: Path, *a: object, **k: object) -> Path:
        calls.append(Path(out))
        save_bytes(out, b"graph for " + Path(out).name.encode())  # distinct bytes per entry
        return Path(out)
    return export_onnx


def test_bench_cache_key_names_weights_variant_settings_and_tile(weights_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import amsr.export.onnx_export
    from amsr.masking.mask import MaskConfig
    from amsr.models import load_model
    from amsr.tools.bench import build_variants, default_cache, export_variants

    calls: list[Path] = []
    monkeypatch.setattr(amsr.export.onnx_export, "export_onnx", _fake_export(calls))
    cache = tmp_path / "cache"
    x2 = load_model("fsrcnn", 2, weights=weight_file(weights_dir, "fsrcnn_y_x2.pth"))
    cfg = MaskConfig(dilation=1, output_dilation=1)
    pixel = export_variants(x2, cfg, 8, cache, build_variants(x2, cfg, "pixel", 8))
    tile8 = export_variants(x2, cfg, 8, cache, build_variants(x2, cfg, "tile", 8))
    tile16 = export_variants(x2, cfg, 16, cache, build_variants(x2, cfg, "tile", 16))
    assert len(calls) == 4  # dense once, then pixel, tile 8 and tile 16: three different graphs
    assert len({pixel["amsr"], tile8["amsr"], tile16["amsr"]}) == 3 and pixel["dense"] == tile8["dense"]
    assert "-tile8_" in tile8["amsr"].name and tile8["tile"] == tile8["amsr"]

    # The same settings with another checkpoint (an x2 file fine-tuned in place: same scale, new bytes).
    sd = torch.load(x2.weights, map_location="cpu", weights_only=True)
    sd["last_part.bias"] = sd["last_part.bias"] + 1e-3
    other = tmp_path / "fsrcnn_finetuned_x2.pth"
    torch.save(sd, other)
    tuned = load_model("fsrcnn", 2, weights=other)
    again = export_variants(tuned, cfg, 8, cache, build_variants(tuned, cfg, "pixel", 8))
    assert again["dense"] != pixel["dense"] and again["amsr"] != pixel["amsr"] and len(calls) == 6

    # The upscaler's cache uses the same names for the same graphs.
    from amsr.runtime.upscaler import export_cache_path

    assert export_cache_path("fsrcnn", 2, weights=x2.weights, accelerated=False, cache_dir=cache).name \
        == pixel["dense"].name
    assert export_cache_path("fsrcnn", 2, weights=x2.weights, mask=cfg, cache_dir=cache).name == pixel["amsr"].name

    monkeypatch.setenv("AMSR_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert default_cache() == tmp_path / "elsewhere" / "bench"


def test_bench_cache_reexports_a_damaged_entry(weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    import amsr.export.onnx_export
    from amsr.export.cache_key import sidecar_path
    from amsr.masking.mask import MaskConfig
    from amsr.models import load_model
    from amsr.tools.bench import build_variants, export_variants

    calls: list[Path] = []
    monkeypatch.setattr(amsr.export.onnx_export, "export_onnx", _fake_export(calls))
    m = load_model("fsrcnn", 2, weights=weight_file(weights_dir, "fsrcnn_y_x2.pth"))
    cfg = MaskConfig(dilation=1)
    v = build_variants(m, cfg, "pixel", 8)
    files = export_variants(m, cfg, 8, tmp_path, v)
    good = files["amsr"].read_bytes()
    assert len(calls) == 2 and export_variants(m, cfg, 8, tmp_path, v) == files and len(calls) == 2

    for damage in ("truncate", "swap", "no sidecar", "corrupt sidecar"):
        if damage == "truncate":
            files["amsr"].write_bytes(good[:5])
        elif damage == "swap":
            files["amsr"].write_bytes(files["dense"].read_bytes()[: len(good)].ljust(len(good), b"x"))
        elif damage == "no sidecar":
            sidecar_path(files["amsr"]).unlink()
        else:
            sidecar_path(files["amsr"]).write_text("{not json")
        caplog.clear()
        with caplog.at_level("WARNING", logger="amsr.export.cache_key"):
            export_variants(m, cfg, 8, tmp_path, v)
        assert files["amsr"].read_bytes() == good, damage
        assert [r.message for r in caplog.records if "exporting it again" in r.message], damage
    assert len(calls) == 6


def test_truncated_cached_upscaler_export_is_rebuilt_and_correct(fsrcnn_x2_onnx: Path, weights_dir: Path,
                                                                  tmp_path: Path) -> None:
    """The reproduction of issue #14: a truncated cached .onnx made every later run fail with a traceback."""
    import shutil

    from amsr.export.cache_key import sidecar_path
    from amsr.runtime.upscaler import Upscaler

    w = weight_file(weights_dir, "fsrcnn_y_x2.pth")
    cache = tmp_path / "cache"
    cache.mkdir()
    for p in (fsrcnn_x2_onnx, sidecar_path(fsrcnn_x2_onnx)):
        shutil.copy(p, cache / p.name)
    entry = cache / fsrcnn_x2_onnx.name
    good = entry.read_bytes()
    entry.write_bytes(good[: len(good) // 2])
    up = Upscaler.from_model("fsrcnn", 2, accelerated=False, weights=w, cache_dir=cache, threads=1)
    assert up.onnx_path == entry and entry.stat().st_size > len(good) // 2
    img = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    ref = Upscaler.from_onnx(fsrcnn_x2_onnx, threads=1)
    assert np.array_equal(up(img), ref(img))


def test_read_only_cache_is_refused_before_the_model_loads(weights_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import amsr.models
    from amsr.runtime.upscaler import exported_model_path

    (tmp_path / "a_file").write_text("x")
    monkeypatch.setenv("AMSR_CACHE_DIR", str(tmp_path / "a_file" / "cache"))

    def no_load(*a: object, **k: object) -> None:
        raise AssertionError("the model was loaded before the cache folder was checked")

    monkeypatch.setattr(amsr.models, "load_model", no_load)
    with pytest.raises(OutputPathError, match="export cache"):
        exported_model_path("fsrcnn", 2, accelerated=False, weights=weight_file(weights_dir, "fsrcnn_y_x2.pth"))
