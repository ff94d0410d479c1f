"""Quality/compute trade-off of AMSR settings per model: ΔPSNR/ΔSSIM vs effective GMACs saved.

For each model × set, every setting of a small grid (blur σ, network dilation d_net, window threshold,
output-blend dilation d_out) is measured with ``amsr.tools.calibrate.score_grid`` (effective GMACs from
``amsr.core.cost``: only what the code computes; with a blend the zoo CNN tails run only where kept pixels need them).
Writes ``results/quality/<model>_x<scale>.json`` (one entry per set) and ``<model>_x<scale>.png``.

    python scripts/quality_study.py --models carn_m imdn --sets Set5 Set14 --scale 4 [--dilations 1 2 3 4 6 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from amsr.core import paths
from amsr.cli.common import write_json
from amsr.masking.mask import MaskConfig
from amsr.models import load_model
from amsr.tools.calibrate import score_grid
from amsr.tools.evaluate import find_pairs, load_pair


def grid(dilations: list[int], outs: list[int | None], sigmas: list[float], thresholds: list[float]) -> list[MaskConfig]:
    return [MaskConfig(blur_sigma=s, dilation=d, output_dilation=o, window_threshold=t)
            for s in sigmas for t in thresholds for d in dilations for o in outs if o is None or o <= d]


def plot(path: Path, title: str, per_set: dict[str, list[dict[str, object]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for set_name, points in per_set.items():
        for blend, marker in ((False, "x"), (True, "o")):
            pts = [p for p in points if (p["config"]["output_dilation"] is not None) == blend]
            ax.scatter([100 * p["saved"] for p in pts], [-p["loss_db"] for p in pts], marker=marker, s=18,
                       label=f"{set_name} {'blend' if blend else 'no blend'}")
    ax.axhline(-0.05, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("effective GMACs saved (%)")
    ax.set_ylabel("ΔPSNR-Y vs dense (dB)")
    ax.set_ylim(bottom=max(ax.get_ylim()[0], -1.0))
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", nargs="+", default=["carn_m", "imdn", "pan", "imdtn"])
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--dilations", nargs="+", type=int, default=[1, 2, 3, 4, 6, 8])
    p.add_argument("--outs", nargs="+", default=["none", "0", "1", "2"])
    p.add_argument("--sigmas", nargs="+", type=float, default=[1.5])
    p.add_argument("--thresholds", nargs="+", type=float, default=None,
                   help="window thresholds (transformers; default 0.25 0.5)")
    p.add_argument("--out", type=Path, default=Path("results/quality"))
    a = p.parse_args()
    outs = [None if o == "none" else int(o) for o in a.outs]
    a.out.mkdir(parents=True, exist_ok=True)
    for name in a.models:
        model = load_model(name, a.scale, allow_download=False)
        thr = a.thresholds or ([0.25, 0.5] if model.arch.rules.windows or model.arch.rules.window_adapters else [0.5])
        g = grid(a.dilations, outs, a.sigmas, thr)
        path = a.out / f"{name}_x{a.scale}.json"
        doc = json.loads(path.read_text()) if path.is_file() else {"model": name, "scale": a.scale, "sets": {}}
        for set_name in a.sets:
            pairs = [load_pair(pp, a.scale) for pp in find_pairs(paths.data_dir() / set_name / f"x{a.scale}")]
            t0 = time.time()
            pts = score_grid(model, pairs, g, progress=lambda s: print(f"{name} {set_name} {s}", file=sys.stderr))
            new = [pt.to_json() for pt in pts]  # merged with earlier runs (same config: replaced)
            keep = [q for q in doc["sets"].get(set_name, []) if q["config"] not in [n["config"] for n in new]]
            doc["sets"][set_name] = keep + new
            doc.setdefault("seconds", {})[set_name] = round(time.time() - t0, 1)
            write_json(path, doc)
            plot(a.out / f"{name}_x{a.scale}.png", f"{name} x{a.scale}", doc["sets"])
            best = [pt for pt in pts if pt.loss_db <= 0.05]
            b = max(best, key=lambda q: q.saved) if best else None
            print(f"{name} {set_name}: best ≤0.05 dB: "
                  + (f"{100 * b.saved:.1f}% saved, {b.loss_db:+.3f} dB, {b.config}" if b else "none"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
