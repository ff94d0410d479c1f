"""Main job: dense vs AMSR quality and effective GMACs for every zoo model with local weights.

For each model × scale × set, the dense model runs once per image and the accelerated model once per
dilation of the sweep; results go to ``results/eval/<model>_x<scale>_<set>.json`` (amsr-eval's contract,
one ``amsr`` entry per dilation under ``sweep``) and a Markdown table to ``results/eval_table.md``.

    python scripts/eval_table.py [--models carn_m imdn ...] [--sets Set5 Set14] [--dilations 0 1 2 4]
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from amsr import paths
from amsr.cli.common import write_json
from amsr.errors import AmsrError
from amsr.evaluate import find_pairs, load_pair, score, _mean
from amsr.files import save_bytes
from amsr.mask import MaskConfig
from amsr.models import load_model, unwrap_accelerated
from amsr.zoo import get_architecture

DEFAULT_MODELS = ["carn_m", "imdn", "pan", "fsrcnn", "imdtn", "hit_srf", "ngswin"]


@torch.no_grad()
def sweep(name: str, scale: int, set_name: str, dilations: list[int]) -> dict[str, object]:
    model = load_model(name, scale, allow_download=False)
    pairs = find_pairs(paths.data_dir() / set_name / f"x{scale}")
    dense = model.dense()
    accs = {d: model.accelerated(MaskConfig(dilation=d)) for d in dilations}
    dense_rows, acc_rows = [], {d: [] for d in dilations}
    for pair in tqdm(pairs, desc=f"{name} x{scale} {set_name}", unit="img", file=sys.stderr):
        lr, hr = load_pair(pair, scale)
        dense_rows.append(score(dense, lr, hr, scale))
        for d, acc in accs.items():
            inner = unwrap_accelerated(acc)
            acc_rows[d].append(score(acc, lr, hr, scale, lambda inner=inner: float(inner.last_mask.mean())))
    return {"model": name, "scale": scale, "set": set_name, "images": len(pairs),
            "dense": asdict(_mean(dense_rows)),
            "sweep": [{"dilation": d, **asdict(_mean(rows))} for d, rows in acc_rows.items()]}


def table(results: list[dict[str, object]]) -> str:
    lines = ["| model | scale | set | dense PSNR/SSIM | GMACs | dilation | AMSR PSNR/SSIM | ΔPSNR | density | GMACs saved |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        dense = r["dense"]
        for s in r["sweep"]:
            saved = 100 * (1 - s["gmacs"] / dense["gmacs"])
            lines.append(f"| {r['model']} | x{r['scale']} | {r['set']} | {dense['psnr_y']:.2f} / {dense['ssim_y']:.4f} "
                         f"| {dense['gmacs']:.2f} | {s['dilation']} | {s['psnr_y']:.2f} / {s['ssim_y']:.4f} "
                         f"| {s['psnr_y'] - dense['psnr_y']:+.2f} | {s['density']:.2f} | {saved:.1f}% |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    p.add_argument("--dilations", nargs="+", type=int, default=[0, 1, 2, 4])
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--from-json", type=Path, nargs="+", help="only rebuild the table from these result files")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.from_json:
        import json

        results = sorted((json.loads(f.read_text()) for f in args.from_json),
                         key=lambda r: (args.models.index(r["model"]) if r["model"] in args.models else 99,
                                        r["scale"], len(r["set"]), r["set"]))
        print(table(results))
        return 0
    results = []
    for name in args.models:
        for scale in args.scales:
            if scale not in get_architecture(name).scales:
                continue
            for set_name in args.sets:
                try:
                    r = sweep(name, scale, set_name, args.dilations)
                except AmsrError as e:
                    print(f"skipped {name} x{scale} {set_name}: {e}", file=sys.stderr)
                    continue
                write_json(args.out / "eval" / f"{name}_x{scale}_{set_name}.json", r)
                results.append(r)
    save_bytes(args.out / "eval_table.md", table(results).encode())
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
