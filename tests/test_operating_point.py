"""Shipped default operating points: the package file, ``default_operating_point`` and
``amsr-eval --operating-point default[:DB]`` (with a tiny stand-in network, so it runs in a second)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from amsr import operating_point as op_mod
from amsr.cli import eval as eval_cli
from amsr.core.errors import AmsrError
from amsr.masking.mask import MaskConfig
from amsr.models import LoadedModel
from amsr.operating_point import (
    budget_key,
    calibrated_defaults,
    default_operating_point,
    shipped_defaults,
)
from amsr.weights import sha256_of
from amsr.zoo import architecture_names, get_architecture
from amsr.zoo.descriptor import Architecture, SparseRules

# What scripts/calibrate_defaults.py ships (README "Quality"): CNNs at x2–x4, IMDTN at x4.
EXPECTED = {("carn_m", 2), ("carn_m", 3), ("carn_m", 4), ("imdn", 2), ("imdn", 3), ("imdn", 4),
            ("pan", 2), ("pan", 3), ("pan", 4), ("imdtn", 4), ("ngswin", 2), ("hit_srf", 4)}
# Window skipping breaks these (results/README.md §2): nothing within 0.1 dB saves compute, the default is dense;
# PAN and IMDN broke photos training-free (test_no_training_free_point_where_photos_broke_it).
DENSE_DEFAULTS = {("ngswin", 2), ("hit_srf", 4), ("pan", 2), ("pan", 3), ("pan", 4), ("imdn", 2), ("imdn", 3),
                  ("imdn", 4)}
# Calibrated with the worst-image rule and the high-frequency floor (session 17, 20 crops); the windowed
# models' dense defaults have nothing to check.
WORST_IMAGE_CHECKED = EXPECTED - DENSE_DEFAULTS


def test_shipped_file_is_complete_and_valid() -> None:
    doc = shipped_defaults()
    assert set(calibrated_defaults()) == EXPECTED
    for model, scales in doc["models"].items():
        assert model in architecture_names()
        for scale, budgets in scales.items():
            assert int(scale) in get_architecture(model).scales
            assert set(budgets) == {"0.05", "0.1"}
            for b, entry in budgets.items():
                cal = entry["calibration"]
                assert {"loss_db", "saved", "images", "crop", "source"} <= set(cal)
                assert "T91" in cal["source"] and "Set5" not in cal["source"]
                if entry["config"] is None:
                    assert cal["loss_db"] is None
                    continue
                cfg = MaskConfig(**entry["config"])  # every field valid
                assert cfg.output_dilation is not None  # the plain mask never fits these budgets
                assert cal["loss_db"] <= float(b) and cal["saved"] > 0
                # Safe by default: no calibration image lost more than the worst-image rule allows (T91/t53
                # lost 0.687 dB at the 16-crop CARN-M x4 default, which never saw it).
                if (model, int(scale)) in WORST_IMAGE_CHECKED:
                    assert cal["worst_db"] <= op_mod.WORST_IMAGE_BUDGETS * float(b), (model, scale, b)
            # A larger budget never picks a setting that saves less.
            lo, hi = budgets["0.05"]["calibration"]["saved"], budgets["0.1"]["calibration"]["saved"]
            if (model, int(scale)) in DENSE_DEFAULTS:
                assert lo is None and hi is None
            else:
                assert hi is not None and (lo is None or hi >= lo)


def test_default_operating_point_reads_the_shipped_entry() -> None:
    entry = shipped_defaults()["models"]["carn_m"]["4"]
    for budget, key in ((0.05, "0.05"), (0.1, "0.1"), (0.07, "0.05"), (1.0, "0.1")):
        cfg = entry[key]["config"]
        assert default_operating_point("carn_m", 4, budget) == (None if cfg is None else MaskConfig(**cfg))
    assert default_operating_point("pan", 2) == default_operating_point("pan", 2, 0.05)
    assert budget_key(0.05) == "0.05" and budget_key(0.1) == "0.1"


@pytest.mark.parametrize("model, scale, message", [
    ("swinir", 4, "no default operating point for swinir x4"),  # transformer not calibrated yet
    ("nope", 4, "no default operating point for nope x4"),
    ("imdtn", 2, "no default operating point for imdtn x2"),
])
def test_no_default_is_a_clear_error(model: str, scale: int, message: str) -> None:
    with pytest.raises(AmsrError, match=message) as e:
        default_operating_point(model, scale)
    assert "carn_m x2/x3/x4" in str(e.value) and "imdtn x4" in str(e.value)  # lists what is calibrated


def test_budget_below_every_calibrated_one_and_bad_budgets() -> None:
    with pytest.raises(AmsrError, match="within 0.01 dB"):
        default_operating_point("carn_m", 4, 0.01)
    for bad in (-0.1, float("nan")):
        with pytest.raises(AmsrError, match="budget"):
            default_operating_point("carn_m", 4, bad)


def test_dense_entry_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"models": {"carn_m": {"4": {"0.05": {"config": None, "calibration": {}},
                                       "0.1": {"config": {"dilation": 6, "output_dilation": 4}, "calibration": {}}}}}}
    monkeypatch.setattr(op_mod, "shipped_defaults", lambda: doc)
    assert default_operating_point("carn_m", 4) is None
    assert default_operating_point("carn_m", 4, 0.1) == MaskConfig(dilation=6, output_dilation=4)


# ----------------------------------------------------------------------------------------------- amsr-eval

SCALE = 2


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Conv2d(3, 8, 3, 1, 1)
        self.body = nn.Conv2d(8, 8, 3, 1, 1)
        self.up = nn.Sequential(nn.Conv2d(8, 3 * SCALE * SCALE, 3, 1, 1), nn.PixelShuffle(SCALE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        return self.up(f + self.body(f))


def _tiny_loader(name: str, scale: int, **kw: object) -> LoadedModel:
    arch = Architecture(id="tiny", description="test", scales=(SCALE,), weights=(), detect=lambda sd: False,
                        build=lambda sd, s: _Tiny(), rules=SparseRules(convs=("body",)))
    return LoadedModel(arch=arch, scale=SCALE, net=_Tiny().eval(), weights=Path("none"))


def _mini_set(root: Path) -> Path:
    rng = np.random.default_rng(0)
    hr = np.full((48, 48, 3), 128, np.uint8)
    hr[10:30, 12:36] = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    for sub, img in (("HR", hr), ("LR", hr[::SCALE, ::SCALE])):
        (root / sub).mkdir(parents=True)
        Image.fromarray(img).save(root / sub / "a.png")
    return root


@pytest.mark.parametrize("value, key", [("default", "0.05"), ("default:0.1", "0.1"), ("default:0.07", "0.05")])
def test_eval_with_the_default_operating_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str], value: str, key: str) -> None:
    monkeypatch.setattr(eval_cli, "load_model", _tiny_loader)
    entry = shipped_defaults()["models"]["carn_m"][str(SCALE)][key]
    out = tmp_path / "r.json"
    rc = eval_cli.main(["--model", "carn_m", "--scale", str(SCALE), "--data", str(_mini_set(tmp_path / "set")),
                        "--operating-point", value, "--json", str(out), "--no-progress"])
    err = capsys.readouterr().err
    if entry["config"] is None:
        assert rc == 1 and "dense model" in err
        return
    assert rc == 0, err
    r = json.loads(out.read_text())
    assert {k: r["settings"][k] for k in entry["config"]} == entry["config"]
    assert r["settings"]["operating_point"]["source"] == "shipped default"
    assert r["settings"]["operating_point"]["budget_db"] == float(key)


@pytest.mark.parametrize("value, message", [("default:abc", "budget"), ("default:-1", "budget"),
                                            ("default:0.01", "within 0.01 dB")])
def test_eval_default_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str], value: str, message: str) -> None:
    monkeypatch.setattr(eval_cli, "load_model", _tiny_loader)
    rc = eval_cli.main(["--model", "carn_m", "--scale", str(SCALE), "--data", str(_mini_set(tmp_path / "set")),
                        "--operating-point", value, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("amsr-eval: error:") and "\n" not in err and message in err


def test_eval_no_default_for_an_uncalibrated_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = eval_cli.main(["--model", "swinir", "--scale", "4", "--data", str(_mini_set(tmp_path / "set")),
                        "--operating-point", "default"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "no default operating point for swinir x4" in err and "\n" not in err


def test_eval_file_named_default_is_still_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(eval_cli, "load_model", _tiny_loader)
    f = tmp_path / "default"
    f.write_text(json.dumps({"model": "carn_m", "scale": SCALE, "config": {"dilation": 3, "output_dilation": 1}}))
    out = tmp_path / "r.json"
    rc = eval_cli.main(["--model", "carn_m", "--scale", str(SCALE), "--data", str(_mini_set(tmp_path / "set")),
                        "--operating-point", str(f), "--json", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    r = json.loads(out.read_text())
    assert r["settings"]["dilation"] == 3 and r["settings"]["operating_point"] == {"source": str(f)}


def test_eval_runs_a_fine_tuned_operating_point_only_with_its_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """An operating point calibrated for fine-tuned weights names them by sha256: the published weights (no
    --weights) or other weights get one line, not a setting that damages them."""
    monkeypatch.setattr(eval_cli, "load_model", _tiny_loader)
    tuned, other = tmp_path / "tuned.pth", tmp_path / "other.pth"
    tuned.write_bytes(b"tuned")
    other.write_bytes(b"other")
    f = tmp_path / "op.json"
    f.write_text(json.dumps({"model": "carn_m", "scale": SCALE, "config": {"dilation": 2, "output_dilation": 2},
                             "calibration": {"fine_tuned": True, "weights": str(tuned),
                                             "weights_sha256": sha256_of(tuned)}}))
    common = ["--model", "carn_m", "--scale", str(SCALE), "--data", str(_mini_set(tmp_path / "set")),
              "--operating-point", str(f), "--no-progress"]
    for extra, needle in (([], "give them with --weights"), (["--weights", str(other)], "not " + str(other))):
        assert eval_cli.main([*common, *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("amsr-eval: error:") and "\n" not in err and needle in err, err
    out = tmp_path / "r.json"
    assert eval_cli.main([*common, "--weights", str(tuned), "--json", str(out)]) == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["settings"]["output_dilation"] == 2


def _grid_pairs(arch_name: str) -> list[tuple[int, int | None, float]]:
    from types import SimpleNamespace

    from amsr.tools.calibrate import default_grid

    model = SimpleNamespace(arch=get_architecture(arch_name))  # default_grid reads the descriptor only
    return [(c.dilation, c.output_dilation, c.window_threshold) for c in default_grid(model)]


def test_default_grid_keeps_the_architectures_blend_floor() -> None:
    """IMDTN's descriptor asks for d_out ≥ 6 and a 4-px margin (its photos study); CARN-M takes the global
    margin. Raw skips (no blend) stay in every grid."""
    imdtn = _grid_pairs("imdtn")
    blends = [(d, o) for d, o, _ in imdtn if o is not None]
    assert blends and all(o >= 6 and d - o >= 4 for d, o in blends), blends
    assert (10, 6, 0.5) in imdtn and (9, 6, 0.5) not in imdtn and (1, None, 0.25) in imdtn
    carn = _grid_pairs("carn_m")
    assert (6, 3, 0.5) in carn and (9, 6, 0.5) in carn
    assert all(d - o >= op_mod.MIN_BLEND_MARGIN for d, o, _ in carn if o is not None)
    # pick applies the same floor to points from any grid (a stored one, a user's).
    assert not op_mod.within_blend_floor(6, 3, get_architecture("imdtn").rules)
    assert op_mod.within_blend_floor(6, 3, get_architecture("carn_m").rules)


def test_every_shipped_default_respects_its_architectures_floor() -> None:
    """operating_points.json and the descriptors agree: no shipped blend is thinner than its architecture
    allows (a descriptor change without a re-calibration fails here)."""
    for name, scales in shipped_defaults()["models"].items():
        rules = get_architecture(name).rules
        for scale, budgets in scales.items():
            for budget, entry in budgets.items():
                cfg = entry["config"]
                if cfg is None:
                    continue
                where = f"{name} x{scale} {budget} dB: {cfg['dilation']}/{cfg['output_dilation']}"
                assert op_mod.within_blend_floor(cfg["dilation"], cfg["output_dilation"], rules), where


# The flat sky of Photos2K img_002 (LR 120×200 from its top-left corner): the shipped PAN blends (d 6 / 3, and
# any from 5 / 2 to 10 / 6) lost 15–27 dB against dense there, their skipped features at 1e13, while Set5 and
# Set14 held 0.02 dB; CARN-M and IMDN stay at 56–59 dB.
FLAT_PHOTO_MIN_DB = 40.0


@pytest.mark.parametrize("model,scale", sorted(WORST_IMAGE_CHECKED))
def test_shipped_defaults_keep_a_flat_photo_crop(model: str, scale: int, data_dir: Path, weights_dir: Path) -> None:
    """Safe by default on photos, which the textured calibration crops do not resemble: every shipped
    setting of the model × scale stays within reach of dense (finite, ≥ FLAT_PHOTO_MIN_DB) on a flat crop."""
    from amsr.io.images import read_rgb8, to_tensor
    from amsr.io.metrics import psnr_y
    from amsr.models import load_model

    crop = data_dir / "Photos2K" / "x4" / "LR" / "img_002.png"
    if not crop.is_file():
        pytest.skip(f"{crop} not found (Photos2K)")
    configs = {default_operating_point(model, scale, b) for b in (0.05, 0.1)} - {None}
    if not configs:
        pytest.skip(f"{model} x{scale} ships the dense model")
    loaded = load_model(model, scale, allow_download=False)
    x = to_tensor(read_rgb8(crop)[:120, :200])

    def rgb8(t: torch.Tensor) -> np.ndarray:
        return (t.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    with torch.no_grad():
        dense = rgb8(loaded.dense()(x))
        for cfg in configs:
            y = loaded.accelerated(cfg)(x)
            assert torch.isfinite(y).all() and float(y.abs().max()) < 2, (model, scale, cfg)
            assert psnr_y(rgb8(y), dense, scale) >= FLAT_PHOTO_MIN_DB, (model, scale, cfg)


@pytest.mark.parametrize("model", ["pan", "imdn"])
def test_no_training_free_point_where_photos_broke_it(model: str) -> None:
    """PAN (its skip diverges) and IMDN (2.47 dB lost on a photo) are ``unsafe_training_free``: calibration
    measures nothing and answers dense with the reason, every shipped entry is dense and says why, and
    fine-tuned weights are still judged on their loss."""
    from amsr.tools.calibrate import choose_operating_point

    rules = get_architecture(model).rules
    reason = op_mod.no_default_reason(rules)
    assert reason is not None and rules.unsafe_training_free in reason
    assert op_mod.no_default_reason(get_architecture("carn_m").rules) is None
    point = op_mod.GridPoint(MaskConfig(dilation=6, output_dilation=3), 0.01, 0.001, 1.0, 2.0, 0.9, 0.8, None, 0.02)
    assert not op_mod.admissible(point, 0.05, rules)
    assert op_mod.admissible(point, 0.05, rules, fine_tuned=True)
    assert all(entry["config"] is None and entry["calibration"]["reason"] == reason
               for budgets in shipped_defaults()["models"][model].values() for entry in budgets.values())
    assert op_mod.shipped_default_or_dense(model, 4) == (None, {"source": "dense", "budget_db": 0.05,
                                                                 "reason": reason})

    class _Model:  # only what choose_operating_point reads before it would measure
        arch, scale = get_architecture(model), 4

    def scorer(*_: object) -> list[op_mod.GridPoint]:
        raise AssertionError("nothing is measured")

    lr, hr = np.zeros((16, 16, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)
    op = choose_operating_point(_Model(), [(lr, hr)], 0.05, scorer=scorer)  # type: ignore[arg-type]
    assert op.config is None and op.calibration["reason"] == reason


def test_a_pan_blend_given_by_hand_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """PAN with mask options still runs them (the user asked), with a one-line warning why no default exists;
    CARN-M's blend does not warn."""
    from amsr.cli.common import config_and_source

    parser = eval_cli.build_parser()
    reason = op_mod.no_default_reason(get_architecture("pan").rules)
    assert reason
    for model, warned in (("pan", True), ("carn_m", False)):
        caplog.clear()
        args = parser.parse_args(["--model", model, "--scale", "4", "--data", "x", "--dilation", "6",
                                  "--output-dilation", "3"])
        config, source = config_and_source(args)
        assert config == MaskConfig(dilation=6, output_dilation=3) and source is None
        assert (reason in caplog.text) == warned, model
