"""The high-frequency floor (``MaskConfig.hf_floor``) at one mask setting: per image Y-PSNR loss against the
model's dense output and GMACs saved, without a floor and with each floor, on the 20 calibration crops
``amsr-calibrate`` takes from the training folder and on any test sets given.

    python scripts/hf_floor_study.py --model carn_m --scale 4 --dilation 6 --output-dilation 3 \\
        --floors 0.04 --sets ../shared/data/Set14/x4 ../shared/data/Photos2K/x4 > results/quality/hf_floor_carn_m_x4.txt

One line per image, then per set and floor the mean and worst loss and the GMACs saved (1 − total / dense total).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

import torch

from amsr.core import paths
from amsr.io.images import list_images
from amsr.masking.mask import MaskConfig
from amsr.models import load_model
from amsr.tools.calibrate import calibration_sample, load_calibration
from amsr.tools.evaluate import find_pairs, load_pair, score


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="carn_m")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--dilation", type=int, default=6)
    ap.add_argument("--output-dilation", type=int, default=3)
    ap.add_argument("--window-threshold", type=float, default=0.5)
    ap.add_argument("--floors", type=float, nargs="+", default=[0.04])
    ap.add_argument("--sets", nargs="*", default=[], help="folders with HR/ and LR/")
    a = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(a.model, a.scale)
    dense = model.dense()
    base = MaskConfig(dilation=a.dilation, output_dilation=a.output_dilation, window_threshold=a.window_threshold)
    floors: list[float | None] = [None, *a.floors]
    nets = {f: model.accelerated(replace(base, hf_floor=f)) for f in floors}
    train = paths.data_dir() / "train"
    names = [f"{p.parent.name}/{p.name}" for p in calibration_sample(list_images(train, recursive=True), 20)]
    sets = {"calibration crops": list(zip(names, load_calibration(train, a.scale, 20, 128)))}
    for folder in a.sets:
        sets[Path(folder).parent.name] = [(p.name, load_pair(p, a.scale)) for p in find_pairs(folder)]
    print(f"{a.model} x{a.scale} {base.to_json()}: Y-PSNR loss vs dense (dB), GMACs saved, per hf_floor")
    with torch.no_grad():
        for set_name, pairs in sets.items():
            rows: dict[float | None, list[tuple[float, float, float]]] = {f: [] for f in floors}
            for name, (lr, hr) in pairs:
                d = score(dense, lr, hr, a.scale)
                line = f"{set_name}/{name:16s}"
                for f, net in nets.items():
                    s = score(net, lr, hr, a.scale)
                    rows[f].append((d.psnr_y - s.psnr_y, s.gmacs, d.gmacs))
                    line += f"  floor {f}: {d.psnr_y - s.psnr_y:.3f} dB, {100 * (1 - s.gmacs / d.gmacs):.0f} %"
                print(line, flush=True)
            for f, r in rows.items():  # saved as calibration counts it: 1 − total GMACs / total dense GMACs
                saved = 1 - sum(g for _, g, _ in r) / sum(g for _, _, g in r)
                print(f"{set_name} floor {f}: loss mean {statistics.mean(x for x, _, _ in r):.3f} dB, worst "
                      f"{max(x for x, _, _ in r):.3f}, saved {100 * saved:.1f} % ({len(r)} images)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
