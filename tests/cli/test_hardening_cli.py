"""Issue #14 at the command line: every bad checkpoint, foreign ONNX file and unwritable output is one
``<prog>: error:`` line and exit 1, found before the expensive work (the model is never loaded where the
output is unwritable). Tests run as root here, where a chmod 0555 folder stays writable: unwritable paths are
built as a path below a regular file, or an existing directory where a file is expected."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import weight_file
from tests.test_hardening_files import BAD_REASON, bad_onnx_files, tiny_graph


def _one_error_line(capsys: pytest.CaptureFixture[str], prog: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture()
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a CLI loads a model: output checks must come first."""
    import amsr.cli.bench
    import amsr.cli.eval
    import amsr.cli.export
    import amsr.models

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("the model was loaded before the outputs were checked")

    for module in (amsr.cli.export, amsr.cli.eval, amsr.cli.bench, amsr.models):
        monkeypatch.setattr(module, "load_model", refuse)


@pytest.fixture()
def blocked(tmp_path: Path) -> dict[str, Path]:
    """``dir``: an existing directory; ``under_file``: a path below a regular file (unwritable even for root)."""
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file").write_text("x")
    return {"dir": tmp_path / "a_dir", "under_file": tmp_path / "a_file" / "sub"}


def _two_images(data_dir: Path, tmp_path: Path, scale: int) -> Path:
    d = tmp_path / f"set_x{scale}"
    for sub in ("LR", "HR"):
        (d / sub).mkdir(parents=True)
        for name in ("img_002.png", "img_005.png"):
            shutil.copy(data_dir / "Set5" / f"x{scale}" / sub / name, d / sub / name)
    return d


# --- 7. outputs checked right after parsing ----------------------------------------------------------------------


@pytest.mark.parametrize("where, reason", [("dir", "is a directory"), ("under_file", "is a file, not a directory"),
                                           ("txt", "give a .onnx file")])
def test_export_out_is_checked_before_loading(where: str, reason: str, blocked: dict[str, Path], tmp_path: Path,
                                              no_model_load: None, capsys: pytest.CaptureFixture[str]) -> None:
    from amsr.cli.export import main

    out = {"dir": blocked["dir"], "under_file": blocked["under_file"] / "m.onnx", "txt": tmp_path / "m.txt"}[where]
    assert main(["--model", "fsrcnn", "--scale", "2", "--dense", "--out", str(out)]) == 1
    assert reason in _one_error_line(capsys, "amsr-export")


