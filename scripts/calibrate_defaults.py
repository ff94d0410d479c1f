"""Calibrate the shipped default operating points, then measure them on the test sets.

For every model × scale: one grid (``amsr.tools.calibrate.default_grid``) is scored once on calibration
pairs made from the HR training images (``$AMSR_DATA_DIR/train``: T91 + BSD200, never a test set; LR by
torch bicubic downscale with antialias) and, for each budget, ``pick`` chooses the most compute-saving
setting whose mean Y-PSNR loss is within it. Writes (each atomically, merged with what is there, after
every model × scale so an interrupted run keeps what it finished):

- ``amsr/zoo/operating_points.json``: the shipped defaults (read by ``amsr.operating_point.default_operating_point``);
- ``results/quality/calibration/<model>_x<scale>.json``: the whole calibration grid (the curve);
- ``results/quality/defaults.json`` and ``defaults.md``: each chosen default scored on Set5 and Set14 at its
  scale (the benchmark LR images, MATLAB bicubic), against the dense model; another set (``--sets Photos2K``)
  is added beside the ones already scored for the same setting.

    python scripts/calibrate_defaults.py [--models carn_m:2,3,4 pan:4] [--max-images 16 --crop 96]
    python scripts/calibrate_defaults.py --skip-calibration   # re-score the shipped defaults on the test sets
    python scripts/calibrate_defaults.py --skip-calibration --models carn_m:4 --sets Photos2K   # add a set
    python scripts/calibrate_defaults.py --repick --sets      # a changed pick rule on the stored grids
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from amsr.core import paths
from amsr.cli.common import write_json
from amsr.core.files import save_bytes
from amsr.masking.mask import MaskConfig
from amsr.models import load_model
from amsr.operating_point import (
    DEFAULT_OPERATING_POINTS,
    GridPoint,
    budget_key,
    config_from_json,
    no_default_reason,
    pick,
)
from amsr.tools.calibrate import default_grid, load_calibration, score_grid
from amsr.tools.evaluate import find_pairs, load_pair
from amsr.zoo import get_architecture

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ["carn_m:2,3,4", "imdn:2,3,4", "pan:2,3,4", "imdtn:4"]
TARGET_DB, TARGET_SAVED = 0.05, 0.40  # the target


def parse_models(specs: list[str]) -> list[tuple[str, int]]:
    out = []
    for spec in specs:
        name, _, scales = spec.partition(":")
        out += [(name, int(s)) for s in (scales or "4").split(",")]
    return out


def load_json(path: Path, empty: dict[str, object]) -> dict[str, object]:
    return json.loads(path.read_text()) if path.is_file() else empty


def source_of(folder: Path, pairs_count: int, total: int) -> str:
    subs = sorted(p.name for p in folder.iterdir() if p.is_dir())
    where = "$AMSR_DATA_DIR/train" if folder.resolve() == (paths.data_dir() / "train").resolve() else folder.name
    return (f"{'+'.join(subs) or folder.name} ({where}): {pairs_count} of {total} HR images, every k-th in "
            "sorted path order; LR = torch bicubic downscale, antialias=True, uint8")


def calibrate_one(name: str, scale: int, a: argparse.Namespace, budgets: list[float]) -> dict[str, object]:
    folder = a.calibration
    total = sum(1 for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif",
                                                                      ".tiff") and p.is_file())
    pairs = load_calibration(folder, scale, max_images=a.max_images, crop=a.crop or None)
    model = load_model(name, scale, allow_download=False)
    grid = default_grid(model)
    t0 = time.time()
    pts = score_grid(model, pairs, grid, progress=lambda s: print(f"  calib {name} x{scale} {s}", file=sys.stderr,
                                                                  flush=True))
    seconds = round(time.time() - t0, 1)
    src = source_of(folder, len(pairs), total)
    curve = a.out / "calibration" / f"{name}_x{scale}.json"
    write_json(curve,
               {"model": name, "scale": scale, "images": len(pairs), "crop_lr_px": a.crop or None, "source": src,
                "seconds": seconds, "grid": [p.to_json() for p in pts]})
    plot_calibration(curve, budgets)
    return entry_for(name, scale, pts, budgets, {"images": len(pairs), "crop": a.crop or None, "source": src,
                                                 "grid_size": len(grid)}, f"  [{seconds}s]")


def entry_for(name: str, scale: int, pts: list[GridPoint], budgets: list[float], about: dict[str, object],
              suffix: str = "") -> dict[str, object]:
    """The operating-points entry of one model × scale: ``pick`` per budget from the scored grid."""
    entry: dict[str, object] = {}
    rules = get_architecture(name).rules
    unsafe = no_default_reason(rules)
    for b in budgets:
        best = pick(pts, b, rules)
        entry[budget_key(b)] = {
            "config": best.config.to_json() if best else None,
            "calibration": {"loss_db": round(best.loss_db, 4) if best else None,
                            "worst_db": round(best.worst_db, 4) if best and best.worst_db is not None else None,
                            "ssim_loss": round(best.ssim_loss, 5) if best else None,
                            "saved": round(best.saved, 4) if best else None,
                            "gmacs": round(best.gmacs, 4) if best else None,
                            "dense_gmacs": round(best.dense_gmacs, 4) if best else None, **about,
                            **({"reason": unsafe} if best is None and unsafe else {})}}
        print(f"{name} x{scale} budget {b}: " + (f"d_net {best.config.dilation} d_out {best.config.output_dilation} "
              f"thr {best.config.window_threshold} hf_floor {best.config.hf_floor}: {best.loss_db:+.3f} dB loss "
              f"(worst {best.worst_db}), {100 * best.saved:.1f}% saved"
              if best else "nothing fits (dense)") + suffix, flush=True)
    return entry


def repick_one(name: str, scale: int, a: argparse.Namespace) -> dict[str, object]:
    """``entry_for`` from the grid a previous calibration stored (``calibration/<name>_x<scale>.json``):
    a changed ``pick`` rule applied to the same measurements, without scoring anything again."""
    d = json.loads((a.out / "calibration" / f"{name}_x{scale}.json").read_text())
    fields = set(GridPoint.__dataclass_fields__)
    pts = [GridPoint(**{**{k: v for k, v in q.items() if k in fields}, "config": config_from_json(q["config"])})
           for q in d["grid"]]
    return entry_for(name, scale, pts, a.budgets, {"images": d["images"], "crop": d["crop_lr_px"],
                                                   "source": d["source"], "grid_size": len(pts)}, " (re-picked)")


def plot_calibration(path: Path, budgets: list[float]) -> None:
    """``<model>_x<scale>.png`` beside the calibration JSON: ΔPSNR vs GMACs saved of every grid setting, the
    budgets as dashed lines (skipped without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = json.loads(path.read_text())
    fig, ax = plt.subplots(figsize=(6, 4))
    for blend, marker in ((False, "x"), (True, "o")):
        pts = [q for q in d["grid"] if (q["config"]["output_dilation"] is not None) == blend]
        ax.scatter([100 * q["saved"] for q in pts], [-q["loss_db"] for q in pts], marker=marker, s=18,
                   label="blend" if blend else "no blend")
        for q in pts:
            c = q["config"]
            if blend and q["loss_db"] < 0.5:
                ax.annotate(f"{c['dilation']}/{c['output_dilation']}", (100 * q["saved"], -q["loss_db"]), fontsize=6)
    for b in budgets:
        ax.axhline(-b, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("effective GMACs saved (%)")
    ax.set_ylabel("ΔPSNR-Y vs dense (dB)")
    ax.set_ylim(bottom=max(ax.get_ylim()[0], -0.6), top=0.02)
    ax.set_title(f"{d['model']} x{d['scale']} calibration ({d['images']} T91/BSD200 crops), d_net/d_out")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)
    plt.close(fig)


def test_one(name: str, scale: int, entry: dict[str, object], sets: list[str]) -> dict[str, object]:
    configs = {k: MaskConfig.from_json(v["config"]) for k, v in entry.items() if v["config"] is not None}  # type: ignore[index]
    model = load_model(name, scale, allow_download=False)
    res: dict[str, object] = {}
    for set_name in sets:
        folder = paths.data_dir() / set_name / f"x{scale}"
        if not folder.is_dir():
            print(f"  test {name} x{scale} {set_name}: no {folder}, skipped", file=sys.stderr, flush=True)
            continue
        pairs = [load_pair(p, scale) for p in find_pairs(folder)]
        t0 = time.time()
        uniq = list(dict.fromkeys(configs.values()))
        pts: dict[MaskConfig, GridPoint] = dict(zip(uniq, score_grid(model, pairs, uniq))) if uniq else {}
        for k, c in configs.items():
            p = pts[c]
            res.setdefault(k, {})["config"] = c.to_json()  # type: ignore[union-attr]
            res.setdefault(k, {})[set_name] = {  # type: ignore[union-attr]
                "loss_db": round(p.loss_db, 4), "worst_db": None if p.worst_db is None else round(p.worst_db, 4),
                "ssim_loss": round(p.ssim_loss, 5), "saved": round(p.saved, 4),
                "gmacs": round(p.gmacs, 4), "dense_gmacs": round(p.dense_gmacs, 4), "images": len(pairs),
                "density": round(p.density, 4),
                "output_density": None if p.output_density is None else round(p.output_density, 4),
                "windows": None if p.windows is None else round(p.windows, 4)}
        print(f"  test {name} x{scale} {set_name}: {round(time.time() - t0, 1)}s", file=sys.stderr, flush=True)
    return res


def fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "—"
    return f"{100 * x:.1f}%" if pct else f"{-x:+.3f}"


def with_worst(r: dict[str, object]) -> str:
    """``-0.033 (-0.084)``: the mean loss and, where recorded, the worst image's."""
    worst = r.get("worst_db")
    return fmt(r.get("loss_db")) + (f" ({fmt(worst)})" if isinstance(worst, float) else "")  # type: ignore[arg-type]


def markdown(zoo: dict[str, object], tests: dict[str, object]) -> str:
    about = zoo.get("calibration", {})
    lines = [
        "# Shipped default operating points (`amsr/zoo/operating_points.json`)",
        "",
        ("Chosen on calibration images by `scripts/calibrate_defaults.py` (most GMACs saved with mean Y-PSNR "
         "loss ≤ budget), then scored on the test sets (never used to choose). ΔPSNR-Y vs the dense model "
         "(negative = worse); saved = effective GMACs saved (`amsr.core.cost`)."),
        "",
        (f"Calibration: {about.get('source', '?')}; centre crop {about.get('crop_lr_px')} LR px; "
         f"grid: `default_grid` ({about.get('grid')})."),
        "",
        ("*budget held*: the test-set loss is within the budget the default was chosen for (Set5 / Set14). "
         f"*target met*: the issue's target, ΔPSNR ≥ −{TARGET_DB} dB with ≥ {100 * TARGET_SAVED:.0f}% "
         "GMACs saved, on both test sets."),
        "",
        ("Photos2K: ΔPSNR mean (worst photo) and saved on the 12 photos at x2 and x4 (no x3), where scored."),
        "",
        ("| model | scale | budget (dB) | d_net | d_out | window thr | hf floor | calib ΔPSNR (worst) | calib saved "
         "| Set5 ΔPSNR | Set5 saved | Set14 ΔPSNR | Set14 saved | Photos2K ΔPSNR (worst) | Photos2K saved "
         "| budget held (Set5 / Set14) | target met |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    n = n5 = n14 = n_met = 0
    for name, scales in zoo["models"].items():  # type: ignore[union-attr]
        for scale, budgets in sorted(scales.items(), key=lambda kv: int(kv[0])):
            for b, e in budgets.items():
                n += 1
                c, cal = e["config"], e["calibration"]
                t = tests.get(name, {}).get(scale, {}).get(b, {})  # type: ignore[union-attr]
                if c is not None and t.get("config", c) != c:
                    t = {}  # scored for another setting (the default changed since): not re-scored yet
                s5, s14, ph = t.get("Set5", {}), t.get("Set14", {}), t.get("Photos2K", {})
                if c is None:
                    lines.append(f"| {name} | x{scale} | {b} | dense | — | — | — | nothing fits | — | — | — | — | — "
                                 "| — | — | — | no |")
                    continue
                ok5, ok14 = (bool(r) and r["loss_db"] <= float(b) for r in (s5, s14))
                met = all(r and r["loss_db"] <= TARGET_DB and r["saved"] >= TARGET_SAVED for r in (s5, s14))
                n5, n14, n_met = n5 + ok5, n14 + ok14, n_met + met
                held = " / ".join("—" if not r else ("yes" if ok else "no") for r, ok in ((s5, ok5), (s14, ok14)))
                lines.append(
                    f"| {name} | x{scale} | {b} | {c['dilation']} | {c['output_dilation']} | {c['window_threshold']} "
                    f"| {c.get('hf_floor') or '—'} | {with_worst(cal)} | {fmt(cal['saved'], True)} "
                    f"| {fmt(s5.get('loss_db'))} | {fmt(s5.get('saved'), True)} "
                    f"| {fmt(s14.get('loss_db'))} | {fmt(s14.get('saved'), True)} "
                    f"| {with_worst(ph)} | {fmt(ph.get('saved'), True)} | {held} | {'yes' if met else 'no'} |")
    lines += ["", (f"Summary: the issue target is met by {n_met} of {n} defaults. The budget chosen on the "
                   f"calibration images holds on Set5 for {n5} and on Set14 for {n14} of {n}: at the same setting "
                   "the test sets, Set5 most, often lose more than the calibration crops (causes not separated: "
                   "content, and MATLAB- rather than torch-bicubic LR), so a budget calibrated on T91/BSD200 is a "
                   "guide, not a guarantee, for other images.")]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="NAME:SCALES entries (default %(default)s)")
    p.add_argument("--budgets", nargs="+", type=float, default=[0.05, 0.1])
    p.add_argument("--max-images", type=int, default=16)
    p.add_argument("--crop", type=int, default=96, help="centre crop, LR px per side (0: whole images)")
    p.add_argument("--calibration", type=Path, default=None, help="HR images (default $AMSR_DATA_DIR/train)")
    p.add_argument("--sets", nargs="*", default=["Set5", "Set14"], help="test sets to score (none: skip)")
    p.add_argument("--zoo-json", type=Path, default=ROOT / "amsr" / "zoo" / DEFAULT_OPERATING_POINTS)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "quality")
    p.add_argument("--skip-calibration", action="store_true", help="only re-score the shipped defaults on --sets")
    p.add_argument("--repick", action="store_true",
                   help="choose the defaults again from the stored calibration grids (a changed pick rule), "
                        "without scoring the grid again")
    p.add_argument("--plot-only", action="store_true",
                   help="only redraw the calibration curves' PNGs and defaults.md from the JSON files")
    a = p.parse_args()
    if a.plot_only:
        for f in sorted((a.out / "calibration").glob("*_x*.json")):
            plot_calibration(f, a.budgets)
        tests = load_json(a.out / "defaults.json", {})
        tests.pop("seconds", None)
        save_bytes(a.out / "defaults.md", markdown(load_json(a.zoo_json, {"models": {}}), tests).encode())
        return 0
    a.calibration = a.calibration or paths.data_dir() / "train"
    old = load_json(a.zoo_json, {"models": {}})
    zoo: dict[str, object] = {"format": 1}
    zoo["about"] = ("Default operating points (amsr.operating_point.default_operating_point): models → scale → "
                    "budget in dB → {config: MaskConfig fields or null (nothing within the budget saves compute: "
                    "run dense), calibration: what was measured on the calibration images}. Written by "
                    "scripts/calibrate_defaults.py.")
    zoo["calibration"] = {"source": "T91+BSD200 training HR images ($AMSR_DATA_DIR/train), never Set5/Set14",
                          "images": a.max_images, "crop_lr_px": a.crop or None,
                          "lr": "torch bicubic downscale, antialias=True, uint8",
                          "grid": "(d_net, d_out) pairs of amsr.tools.calibrate.DEFAULT_PAIRS, window threshold "
                                  "0.25 and 0.5 for transformers, each with the high-frequency floors of "
                                  "amsr.tools.calibrate.HF_FLOORS (none, 0.04)",
                          "rule": "most GMACs saved with the mean loss within the budget, no image losing more "
                                  "than amsr.operating_point.WORST_IMAGE_BUDGETS budgets, and amsr.operating_point."
                                  "admissible's blend floors and unsafe_training_free rule"}
    if a.repick and "calibration" in old:
        zoo["calibration"] = old["calibration"]  # the same calibration runs, re-picked
    zoo["models"] = old["models"]
    tests_path = a.out / "defaults.json"
    tests = load_json(tests_path, {})
    timing: dict[str, float] = tests.pop("seconds", {})  # type: ignore[assignment]
    for name, scale in parse_models(a.models):
        t0 = time.time()
        models = zoo["models"]  # type: ignore[index]
        if a.repick:
            models.setdefault(name, {})[str(scale)] = repick_one(name, scale, a)  # type: ignore[union-attr]
            save_bytes(a.zoo_json, (json.dumps(zoo, indent=2, ensure_ascii=False) + "\n").encode())
        elif not a.skip_calibration:
            entry = calibrate_one(name, scale, a, a.budgets)
            models.setdefault(name, {})[str(scale)] = entry  # type: ignore[union-attr]
            save_bytes(a.zoo_json, (json.dumps(zoo, indent=2, ensure_ascii=False) + "\n").encode())
        entry = models[name][str(scale)]  # type: ignore[index]
        if not a.sets:
            continue
        scored = tests.setdefault(name, {}).setdefault(str(scale), {})  # type: ignore[union-attr]
        for budget, result in test_one(name, scale, entry, a.sets).items():
            if scored.get(budget, {}).get("config") != result["config"]:  # type: ignore[union-attr]
                scored[budget] = {}  # scored for another setting: those sets no longer describe the default
            scored[budget].update(result)  # type: ignore[union-attr]
        timing[f"{name} x{scale}"] = round(time.time() - t0, 1)
        write_json(tests_path, {**tests, "seconds": timing})
        save_bytes(a.out / "defaults.md", markdown(zoo, tests).encode())
        print(f"{name} x{scale}: {timing[f'{name} x{scale}']}s", flush=True)
    print(markdown(zoo, tests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
