"""The tools explain themselves (issue #15): ``--help`` imports no torch, states every default and ends with
examples; near-miss names get "did you mean"; export noise from third parties is dropped; progress callbacks.
No timing assertions: how fast ``--help`` is, is measured, not asserted (see the issue)."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import textwrap
import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

TOOLS = ("eval", "calibrate", "export", "parity", "upscale", "bench", "finetune")
HEAVY = ("torch", "numpy", "onnx", "onnxruntime", "onnxscript", "PIL")


@pytest.mark.parametrize("tool", (*TOOLS, "main"))
def test_help_imports_no_torch(tool: str) -> None:
    """In a fresh interpreter, ``main(["--help"])`` exits 0 and leaves torch, numpy, onnx... unimported."""
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        from amsr.cli.{tool} import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                main(["--help"])
            except SystemExit as e:
                assert e.code == 0, e.code
        assert "usage: amsr" in out.getvalue()
        print(",".join(m for m in {HEAVY!r} if m in sys.modules))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"amsr-{tool} --help imported {r.stdout.strip()}"


def _parsers() -> list[argparse.ArgumentParser]:
    from amsr.cli import bench, calibrate, eval, export, finetune, parity, upscale

    return [m.build_parser() for m in (eval, calibrate, export, parity, upscale, bench, finetune)]


@pytest.mark.parametrize("parser", _parsers(), ids=TOOLS)
def test_help_states_defaults_and_examples(parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    assert "``" not in text  # no RST markup in a terminal
    examples = text.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert 1 <= len(examples) <= 4 and all(e.startswith(f"  {parser.prog} ") or e.startswith("  amsr-")
                                           for e in examples)
    assert text.count("./default") <= 1
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        assert a.help, f"{parser.prog} {a.option_strings}: no help text"
        # Flags are off unless given; required options and the --model/--onnx identity have no default.
        if a.nargs == 0 or a.required or not a.option_strings or a.dest in ("model", "scale", "onnx"):
            continue
        assert "default" in a.help.lower(), f"{parser.prog} {a.option_strings}: default not stated"


def test_light_copies_match_the_originals() -> None:
    """The parsers use copies of values from modules that import torch; they must not drift."""
    from amsr import operating_point
    from amsr.sparse import tiles as sparse_tiles
    from amsr.tools import bench
    from amsr.cli import bench as bench_cli
    from amsr.cli import common
    from amsr.masking.mask import MaskConfig
    from amsr.zoo import architecture_names

    assert list(common.MODEL_NAMES) == architecture_names()
    defaults = {f.name: f.default for f in fields(MaskConfig)}
    assert common.MASK_DEFAULTS == {k: defaults[k] for k in common.MASK_DEFAULTS}
    optional = {k for k, v in defaults.items() if v is None}  # output_dilation, hf_floor: off unless given
    assert set(common.MASK_DEFAULTS) | optional == set(common._MASK_OPTIONS)
    assert common.DEFAULT_BUDGET_DB == operating_point.DEFAULT_BUDGET_DB
    assert bench_cli.STRATEGIES == bench.STRATEGIES and bench_cli.DEFAULT_TILE == sparse_tiles.DEFAULT_TILE


# --- did you mean ------------------------------------------------------------------------------------------------

def _usage_error(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1, err
    return err[0]


def test_a_near_miss_model_name_suggests_the_closest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from amsr.cli import export, parity

    line = _usage_error(export.main, ["--model", "carnm", "--scale", "4", "--out", str(tmp_path / "x.onnx")], capsys)
    assert line == "amsr-export: error: argument --model: unknown model 'carnm'; did you mean 'carn_m'?"
    line = _usage_error(parity.main, ["--onnx", "x.onnx", "--data", ".", "--model", "SwinIR"], capsys)
    assert line.endswith("did you mean 'swinir'?")
    line = _usage_error(export.main, ["--model", "edsr", "--scale", "4", "--out", str(tmp_path / "x.onnx")], capsys)
    assert "invalid choice: 'edsr' (choose from carn, carn_m," in line


def test_library_suggests_model_names_too() -> None:
    from amsr.core.errors import UnsupportedModelError
    from amsr.zoo import get_architecture

    with pytest.raises(UnsupportedModelError, match=r"^unknown model 'imdtm'; did you mean 'imdtn'\?$"):
        get_architecture("imdtm")


@pytest.mark.parametrize(("spec", "suggestion"), [("defualt", "; did you mean 'default'?"),
                                                  ("Default:0.1", "; did you mean 'default:0.1'?"),
                                                  ("missing.json", "")])
def test_a_near_miss_operating_point_suggests_default(spec: str, suggestion: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from amsr.cli.bench import main

    (tmp_path / "LR").mkdir()
    rc = main(["--model", "carn_m", "--scale", "4", "--data", str(tmp_path), "--backend", "pytorch",
               "--operating-point", spec])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "Traceback" not in err
    assert err == (f"amsr-bench: error: operating point {spec!r} is neither 'default[:DB]' nor an existing file"
                   + suggestion)


# --- third-party export noise ------------------------------------------------------------------------------------

def test_export_noise_is_dropped_and_other_warnings_show(caplog: pytest.LogCaptureFixture) -> None:
    from amsr.cli.common import _EXPORT_NOISE, quiet_export_noise

    quiet_export_noise()
    quiet_export_noise()  # idempotent: one filter per logger
    for name, (prefix,) in _EXPORT_NOISE.items():
        logger = logging.getLogger(name)
        assert len(logger.filters) == 1
        with caplog.at_level(logging.WARNING):
            logger.warning(prefix + " %s", "torchvision::nms")
            logger.warning("something else went wrong")
    assert [r.getMessage() for r in caplog.records] == ["something else went wrong"] * len(_EXPORT_NOISE)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_export_noise()
        for attrs in ("attribute self.net.last_mask was", "attributes self.net.last_mask, self.x were"):
            warnings.warn(f"The tensor {attrs} assigned during export. Such attributes must be registered as "
                          "buffers", UserWarning, stacklevel=1)
        warnings.warn("an unrelated warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["an unrelated warning"]


def test_the_real_torchvision_lines_are_dropped() -> None:
    """Where torch.onnx really logs them (the logger name is torch's): nothing reaches stderr."""
    pytest.importorskip("onnxscript", reason="torch.onnx's exporter needs onnxscript")
    script = textwrap.dedent("""
        import logging
        from amsr.cli.common import quiet_export_noise
        logging.basicConfig()
        quiet_export_noise()
        from torch.onnx._internal.exporter import _registration
        _registration._get_overload("torchvision::nms")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "torchvision" not in r.stderr


# --- what an export says it verified -----------------------------------------------------------------------------

def test_export_line_reads_the_parity_summary(caplog: pytest.LogCaptureFixture) -> None:
    """The summary ``compare_with_torch`` logs is what the last line of amsr-export reports, and the INFO line
    itself stays hidden without -v."""
    from amsr.cli.export import _VerificationLog
    from amsr.runtime.parity import ParityResult, ParityRow

    rows = [ParityRow("a", (1, 3, 64, 64), 3.1e-7, 0), ParityRow("b", (1, 3, 17, 23), 2e-7, 0)]
    result = ParityResult(passed=True, max_abs_diff=3.1e-7, psnr_diff=None, mask_mismatch_pixels=0, rows=rows)
    check = _VerificationLog(verbose=False)
    with caplog.at_level(logging.WARNING), check.listening():
        logging.getLogger("amsr.runtime.parity").info("parity %s: %s", "x.onnx", result.summary())
    assert caplog.records == []
    assert logging.getLogger("amsr.runtime.parity").level == logging.NOTSET  # restored
    assert check.describe(False, "gather_scatter", masked=True) == (
        "verified against PyTorch in onnxruntime on 2 synthetic images: max |Δ| 3.10e-07 (atol 0.0001), "
        "masks identical")
    assert check.describe(True, "gather_scatter", masked=True) == "not compared with PyTorch (--no-verify)"


def test_export_says_what_ran_and_what_was_verified(weights_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from amsr.cli.export import main

    for module in ("onnxruntime", "onnxscript", "onnx_graphsurgeon", "polygraphy"):
        pytest.importorskip(module, reason=f"needs {module} (pip install 'amsr[onnx]')")
    if not (weights_dir / "fsrcnn_y_x2.pth").is_file():
        pytest.skip("fsrcnn_y_x2.pth not in the shared weights")
    out = tmp_path / "f.onnx"
    assert main(["--model", "fsrcnn", "--scale", "2", "--dense", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    (line,) = captured.out.strip().splitlines()
    assert line.startswith(f"amsr-export: wrote {out}: fsrcnn x2, dense model (--dense), dense graph; verified "
                           "against PyTorch in onnxruntime on 2 synthetic images: max |Δ| ")
    assert "Skipping torchvision" not in captured.err and "Attribute type is ambiguous" not in captured.err


# --- progress ----------------------------------------------------------------------------------------------------

def test_upscaler_reports_progress_per_tile(fsrcnn_x2_onnx: Path) -> None:
    from amsr.runtime.upscaler import Upscaler

    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    reports: list[float] = []
    tiled = Upscaler.from_onnx(fsrcnn_x2_onnx, tile=10, overlap=2, threads=1)
    out = tiled(image, progress=reports.append)
    assert len(reports) == 6 and reports == sorted(reports) and reports[-1] == 1.0  # 2×3 tiles
    assert np.array_equal(out, tiled(image))  # the callback changes nothing


def test_upscale_bar_advances_per_tile(fsrcnn_x2_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from amsr.cli import upscale
    from amsr.io.user_images import write_png

    seen: list[float] = []
    tiles_of = upscale._Progress.tiles_of

    def recording(self, src: Path):  # type: ignore[no-untyped-def]
        report = tiles_of(self, src)
        return lambda fraction: (seen.append(round(self.bar.n + fraction - self._done.get(src, 0.0), 4)),
                                 report(fraction))

    monkeypatch.setattr(upscale._Progress, "tiles_of", recording)
    src = write_png(tmp_path / "a.png", np.zeros((20, 30, 3), np.uint8))
    assert upscale.main([str(src), "--out", str(tmp_path / "o"), "--onnx", str(fsrcnn_x2_onnx), "--tile", "10",
                         "--overlap", "2", "--threads", "1"]) == 0
    assert seen == [round(k / 6, 4) for k in range(1, 7)]  # the bar's count after each of the 2×3 tiles
    err = capsys.readouterr().err
    assert "1.00/1 img" in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("amsr-upscale: ")]
    assert lines[0] == f"amsr-upscale: {fsrcnn_x2_onnx.name}: x2, dense graph"  # what runs, before the run
    assert lines[-2] == (f"amsr-upscale: ran tiles ≤ 10 px + 2 px overlap; {fsrcnn_x2_onnx.name} not compared "
                         "with PyTorch here (amsr-parity does)")
    assert lines[-1] == f"amsr-upscale: 1 written to {tmp_path / 'o'}"


def test_bench_reports_progress_per_image(tmp_path: Path, data_dir: Path, weights_dir: Path) -> None:
    from amsr.io.images import read_rgb8, save_png
    from amsr.models import load_model
    from amsr.operating_point import default_operating_point
    from amsr.tools.bench import BenchSpec, run_bench
    from tests.conftest import weight_file

    lr = tmp_path / "LR"
    lr.mkdir()
    for name in ("img_001.png", "img_002.png"):
        save_png(lr / name, read_rgb8(data_dir / "Set5" / "x4" / "LR" / name)[:20, :24])
    model = load_model("carn_m", 4, weights=weight_file(weights_dir, "carn_m.pth"))
    calls: list[tuple[str, int, int]] = []
    spec = BenchSpec(backend="pytorch", config=default_operating_point("carn_m", 4), strategy="pixel", warmup=1,
                     repeats=2, profile=False)
    report = run_bench(model, tmp_path, spec, progress=lambda *a: calls.append(a))
    assert [r.image for r in report.per_image] == ["img_001.png", "img_002.png"]
    assert calls[0] == ("masks", 0, 8) and calls[-1] == ("timing", 8, 8)
    assert [c[1] for c in calls] == sorted(c[1] for c in calls)
    assert [c for c in calls if c[0] == "warmup"] == [("warmup", 2, 8), ("warmup", 3, 8), ("warmup", 4, 8)]


# --- amsr TOOL ---------------------------------------------------------------------------------------------------

def test_amsr_lists_and_runs_every_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from amsr.cli.main import TOOLS, main

    tomllib = pytest.importorskip("tomllib", reason="Python ≥ 3.11 reads pyproject.toml")

    scripts = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["scripts"]
    assert {f"amsr-{t}": f"amsr.cli.{t}:main" for t in TOOLS} == {k: v for k, v in scripts.items() if k != "amsr"}
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and all(f"\n  {t} " in out for t in TOOLS) and "examples:" in out
    with pytest.raises(SystemExit) as e:
        main(["export", "--model", "carnm", "--scale", "4", "--out", str(tmp_path / "x.onnx")])
    assert e.value.code == 2 and capsys.readouterr().err.strip() == (
        "amsr-export: error: argument --model: unknown model 'carnm'; did you mean 'carn_m'?")
    with pytest.raises(SystemExit) as e:
        main(["exprot", "--help"])
    assert e.value.code == 2 and capsys.readouterr().err == "amsr: error: unknown tool 'exprot'; did you mean 'export'?\n"
