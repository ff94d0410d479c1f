"""The quality/compute frontier of fine-tuned vs training-free weights on test sets (reported, never used to
choose anything): every setting of ``default_grid(fine_tuned=True)`` scored against the *original* dense network
(``score_grid(reference=)``) for the original and the fine-tuned checkpoint, and one plot of loss vs GMACs
saved per set, with each checkpoint's frontier (the best saving at each loss).

    python scripts/finetune_frontier.py --model carn_m --weights ft.pth \\
        --sets ../shared/data/Set14/x4 ../shared/data/Photos2K/x4 --out results/finetune/carn_m_x4_frontier

``--pairs`` scores a few settings instead of the whole grid (a CARN-M x4 forward on a 640×400 Photos2K LR
photo takes ~8 s on 2 cores: the 23 settings × 2 checkpoints × 12 photos would take over an hour);
``--merge`` adds the sets of earlier outputs of this script (same model and weights) to the JSON and the plot.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from amsr.masking.mask import MaskConfig
from amsr.models import load_model
from amsr.tools.calibrate import default_grid, score_grid
from amsr.tools.evaluate import find_pairs, load_pair


def frontier(points: list[dict[str, float]]) -> list[tuple[float, float]]:
    """(loss, saved) of the points no other point beats on both (less loss and more saved)."""
    pts = sorted(((p["loss_db"], p["saved"]) for p in points), key=lambda t: (t[0], -t[1]))
    out: list[tuple[float, float]] = []
    for loss, saved in pts:
        if not out or saved > out[-1][1]:
            out.append((loss, saved))
    return out


def plot(path: Path, title: str, results: dict[str, dict[str, list[dict[str, float]]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(next(iter(results.values())))
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4), squeeze=False)
    for ax, set_name in zip(axes[0], sets):
        for (label, per_set), colour in zip(results.items(), ("tab:grey", "tab:blue")):
            pts = per_set[set_name]
            ax.scatter([p["saved"] * 100 for p in pts], [p["loss_db"] for p in pts], c=colour, s=14, alpha=0.6)
            f = frontier(pts)
            ax.plot([s * 100 for _, s in f], [loss for loss, _ in f], c=colour, label=label)
        ax.axhline(0.05, c="k", lw=0.6, ls="--")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_xlabel("effective GMACs saved (%)")
        ax.set_ylabel("ΔPSNR-Y loss vs original dense (dB)")
        ax.set_title(f"{title}: {set_name}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_pair(text: str) -> tuple[int, int | None]:
    """``D:DOUT`` (``D:none``: the raw skip) → (d_net, d_out)."""
    d, _, d_out = text.partition(":")
    return int(d), None if d_out in ("", "none") else int(d_out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="carn_m")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--weights", type=Path, required=True, help="the fine-tuned checkpoint")
    ap.add_argument("--sets", nargs="+", required=True, help="folders with HR/ and LR/")
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.png")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", nargs="+", type=parse_pair, metavar="D:DOUT",
                    help="score only these settings (D:none = raw skip; default: default_grid(fine_tuned=True))")
    ap.add_argument("--merge", nargs="+", type=Path, default=[], metavar="JSON",
                    help="earlier outputs of this script whose sets join this one's JSON and plot")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    original = load_model(a.model, a.scale)
    models = {"training-free": original, f"fine-tuned ({a.weights.name})": load_model(a.model, a.scale,
                                                                                        weights=a.weights)}
    grid = default_grid(original, fine_tuned=True)  # the same settings for both checkpoints
    if a.pairs:
        grid = [MaskConfig(dilation=d, output_dilation=d_out) for d, d_out in a.pairs]
    results: dict[str, dict[str, list[dict[str, float]]]] = {k: {} for k in models}
    for earlier in a.merge:
        doc = json.loads(earlier.read_text())
        if (doc["model"], doc["scale"], Path(doc["weights"]).name) != (a.model, a.scale, a.weights.name):
            raise SystemExit(f"{earlier}: another model or checkpoint ({doc['model']} x{doc['scale']}, {doc['weights']})")
        for label, per_set in zip(results, doc["results"].values()):  # training-free first, then fine-tuned
            results[label].update(per_set)
    for folder in a.sets:
        set_name = Path(folder).parent.name
        pairs = [load_pair(p, a.scale) for p in find_pairs(folder)]
        for label, model in models.items():
            points = score_grid(model, pairs, grid, reference=original)
            results[label][set_name] = [p.to_json() | {"config": p.config.to_json()} for p in points]
            for p in points:
                c = p.config
                print(f"{set_name} {label}: d {c.dilation}/{c.output_dilation} thr {c.window_threshold}: "
                      f"loss {p.loss_db:+.3f} (worst {p.worst_db:+.3f}) saved {p.saved:.3f}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps({"model": a.model, "scale": a.scale, "weights": str(a.weights),
                                                      "results": results}, indent=1) + "\n")
    plot(a.out.with_suffix(".png"), f"{a.model} x{a.scale}", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
