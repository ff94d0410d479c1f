"""``amsr-eval``: the JSON contract on real data, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amsr.cli.eval import main


def _carn_m(weights_dir: Path) -> Path:
    f = weights_dir / "carn_m.pth"
    if not f.is_file():
        pytest.skip("carn_m.pth not in the shared weights")
    return f


@pytest.mark.slow
def test_eval_carn_m_x4_set5_contract(tmp_path: Path, data_dir: Path, weights_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    rc = main(["--model", "carn_m", "--scale", "4", "--data", str(data_dir / "Set5" / "x4"),
               "--weights", str(_carn_m(weights_dir)), "--dilation", "2", "--json", str(out), "--no-progress"])
    assert rc == 0
    r = json.loads(out.read_text())
    assert {"model", "scale", "images", "dense", "amsr"} <= set(r)
    assert r["model"] == "carn_m" and r["scale"] == 4 and r["images"] == 5
    assert set(r["dense"]) == {"psnr_y", "ssim_y", "gmacs"}
    assert {"psnr_y", "ssim_y", "gmacs", "density"} <= set(r["amsr"])
    assert r["dense"]["psnr_y"] == pytest.approx(31.88, abs=0.03)  # verified figure (paper 31.92)
    assert 0 < r["amsr"]["density"] < 1
    assert r["amsr"]["gmacs"] < r["dense"]["gmacs"]
    assert r["settings"]["dilation"] == 2
    assert "PSNR-Y" in capsys.readouterr().out


def _mini_set(root: Path, scale: int, lr_size: tuple[int, int] = (24, 24)) -> Path:
    rng = np.random.default_rng(0)
    for sub, k in (("LR", 1), ("HR", scale)):
        (root / sub).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (lr_size[0] * k, lr_size[1] * k, 3), dtype=np.uint8)).save(root / sub / "a.png")
    return root


def _run_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("amsr-eval: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_wrong_scale_for_data(tmp_path: Path, weights_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _mini_set(tmp_path / "set", 4)
    err = _run_error(["--model", "carn_m", "--scale", "2", "--data", str(d), "--weights", str(_carn_m(weights_dir))], capsys)
    assert "wrong --scale" in err


def test_missing_pair_and_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _mini_set(tmp_path / "set", 2)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "LR" / "b.png")
    assert "without a partner" in _run_error(["--model", "carn_m", "--scale", "2", "--data", str(d)], capsys)
    shutil.rmtree(d / "HR")
    assert "HR/ is missing" in _run_error(["--model", "carn_m", "--scale", "2", "--data", str(d)], capsys)


def test_bad_images(tmp_path: Path, weights_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = str(_carn_m(weights_dir))
    d = _mini_set(tmp_path / "rgba", 2)
    Image.open(d / "LR" / "a.png").convert("RGBA").save(d / "LR" / "a.png")
    assert "alpha" in _run_error(["--model", "carn_m", "--scale", "2", "--data", str(d), "--weights", w], capsys)
    d = _mini_set(tmp_path / "tiny", 2, lr_size=(4, 4))
    assert "too small" in _run_error(["--model", "carn_m", "--scale", "2", "--data", str(d), "--weights", w], capsys)


def test_corrupt_checkpoint_and_bad_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _mini_set(tmp_path / "set", 2)
    bad = tmp_path / "carn_m.pth"
    bad.write_bytes(b"garbage")
    assert "not a readable PyTorch checkpoint" in _run_error(
        ["--model", "carn_m", "--scale", "2", "--data", str(d), "--weights", str(bad)], capsys)
    assert "dilation" in _run_error(["--model", "carn_m", "--scale", "2", "--data", str(d), "--dilation", "-1"], capsys)


def test_console_script_is_installed() -> None:
    exe = shutil.which("amsr-eval") or str(Path(sys.executable).parent / "amsr-eval")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--dilation" in r.stdout
    r = subprocess.run([exe, "--model", "nope", "--scale", "4", "--data", "."], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def _real_crop_set(root: Path, data_dir: Path, scale: int, lr_box: tuple[int, int, int, int]) -> Path:
    """One Set5 image cropped to ``lr_box`` (top, left, h, w in LR px), HR cropped to match."""
    top, left, h, w = lr_box
    src = data_dir / "Set5" / f"x{scale}"
    for sub, k in (("LR", 1), ("HR", scale)):
        (root / sub).mkdir(parents=True)
        img = Image.open(src / sub / "img_003.png")
        img.crop((left * k, top * k, (left + w) * k, (top + h) * k)).save(root / sub / "a.png")
    return root


@pytest.mark.parametrize(("model", "scale", "weights"), [("ngswin", 2, "ngswin_x2.pth"),
                                                         ("hit_srf", 4, "hit_srf_x4.pth")])
def test_eval_window_selection_transformers(tmp_path: Path, data_dir: Path, weights_dir: Path, model: str,
                                            scale: int, weights: str) -> None:
    """Window selection on the non-Swin transformer blocks: same JSON contract, fewer effective GMACs."""
    if not (weights_dir / weights).is_file():
        pytest.skip(f"{weights} not in the shared weights")
    data = _real_crop_set(tmp_path / "d", data_dir, scale, (8, 8, 56, 60))
    out = tmp_path / "r.json"
    rc = main(["--model", model, "--scale", str(scale), "--data", str(data), "--window-threshold", "0.5",
               "--json", str(out), "--no-progress"])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["model"] == model and r["images"] == 1
    assert 0 < r["amsr"]["windows"] < 1
    assert r["amsr"]["gmacs"] < r["dense"]["gmacs"]
    assert r["settings"]["window_threshold"] == 0.5
