"""``amsr-calibrate --module PKG.MOD:FACTORY`` and ``amsr-export --module``: a user's own network calibrated
and exported from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from amsr.cli.calibrate import main

NETWORK = '''
import torch
from torch import nn

class Net(nn.Module):  # [0, 255] in and out, x2
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1))
        self.up = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2))
    def forward(self, x):
        return self.up(self.body(self.head(x / 255))) * 255

def build():
    return Net()

def broken():
    raise RuntimeError("no GPU here")
'''


@pytest.fixture(scope="module")
def train_dir(data_dir: Path) -> Path:
    folder = data_dir / "train"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found (set AMSR_DATA_DIR)")
    return folder


@pytest.fixture()
def user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "mynet_cli.py").write_text(NETWORK)
    monkeypatch.chdir(tmp_path)  # importable from the current directory, as the help says
    monkeypatch.delitem(sys.modules, "mynet_cli", raising=False)
    return tmp_path


def _calibrate(train_dir: Path, out: Path, *extra: str) -> int:
    return main(["--module", "mynet_cli:build", "--scale", "2", "--input-range", "255", "--images", str(train_dir),
                 "--max-images", "2", "--crop", "32", "--json", str(out), *extra])


def test_calibrates_a_user_module_with_its_weights(user_package: Path, train_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(user_package))
    try:
        import mynet_cli  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(user_package))
    weights = user_package / "net.pth"
    torch.save(mynet_cli.build().state_dict(), weights)
    out = user_package / "op.json"
    assert _calibrate(train_dir, out, "--weights", str(weights)) == 0
    captured = capsys.readouterr()
    assert "2 masked conv(s)" in captured.err and "dense: head" in captured.err  # the plan
    assert captured.out.startswith("mynet_cli:build x2: ")
    op = json.loads(out.read_text())
    assert op["model"] == "mynet_cli:build" and op["scale"] == 2 and op["calibration"]["images"] == 2


@pytest.mark.parametrize("args, message", [
    (["--module", "mynet_cli"], "--module wants PKG.MOD:FACTORY"),
    (["--module", "no_such_module_here:build"], "cannot import no_such_module_here"),
    (["--module", "mynet_cli:missing"], "has no callable 'missing'"),
    (["--module", "mynet_cli:broken"], "mynet_cli:broken() failed: RuntimeError: no GPU here"),
    (["--module", "mynet_cli:build", "--model", "carn_m"], "not both"),
])
def test_bad_modules_are_one_line(user_package: Path, train_dir: Path, capsys: pytest.CaptureFixture[str],
                                  args: list[str], message: str) -> None:
    code = main([*args, "--scale", "2", "--images", str(train_dir), "--max-images", "1", "--crop", "32",
                 "--json", str(user_package / "op.json")])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1 and message in err, err


def test_weights_that_do_not_fit_are_one_line(user_package: Path, train_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    weights = user_package / "other.pth"
    torch.save({"head.weight": torch.zeros(8, 3, 3, 3)}, weights)
    assert _calibrate(train_dir, user_package / "op.json", "--weights", str(weights)) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "does not fit mynet_cli:build()" in err and "Missing key" in err


def _set5_x2(data_dir: Path, folder: Path) -> Path:
    import shutil

    for sub in ("LR", "HR"):
        (folder / sub).mkdir(parents=True)
        for name in ("img_002.png", "img_005.png"):
            shutil.copy(data_dir / "Set5" / "x2" / sub / name, folder / sub / name)
    return folder


def test_evaluates_a_user_module(user_package: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from amsr.cli.eval import main as eval_main

    data = _set5_x2(data_dir, user_package / "pairs")
    base = ["--module", "mynet_cli:build", "--scale", "2", "--input-range", "255", "--data", str(data)]
    assert eval_main(base) == 1  # no operating point of its own: say what to give
    assert "--module has no shipped operating point" in capsys.readouterr().err
    report = user_package / "eval.json"
    assert eval_main([*base, "--dilation", "4", "--output-dilation", "1", "--no-progress", "--json", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["model"] == "mynet_cli:build" and r["images"] == 2 and r["amsr"]["gmacs"] <= r["dense"]["gmacs"]


def test_exports_a_user_module_with_its_name_in_the_graph(user_package: Path, data_dir: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime", reason="the export check needs onnxruntime (pip install 'amsr[onnx]')")
    import onnx

    from amsr.cli.export import main as export_main

    out = user_package / "mine.onnx"
    code = export_main(["--module", "mynet_cli:build", "--scale", "2", "--input-range", "255", "--dilation", "4",
                        "--output-dilation", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "2 masked conv(s)" in captured.err  # the plan
    assert "wrote" in captured.out and "mynet_cli:build x2" in captured.out and "verified against PyTorch in onnxruntime" in captured.out
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["amsr.model"] == "mynet_cli:build" and meta["amsr.kind"] == "accelerated"
    assert "amsr.weights_sha256" not in meta  # no --weights: the factory's own weights, no file to hash
    assert json.loads(meta["amsr.user_network"]) == {"input_range": 255.0, "multiple_of": 1, "windows": []}

    # amsr-parity rebuilds the same model from the file alone (the module importable from the current directory)
    from amsr.cli.parity import main as parity_main

    data = user_package / "set"
    (data / "LR").mkdir(parents=True)
    torch.manual_seed(1)
    from PIL import Image

    for i in range(2):
        pixels = (torch.rand(20, 24, 3) * 255).to(torch.uint8).numpy()
        pixels[:, :10] = 128  # a flat part and a textured part
        Image.fromarray(pixels).save(data / "LR" / f"img_{i}.png")
    assert parity_main(["--onnx", str(out), "--data", str(data)]) == 0, capsys.readouterr().err
    assert "PASSED" in capsys.readouterr().out
    # and amsr-eval scores the graph in onnxruntime, the network rebuilt from the file as well
    from amsr.cli.eval import main as eval_main

    pairs = _set5_x2(data_dir, user_package / "pairs")
    report = user_package / "eval.json"
    assert eval_main(["--backend", "onnxruntime", "--onnx", str(out), "--data", str(pairs), "--no-progress",
                      "--json", str(report)]) == 0, capsys.readouterr().err
    assert json.loads(report.read_text())["model"] == "mynet_cli:build"


@pytest.mark.parametrize("args, message", [
    ([], "--module has no shipped operating point"),
    (["--dilation", "2", "--windows", "nowhere.*"], "matches no module"),
    (["--dilation", "2", "--windows", "body.*:nhwc"], "--windows wants PATTERN or PATTERN:tokens"),
])
def test_export_of_a_user_module_refuses_bad_settings_in_one_line(user_package: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  args: list[str], message: str) -> None:
    from amsr.cli.export import main as export_main

    code = export_main(["--module", "mynet_cli:build", "--scale", "2", *args, "--out", str(user_package / "x.onnx")])
    err = capsys.readouterr().err
    assert code != 0 and message in err.strip().splitlines()[-1], err
    assert not (user_package / "x.onnx").exists()
