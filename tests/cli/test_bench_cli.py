"""amsr-bench writes its JSON contract (no timing assertions: speed is measured in benchmarks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amsr.cli.bench import main
from amsr.io.images import read_rgb8, save_png
from amsr.tools.bench import summarise_profile
from tests.conftest import weight_file


@pytest.mark.parametrize("strategy", ["tile", "auto"])
def test_bench_writes_the_json_contract(strategy: str, tmp_path: Path, data_dir: Path, weights_dir: Path) -> None:
    weights = weight_file(weights_dir, "carn_m.pth")
    lr = tmp_path / "data" / "LR"
    lr.mkdir(parents=True)
    for i, name in enumerate(("img_001.png", "img_002.png")):
        img = read_rgb8(data_dir / "Set5" / "x4" / "LR" / name)
        save_png(lr / name, img[: 20 + i, : 23])
    out = tmp_path / "bench.json"
    rc = main(["--model", "carn_m", "--scale", "4", "--weights", str(weights), "--data", str(tmp_path / "data"),
               "--backend", "pytorch", "--strategy", strategy, "--tile", "8", "--repeats", "1", "--warmup", "0",
               "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    for key in ("dense_ms", "amsr_ms", "mask_ms", "ratio", "gmacs_ratio", "threads", "images"):
        assert key in r, key
    assert r["images"] == 2 and len(r["per_image"]) == 2 and r["threads"] == 2
    assert r["ratio"] == pytest.approx(r["amsr_ms"] / r["dense_ms"], rel=1e-3)
    for row in r["per_image"]:
        assert {"image", "dense_ms", "amsr_ms", "mask_ms", "gmacs_ratio", "path", "tile_fraction"} <= set(row)
        if row["path"] == "dense":
            assert row["gmacs_ratio"] == 1.0
        low, high = row["ratio_quartiles"]
        assert low <= row["ratio_paired"] <= high  # one round: all three are that round's ratio
        assert row["ratio_paired"] == pytest.approx(row["amsr_ms"] / row["dense_ms"], rel=1e-3)


def test_profile_summary_groups_stages(tmp_path: Path) -> None:
    events = [
        {"cat": "Node", "name": "mask/Conv_1_kernel_time", "dur": 2000, "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "sparse_conv_3/b1.b1.body.0/Gather_kernel_time", "dur": 4000,
         "args": {"op_name": "Gather"}},
        {"cat": "Node", "name": "node_Conv_7_kernel_time", "dur": 6000, "args": {"op_name": "Conv"}},
        {"cat": "Session", "name": "model_run", "dur": 99999},
    ]
    p = tmp_path / "prof.json"
    p.write_text(json.dumps(events))
    s = summarise_profile(p, runs=2)
    assert s["by_stage_ms"] == {"network": 3.0, "sparse_conv": 2.0, "mask": 1.0}
    assert s["by_op_ms"] == {"Conv": 4.0, "Gather": 2.0}
    assert s["sparse_conv_by_op_ms"] == {"Gather": 2.0}


def _small_lr_folder(tmp_path: Path, data_dir: Path) -> Path:
    lr = tmp_path / "data" / "LR"
    lr.mkdir(parents=True)
    save_png(lr / "img_001.png", read_rgb8(data_dir / "Set5" / "x4" / "LR" / "img_001.png")[:24, :20])
    return tmp_path / "data"


def test_bench_runs_the_shipped_default_operating_point(tmp_path: Path, data_dir: Path, weights_dir: Path) -> None:
    from amsr.operating_point import default_operating_point

    weights = weight_file(weights_dir, "carn_m.pth")
    out = tmp_path / "bench.json"
    rc = main(["--model", "carn_m", "--scale", "4", "--weights", str(weights), "--data",
               str(_small_lr_folder(tmp_path, data_dir)), "--backend", "pytorch", "--strategy", "pixel",
               "--operating-point", "default", "--repeats", "1", "--warmup", "0", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    cfg = default_operating_point("carn_m", 4)
    assert cfg is not None and r["mask_config"] == vars(cfg)
    assert r["operating_point"]["source"] == "shipped default" and r["device"].startswith("CPU")


@pytest.mark.parametrize("extra, message", [
    (["--device", "cuda", "--backend", "onnxruntime"], "needs --backend pytorch"),
    (["--device", "tpu", "--backend", "pytorch"], "unknown device"),
    (["--operating-point", "default:0.01", "--backend", "pytorch"], "within 0.01 dB"),
])
def test_bench_refuses_bad_device_or_operating_point_in_one_line(extra: list[str], message: str, tmp_path: Path,
                                                                  data_dir: Path, weights_dir: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    weights = weight_file(weights_dir, "carn_m.pth")
    rc = main(["--model", "carn_m", "--scale", "4", "--weights", str(weights), "--data",
               str(_small_lr_folder(tmp_path, data_dir)), *extra])
    err = capsys.readouterr().err
    assert rc != 0 and message in err and "Traceback" not in err


def test_bench_cuda_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path,
                                                   weights_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = main(["--model", "carn_m", "--scale", "4", "--weights", str(weight_file(weights_dir, "carn_m.pth")),
               "--data", str(_small_lr_folder(tmp_path, data_dir)), "--backend", "pytorch", "--device", "cuda"])
    assert rc != 0 and "sees no CUDA GPU" in capsys.readouterr().err


def test_dense_tail_is_reported_and_counted_in_full(tmp_path: Path, data_dir: Path, weights_dir: Path) -> None:
    weights = weight_file(weights_dir, "carn_m.pth")
    data = _small_lr_folder(tmp_path, data_dir)
    reports = {}
    for flag in ([], ["--dense-tail"]):
        out = tmp_path / f"bench{len(flag)}.json"
        assert main(["--model", "carn_m", "--scale", "4", "--weights", str(weights), "--data", str(data),
                     "--backend", "pytorch", "--strategy", "pixel", "--operating-point", "default", "--repeats", "1",
                     "--warmup", "0", "--json", str(out), *flag]) == 0
        reports[bool(flag)] = json.loads(out.read_text())
    assert reports[False]["sparse_tail"] is True and reports[True]["sparse_tail"] is False
    assert reports[True]["gmacs_ratio"] > reports[False]["gmacs_ratio"]


def test_auto_break_even_per_model_and_device() -> None:
    from amsr.tools.bench import default_break_even
    from amsr.zoo import get_architecture

    def default_break_even_of(model: str, device: str) -> float:
        return default_break_even(get_architecture(model).rules, device)

    assert default_break_even_of("carn_m", "cpu") < 0 and default_break_even_of("imdn", "cpu") < 0
    assert default_break_even_of("pan", "cpu") < 0  # measured: its tiles lost on every Photos2K image
    assert default_break_even_of("fsrcnn", "cpu") == 0.5  # not measured on onnxruntime CPU
    assert all(default_break_even_of(m, "cuda") < 0 for m in ("carn_m", "pan", "imdn"))  # dense on a GPU


def test_bench_on_a_missing_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--model", "carn_m", "--scale", "4", "--data", str(tmp_path / "nowhere"), "--backend", "pytorch"])
    err = capsys.readouterr().err
    assert rc == 1 and "nowhere: no such folder" in err and "Traceback" not in err


def test_bench_onnxruntime_backend_writes_the_contract(tmp_path: Path, data_dir: Path, weights_dir: Path) -> None:
    """The onnxruntime path end to end: export (cached under --cache), mask session, per-node profile."""
    pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install 'amsr[onnx]')")
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (pip install 'amsr[onnx]')")
    weights = weight_file(weights_dir, "carn_m.pth")
    out = tmp_path / "bench.json"
    assert main(["--model", "carn_m", "--scale", "4", "--weights", str(weights), "--data",
                 str(_small_lr_folder(tmp_path, data_dir)), "--backend", "onnxruntime", "--strategy", "pixel",
                 "--repeats", "1", "--warmup", "0", "--cache", str(tmp_path / "cache"), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["backend"] == "onnxruntime" and r["path"] == "pixel" and r["images"] == 1
    assert r["ratio"] == pytest.approx(r["amsr_ms"] / r["dense_ms"], rel=1e-3)
    assert r["profile"]["amsr"]["by_stage_ms"].keys() >= {"mask", "sparse_conv"}
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == 2