def test_export_triton_repo_on_a_file_is_refused(blocked: dict[str, Path], tmp_path: Path, no_model_load: None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from amsr.cli.export import main

    rc = main(["--model", "fsrcnn", "--scale", "2", "--dense", "--out", str(tmp_path / "m.plan"),
               "--triton-repo", str(tmp_path / "a_file")])
    assert rc == 1 and "--triton-repo" in _one_error_line(capsys, "amsr-export")


@pytest.mark.parametrize("where", ["dir", "under_file"])
def test_eval_json_is_checked_before_evaluating(where: str, blocked: dict[str, Path], tmp_path: Path,
                                                no_model_load: None, capsys: pytest.CaptureFixture[str]) -> None:
    from amsr.cli.eval import main

    out = blocked["dir"] if where == "dir" else blocked["under_file"] / "r.json"
    rc = main(["--model", "fsrcnn", "--scale", "2", "--dilation", "1", "--output-dilation", "1",
               "--data", str(tmp_path / "no_data_needed"), "--json", str(out), "--no-progress"])
    assert rc == 1 and "--json" in _one_error_line(capsys, "amsr-eval")


@pytest.mark.parametrize("where", ["dir", "under_file"])
def test_parity_json_is_checked_before_comparing(where: str, blocked: dict[str, Path], tmp_path: Path,
                                                 no_model_load: None, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnx")
    from amsr.cli.parity import main

    graph = tiny_graph(tmp_path / "g.onnx", meta={"amsr.model": "fsrcnn", "amsr.scale": "2"})
    out = blocked["dir"] if where == "dir" else blocked["under_file"] / "r.json"
    assert main(["--onnx", str(graph), "--data", str(tmp_path), "--json", str(out)]) == 1
    assert "--json" in _one_error_line(capsys, "amsr-parity")


def test_bench_json_and_read_only_cache_are_checked_first(blocked: dict[str, Path], tmp_path: Path,
                                                          no_model_load: None, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from amsr.cli.bench import main

    base = ["--model", "fsrcnn", "--scale", "2", "--dilation", "1", "--output-dilation", "1", "--data", str(tmp_path)]
    assert main([*base, "--backend", "pytorch", "--json", str(blocked["dir"])]) == 1
    assert "--json" in _one_error_line(capsys, "amsr-bench")
    monkeypatch.setenv("AMSR_CACHE_DIR", str(blocked["under_file"]))
    assert main([*base, "--backend", "onnxruntime"]) == 1
    assert "export cache ($AMSR_CACHE_DIR)" in _one_error_line(capsys, "amsr-bench")


def test_upscale_out_on_an_existing_file_is_refused_before_any_image(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    import amsr.runtime.upscaler
    from amsr.cli.upscale import main
    from amsr.io.user_images import write_png

    write_png(tmp_path / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    (tmp_path / "out.png").write_bytes(b"an existing file")

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("a model was opened before --out was checked")

    monkeypatch.setattr(amsr.runtime.upscaler.Upscaler, "from_options", refuse)
    graph = tiny_graph(tmp_path / "g.onnx", meta={"amsr.scale": "1"})
    rc = main([str(tmp_path / "a.png"), "--out", str(tmp_path / "out.png"), "--onnx", str(graph), "--no-progress"])
    assert rc == 1 and "is a file, not a directory" in _one_error_line(capsys, "amsr-upscale")


# --- 6. corrupt / foreign ONNX files -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BAD_REASON))
def test_upscale_refuses_foreign_onnx_in_one_line(kind: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    import re

    from amsr.cli.upscale import main
    from amsr.io.user_images import write_png

    write_png(tmp_path / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    onnx_file = bad_onnx_files(tmp_path / "bad")[kind]
    rc = main([str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--onnx", str(onnx_file), "--no-progress"])
    assert rc == 1 and re.search(BAD_REASON[kind], _one_error_line(capsys, "amsr-upscale"))


@pytest.mark.parametrize("with_model", [False, True], ids=["from-metadata", "--model/--scale"])
@pytest.mark.parametrize("kind", list(BAD_REASON))
def test_parity_refuses_foreign_onnx_in_one_line(kind: str, with_model: bool, tmp_path: Path, no_model_load: None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnx")
    import re

    from amsr.cli.parity import main

    onnx_file = bad_onnx_files(tmp_path / "bad")[kind]
    extra = ["--model", "fsrcnn", "--scale", "2"] if with_model else []
    assert main(["--onnx", str(onnx_file), "--data", str(tmp_path), *extra]) == 1
    assert re.search(BAD_REASON[kind], _one_error_line(capsys, "amsr-parity"))


def test_eval_refuses_non_numeric_scale_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnx")
    from amsr.cli.eval import main

    (tmp_path / "HR").mkdir()
    (tmp_path / "LR").mkdir()
    from amsr.io.user_images import write_png

    for sub in ("HR", "LR"):
        write_png(tmp_path / sub / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    graph = tiny_graph(tmp_path / "g.onnx", meta={"amsr.model": "fsrcnn", "amsr.scale": "x",
                                                  "amsr.kind": "accelerated"})
    assert main(["--backend", "onnxruntime", "--onnx", str(graph), "--data", str(tmp_path), "--no-progress"]) == 1
    assert "amsr.scale = 'x' is not an integer" in _one_error_line(capsys, "amsr-eval")


# --- 7 (part). parity on data of the wrong scale ---------------------------------------------------------------------


def test_parity_on_data_of_another_scale_is_refused_before_running(data_dir: Path, tmp_path: Path,
                                                                    no_model_load: None,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnx")
    from amsr.cli.parity import main

    graph = tiny_graph(tmp_path / "g.onnx", meta={"amsr.model": "fsrcnn", "amsr.scale": "2", "amsr.kind": "dense"})
    assert main(["--onnx", str(graph), "--data", str(_two_images(data_dir, tmp_path, 4))]) == 1
    assert "not x2" in _one_error_line(capsys, "amsr-parity")


# --- 8 (part). parity compares the recorded checkpoint sha256 -------------------------------------------------------


def test_parity_refuses_a_checkpoint_other_than_the_recorded_one(weights_dir: Path, data_dir: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnx")
    from amsr.cli.parity import main
    from amsr.weights import sha256_of

    x2 = weight_file(weights_dir, "fsrcnn_y_x2.pth")
    sd = torch.load(x2, map_location="cpu", weights_only=True)
    sd["last_part.bias"] = sd["last_part.bias"] + 1e-3  # same scale and shapes, other bytes
    tuned = tmp_path / "fsrcnn_tuned_x2.pth"
    torch.save(sd, tuned)
    meta = {"amsr.model": "fsrcnn", "amsr.scale": "2", "amsr.kind": "dense", "amsr.weights_sha256": sha256_of(x2)}
    graph = tiny_graph(tmp_path / "g.onnx", meta=meta)
    data = _two_images(data_dir, tmp_path, 2)
    assert main(["--onnx", str(graph), "--data", str(data), "--weights", str(tuned)]) == 1
    line = _one_error_line(capsys, "amsr-parity")
    assert "is not the checkpoint g.onnx was exported from" in line and sha256_of(x2)[:12] in line


# --- 4 and 5. bad checkpoints through amsr-eval ---------------------------------------------------------------------


def _eval(weights: Path, scale: int, data: Path) -> Callable[[], int]:
    from amsr.cli.eval import main

    return lambda: main(["--model", "fsrcnn", "--scale", str(scale), "--weights", str(weights), "--dilation", "1",
                         "--output-dilation", "1", "--data", str(data), "--no-progress"])


def test_eval_refuses_a_nan_checkpoint(weights_dir: Path, data_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    sd = torch.load(weight_file(weights_dir, "fsrcnn_y_x2.pth"), map_location="cpu", weights_only=True)
    sd["first_part.0.weight"].view(-1)[0] = float("nan")
    bad = tmp_path / "nan.pth"
    torch.save(sd, bad)
    assert _eval(bad, 2, _two_images(data_dir, tmp_path, 2))() == 1
    assert "'first_part.0.weight' holds 1 NaN/Inf" in _one_error_line(capsys, "amsr-eval")


def test_eval_refuses_an_x2_fsrcnn_file_at_scale_4(weights_dir: Path, data_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's reproduction: 10.8 dB and exit 0 before."""
    assert _eval(weight_file(weights_dir, "fsrcnn_y_x2.pth"), 4, _two_images(data_dir, tmp_path, 4))() == 1
    assert "official fsrcnn x2 checkpoint" in _one_error_line(capsys, "amsr-eval")


def test_upscale_model_with_an_unwritable_cache_is_one_line(weights_dir: Path, blocked: dict[str, Path],
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            no_model_load: None,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Read-only ``$AMSR_CACHE_DIR`` (here: below a file): refused before the model is loaded and exported."""
    from amsr.cli.upscale import main
    from amsr.io.user_images import write_png

    write_png(tmp_path / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    monkeypatch.setenv("AMSR_CACHE_DIR", str(blocked["under_file"]))
    rc = main([str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--model", "fsrcnn", "--scale", "2",
               "--weights", str(weight_file(weights_dir, "fsrcnn_y_x2.pth")), "--dense", "--no-progress"])
    assert rc == 1 and "export cache" in _one_error_line(capsys, "amsr-upscale")


@pytest.mark.parametrize("prog", ["eval", "bench", "upscale"])
def test_a_scale_the_model_lacks_is_named_as_such(prog: str, tmp_path: Path, no_model_load: None,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Without mask options the tools look up the shipped default; for carn_m x5 they said "no calibrated
    operating point for carn_m x5 … nothing to compare" instead of the scales the model has."""
    import importlib

    from PIL import Image

    main = importlib.import_module(f"amsr.cli.{prog}").main
    for sub, side in (("LR", 20), ("HR", 100)):
        (tmp_path / sub).mkdir()
        Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(tmp_path / sub / "in.png")
    where = ["--out", str(tmp_path / "o"), str(tmp_path / "LR" / "in.png")] if prog == "upscale" else \
        ["--data", str(tmp_path), "--json", str(tmp_path / "r.json")]
    assert main(["--model", "carn_m", "--scale", "5", *where, "--no-progress"]) == 1
    assert _one_error_line(capsys, f"amsr-{prog}").endswith("carn_m has no x5 model (scales: 2, 3, 4)")
