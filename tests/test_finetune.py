"""Mask-aware fine-tuning: trained as inference runs, deterministic, resumable, saved in the zoo's layout.

Quality after fine-tuning is a benchmark (results/README.md, fine-tuning), not asserted here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from amsr.cli.calibrate import main as calibrate_main
from amsr.cli.finetune import main
from amsr.core.errors import AmsrError, InputImageError
from amsr.operating_point import resolve_operating_point
from amsr.io.images import list_images, read_rgb8, save_png, to_tensor
from amsr.masking.mask import MaskConfig
from amsr.models import load_model, unwrap_accelerated
from amsr.tools.calibrate import calibration_sample
from amsr.tools.finetune import FinetuneSpec, TrainingSet, finetune, save_finetuned, state_path_for, trainable
from amsr.weights import sha256_of
from tests.conftest import weight_file


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """Three small HR images (crops of the shared training set) and one too small to give a patch."""
    src = sorted((data_dir / "train").rglob("*.png"))
    if len(src) < 3:
        pytest.skip(f"{data_dir / 'train'}: needs ≥ 3 HR training images")
    folder = tmp_path_factory.mktemp("train")
    (folder / "sub").mkdir()
    for i, p in enumerate(src[:3]):
        save_png(folder / ("sub" if i else ".") / f"hr_{i}.png", read_rgb8(p)[:96, :88])
    save_png(folder / "tiny.png", read_rgb8(src[0])[:40, :40])
    return folder


@pytest.fixture(scope="module")
def carn_m(weights_dir: Path):  # noqa: ANN201 — LoadedModel
    return load_model("carn_m", 4, weights=weight_file(weights_dir, "carn_m.pth"))


def _spec(folder: Path, **kw: object) -> FinetuneSpec:
    base: dict[str, object] = {"config": MaskConfig(dilation=1), "data": folder, "steps": 4, "batch": 2,
                               "patch": 16, "save_every": 2}
    return FinetuneSpec(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("config", [MaskConfig(dilation=1), MaskConfig(dilation=4, output_dilation=2)])
def test_training_forward_is_the_inference_forward(carn_m, config: MaskConfig, data_dir: Path) -> None:
    """The module trained is the accelerated model's dense reference path: on an image it gives the sparse
    inference output (skip, blend, sparse tail), so what is trained is what will run."""
    x = to_tensor(read_rgb8(data_dir / "Set5" / "x4" / "LR" / "img_002.png")[:40, :36])
    _, acc = trainable(carn_m, config)
    inference = carn_m.accelerated(config)
    with torch.no_grad():
        expected = inference(x)
        got = acc(x)
    assert torch.equal(unwrap_accelerated(inference).last_mask, acc.last_mask)
    assert float(acc.last_mask.mean()) < 0.95  # something is skipped: the check is not dense vs dense
    assert (got - expected).abs().max() < 1e-5


def test_deterministic_and_resumable(carn_m, train_dir: Path, tmp_path: Path) -> None:
    straight = finetune(carn_m, _spec(train_dir))
    again = finetune(carn_m, _spec(train_dir))
    assert all(torch.equal(straight.state_dict[k], again.state_dict[k]) for k in straight.state_dict)

    out = tmp_path / "ft.pth"

    class Stop(Exception):
        pass

    def stop_at_3(step: int, steps: int, loss: float) -> None:
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        finetune(carn_m, _spec(train_dir), out=out, progress=stop_at_3)
    assert state_path_for(out).is_file()  # written at step 2
    resumed = finetune(carn_m, _spec(train_dir), out=out)
    assert resumed.record["steps_done"] == 4
    assert resumed.losses == straight.losses
    assert all(torch.equal(straight.state_dict[k], resumed.state_dict[k]) for k in straight.state_dict)
    base = carn_m.net.state_dict()
    changed = [k for k in base if not torch.equal(base[k], straight.state_dict[k])]
    assert "b1.b1.body.0.weight" in changed  # a masked conv was trained
    assert not any(k.startswith(("sub_mean.", "add_mean.")) for k in changed)  # fixed in the authors' code too
    assert straight.record["images"] == 3  # tiny.png is smaller than one 16-px patch at x4

    with pytest.raises(AmsrError, match="another run"):
        finetune(carn_m, _spec(train_dir, lr=3e-4), out=out)


def test_distillation_target_and_held_out_calibration_images(carn_m, train_dir: Path) -> None:
    """``target="dense"`` trains towards the original network's output: at the first step its loss is the mask's
    own error, below the loss against HR (which adds the network's own error to it). ``holdout`` leaves out exactly
    the images calibration would take from the folder."""
    distil = finetune(carn_m, _spec(train_dir, steps=1))
    to_hr = finetune(carn_m, _spec(train_dir, steps=1, target="hr"))
    assert 0 < distil.losses[0] < 0.9 * to_hr.losses[0]

    config = MaskConfig(dilation=1)
    every = TrainingSet(train_dir, 4, 16, config, "image")
    held = calibration_sample(list_images(train_dir, recursive=True), 1)
    kept = TrainingSet(train_dir, 4, 16, config, "image", holdout=1)
    assert kept.held_out == 1 and held[0] in every.files and held[0] not in kept.files
    assert len(kept.files) == len(every.files) - 1
    with pytest.raises(InputImageError, match="leaves none"):
        TrainingSet(train_dir, 4, 16, config, "image", holdout=4)


def test_squared_error_objective_trains_other_weights_and_logs_l1(carn_m, train_dir: Path) -> None:
    """``loss="l2"`` changes what the optimiser follows, not what is logged: the first step's logged L1 is the
    L1 run's (same data, same weights), the weights after it differ, and the record names the objective."""
    l1 = finetune(carn_m, _spec(train_dir, steps=2))
    l2 = finetune(carn_m, _spec(train_dir, steps=2, loss="l2"))
    assert l1.losses[0] == pytest.approx(l2.losses[0], rel=1e-6)
    assert any(not torch.equal(l1.state_dict[k], l2.state_dict[k]) for k in l1.state_dict)
    assert l2.record["spec"]["loss"] == "l2" and l2.record["loss"].startswith("mean squared error")
    with pytest.raises(AmsrError, match="loss must be one of l1, l2"):
        _spec(train_dir, loss="huber")


def test_saved_checkpoint_loads_everywhere_with_its_record(carn_m, train_dir: Path, tmp_path: Path) -> None:
    result = finetune(carn_m, _spec(train_dir, steps=2))
    ckpt, record_file = save_finetuned(tmp_path / "carn_m_ft.pth", result)
    record = json.loads(record_file.read_text())
    assert record["base_weights_sha256"] == sha256_of(carn_m.weights)
    assert record["weights_sha256"] == sha256_of(ckpt)
    assert record["steps_done"] == 2 and record["spec"]["config"]["dilation"] == 1 and record["spec"]["seed"] == 0
    assert np.isfinite(record["final_loss_l1"])
    twin, _ = save_finetuned(tmp_path / "other_name.pth", result)  # equal weights, equal bytes, whatever the name
    assert sha256_of(twin) == record["weights_sha256"]
    again = load_model("carn_m", 4, weights=ckpt)
    loaded = again.net.state_dict()
    assert all(torch.equal(loaded[k], result.state_dict[k]) for k in loaded)


def test_cli_trains_and_refuses_in_one_line(train_dir: Path, weights_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    weights = str(weight_file(weights_dir, "carn_m.pth"))
    common = ["--model", "carn_m", "--scale", "4", "--weights", weights, "--data", str(train_dir),
              "--batch", "2", "--patch", "16", "--holdout", "1", "--no-progress"]
    out = tmp_path / "ft.pth"
    assert main([*common, "--dilation", "1", "--steps", "2", "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".json").is_file() and not state_path_for(out).exists()
    assert "2/2 steps" in capsys.readouterr().out
    assert json.loads(out.with_suffix(".json").read_text())["held_out"] == 1

    # Recalibrated as fine-tuned weights (against the original they replace): the thin blends are measured too.
    op_file = tmp_path / "op.json"
    assert calibrate_main(["--model", "carn_m", "--scale", "4", "--weights", str(out), "--reference-weights", weights,
                           "--images", str(train_dir / "sub"), "--max-images", "1", "--crop", "0",
                           "--json", str(op_file)]) == 0
    op = json.loads(op_file.read_text())
    assert op["calibration"]["fine_tuned"] is True and op["calibration"]["reference_weights"] == weights
    measured = {(g["config"]["dilation"], g["config"]["output_dilation"]) for g in op["grid"]}
    assert (2, 2) in measured and (6, 3) in measured, measured
    assert op["calibration"]["weights_sha256"] == sha256_of(out)
    # One image of a 2-step run fits no budget (dense); with the grid's d 2 / 2 chosen, it runs with the weights
    # it was calibrated for, and only with them.
    thin = next(g["config"] for g in op["grid"] if (g["config"]["dilation"], g["config"]["output_dilation"]) == (2, 2))
    op_file.write_text(json.dumps({**op, "config": thin}))
    assert resolve_operating_point(str(op_file), "carn_m", 4, out)[0].output_dilation == 2
    for other, needle in ((None, "give them with --weights"), (weights, "not " + weights)):
        with pytest.raises(AmsrError, match=needle):
            resolve_operating_point(str(op_file), "carn_m", 4, other)
    capsys.readouterr()

    for argv, needle in (
        ([*common, "--steps", "2", "--out", str(out)], "give the mask"),
        ([*common, "--dilation", "1", "--patch", "400", "--out", str(out)], "no image is at least"),
        ([*common, "--dilation", "1", "--steps", "0", "--out", str(out)], "must be ≥ 1"),
        ([*common, "--dilation", "1", "--data", str(tmp_path / "nowhere"), "--out", str(out)], "nowhere"),
    ):
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc != 0 and needle in err and len(err.splitlines()) == 1, (argv, err)
