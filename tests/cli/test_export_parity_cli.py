"""``amsr-export`` and ``amsr-parity`` end to end on the tiny FSRCNN checkpoint (fast to export)."""

from __future__ import annotations

import builtins
import json
import shutil
from pathlib import Path

import pytest

from amsr.cli.export import main as export_main
from amsr.cli.parity import main as parity_main

pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'amsr[onnx]')")


@pytest.fixture(scope="module")
def fsrcnn_x2(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (weights_dir / "fsrcnn_y_x2.pth").is_file():
        pytest.skip("fsrcnn_y_x2.pth not in the shared weights")
    out = tmp_path_factory.mktemp("export") / "fsrcnn_x2.onnx"
    assert export_main(["--model", "fsrcnn", "--scale", "2", "--dense", "--out", str(out)]) == 0
    return out


def _hide_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import tensorrt`` fail as on a machine without it."""
    real_import = builtins.__import__

    def no_tensorrt(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "tensorrt" or name.startswith("tensorrt."):
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorrt)


def _two_images(data_dir: Path, tmp_path: Path, scale: int) -> Path:
    d = tmp_path / "set"
    for sub in ("LR", "HR"):
        (d / sub).mkdir(parents=True)
        for name in ("img_002.png", "img_005.png"):
            shutil.copy(data_dir / "Set5" / f"x{scale}" / sub / name, d / sub / name)
    return d


def test_export_writes_identity_metadata(fsrcnn_x2: Path) -> None:
    from amsr.export.metadata import read_metadata

    meta = read_metadata(fsrcnn_x2)
    assert meta["amsr.model"] == "fsrcnn" and meta["amsr.scale"] == "2" and meta["amsr.kind"] == "dense"
    assert len(meta["amsr.weights_sha256"]) == 64
    assert [p.name for p in fsrcnn_x2.parent.iterdir()] == [fsrcnn_x2.name], "no temporary files left"


def test_parity_passes_and_writes_json(fsrcnn_x2: Path, data_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "parity.json"
    rc = parity_main(["--onnx", str(fsrcnn_x2), "--data", str(_two_images(data_dir, tmp_path, 2)), "--json", str(report)])
    assert rc == 0
    assert "PASSED" in capsys.readouterr().out
    r = json.loads(report.read_text())
    assert r["passed"] and r["max_abs_diff"] <= 1e-4 and r["psnr_diff"] <= 1e-3 and len(r["images"]) == 2


def test_parity_refuses_other_weights(fsrcnn_x2: Path, data_dir: Path, weights_dir: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    # Issue #14: the x3 file is refused by its checksum (another scale) before any comparison; a same-scale file
    # of other bytes by the recorded weights_sha256 (tests/cli/test_hardening_cli.py).
    rc = parity_main(["--onnx", str(fsrcnn_x2), "--data", str(_two_images(data_dir, tmp_path, 2)),
                      "--weights", str(weights_dir / "fsrcnn_y_x3.pth")])
    err = capsys.readouterr().err
    assert rc == 1 and "official fsrcnn x3 checkpoint" in err and "Traceback" not in err


def test_parity_on_a_corrupt_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    assert parity_main(["--onnx", str(bad), "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("amsr-parity: error:") and "not a readable ONNX model" in err


def test_engine_without_tensorrt_keeps_the_onnx(weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    if not (weights_dir / "fsrcnn_y_x2.pth").is_file():
        pytest.skip("fsrcnn_y_x2.pth not in the shared weights")
    _hide_tensorrt(monkeypatch)
    out = tmp_path / "fsrcnn.engine"
    rc = export_main(["--model", "fsrcnn", "--scale", "2", "--dense", "--no-verify", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "tensorrt" in err.lower() and "Traceback" not in err
    assert (tmp_path / "fsrcnn.onnx").is_file() and not out.exists()


def test_eval_with_onnxruntime_backend_matches_pytorch(weights_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    """``amsr-eval --backend onnxruntime``: same scores as the PyTorch path, MACs from the realised mask."""
    from amsr.cli.eval import main as eval_main
    from amsr.export.metadata import add_metadata
    from tests.onnx_exports import exported

    weights = weights_dir / "carn_m.pth"
    if not weights.is_file():
        pytest.skip("carn_m.pth not in the shared weights")
    onnx_file = tmp_path / "carn_m_x4_amsr.onnx"
    shutil.copy(exported("accelerated", weights), onnx_file)
    add_metadata(onnx_file, {"amsr.model": "carn_m", "amsr.variant": ""})
    data = _two_images(data_dir, tmp_path, 4)
    ort_json, torch_json = tmp_path / "ort.json", tmp_path / "torch.json"
    assert eval_main(["--backend", "onnxruntime", "--onnx", str(onnx_file), "--data", str(data),
                      "--weights", str(weights), "--json", str(ort_json), "--no-progress"]) == 0
    assert eval_main(["--model", "carn_m", "--scale", "4", "--data", str(data), "--weights", str(weights),
                      "--dilation", "1", "--json", str(torch_json), "--no-progress"]) == 0  # the graph's settings
    ort, ref = json.loads(ort_json.read_text()), json.loads(torch_json.read_text())
    assert ort["settings"]["backend"] == "onnxruntime"
    assert ort["amsr"]["psnr_y"] == pytest.approx(ref["amsr"]["psnr_y"], abs=1e-3)
    assert ort["amsr"]["gmacs"] == pytest.approx(ref["amsr"]["gmacs"], rel=1e-9)
    assert ort["amsr"]["density"] == pytest.approx(ref["amsr"]["density"])


def test_parity_engine_without_tensorrt_is_one_line(fsrcnn_x2: Path, data_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _hide_tensorrt(monkeypatch)
    engine = tmp_path / "fsrcnn.engine"
    engine.write_bytes(b"engine")
    rc = parity_main(["--onnx", str(fsrcnn_x2), "--trt", str(engine), "--data", str(_two_images(data_dir, tmp_path, 2))])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("amsr-parity: error:") and "Traceback" not in err


def test_export_takes_the_shipped_default_operating_point(weights_dir: Path, tmp_path: Path) -> None:
    """``--operating-point default`` exports the calibrated settings (output blend included) and records them."""
    from amsr.export.metadata import read_metadata
    from amsr.operating_point import default_operating_point

    out = tmp_path / "carn_m_default.onnx"
    assert export_main(["--model", "carn_m", "--scale", "4", "--weights", str(weights_dir / "carn_m.pth"),
                        "--operating-point", "default", "--no-verify", "--out", str(out)]) == 0
    cfg = default_operating_point("carn_m", 4)
    assert cfg is not None and json.loads(read_metadata(out)["amsr.mask_config"]) == vars(cfg)


def test_export_refuses_an_operating_point_of_another_model(weights_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    op = tmp_path / "op.json"
    op.write_text(json.dumps({"model": "pan", "scale": 4, "config": {"dilation": 2}}))
    rc = export_main(["--model", "carn_m", "--scale", "4", "--weights", str(weights_dir / "carn_m.pth"),
                      "--operating-point", str(op), "--out", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert rc == 1 and "operating point of pan x4, not carn_m x4" in err and not (tmp_path / "x.onnx").exists()


def test_parity_without_hr_checks_values_only_and_a_partial_hr_folder_is_refused(
        fsrcnn_x2: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # One pairing rule for --onnx and --trt (runtime.parity.parity_images): no HR/ → no PSNR check; an HR/
    # folder lacking a partner → one line, not a silently skipped PSNR check.
    folder = _two_images(data_dir, tmp_path, 2)
    shutil.rmtree(folder / "HR")
    assert parity_main(["--onnx", str(fsrcnn_x2), "--data", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "ΔPSNR" not in out
    (folder / "HR").mkdir()
    shutil.copy(data_dir / "Set5" / "x2" / "HR" / "img_002.png", folder / "HR" / "img_002.png")
    assert parity_main(["--onnx", str(fsrcnn_x2), "--data", str(folder)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "without a partner in HR/ or LR/: img_005.png" in err
