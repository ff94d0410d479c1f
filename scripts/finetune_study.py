"""Fine-tuned vs training-free: per image ΔPSNR-Y against the *original* dense network (the one a user would
otherwise run), for the original and each fine-tuned checkpoint under one mask setting, and the effective
GMACs ratio (realised mask, sparse path).

    python scripts/finetune_study.py --model carn_m --dilation 1 ft_a.pth ft_b.pth \\
        --sets ../shared/data/Set5/x4 ../shared/data/Set14/x4 > results/finetune/carn_m_x4_d1.txt

One line per image, then per set and checkpoint the mean and the worst ΔPSNR and the mean GMACs ratio.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from amsr.masking.mask import MaskConfig
from amsr.models import load_model
from amsr.tools.evaluate import find_pairs, load_pair, score


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", nargs="*", type=Path, help="fine-tuned checkpoints (the original is always scored)")
    ap.add_argument("--model", default="carn_m")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--dilation", type=int, default=1)
    ap.add_argument("--output-dilation", type=int)
    ap.add_argument("--window-threshold", type=float, default=0.5)
    ap.add_argument("--hf-floor", type=float)
    ap.add_argument("--sets", nargs="+", required=True, help="folders with HR/ and LR/")
    a = ap.parse_args()
    torch.set_num_threads(2)
    config = MaskConfig(dilation=a.dilation, output_dilation=a.output_dilation, window_threshold=a.window_threshold,
                        hf_floor=a.hf_floor)
    base = load_model(a.model, a.scale)
    dense = base.dense()
    models = {"original": base.accelerated(config)}
    for w in a.weights:
        models[w.stem] = load_model(a.model, a.scale, weights=w).accelerated(config)
    print(f"{a.model} x{a.scale} {config.to_json()}: ΔPSNR-Y vs the original dense network, GMACs ratio")
    for folder in a.sets:
        res: dict[str, list[tuple[float, float]]] = {k: [] for k in models}
        for p in find_pairs(folder):
            lr, hr = load_pair(p, a.scale)
            with torch.no_grad():
                d = score(dense, lr, hr, a.scale)
                line = f"{Path(folder).parent.name}/{p.name:14s} dense {d.psnr_y:.3f}"
                for k, acc in models.items():
                    s = score(acc, lr, hr, a.scale)
                    res[k].append((s.psnr_y - d.psnr_y, s.gmacs / d.gmacs))
                    line += f"  {k}: {s.psnr_y - d.psnr_y:+.3f} g{s.gmacs / d.gmacs:.2f}"
            print(line, flush=True)
        for k, r in res.items():
            deltas = [x for x, _ in r]
            print(f"{Path(folder).parent.name} {k}: mean {statistics.mean(deltas):+.3f} dB, worst {min(deltas):+.3f}, "
                  f"GMACs ratio {statistics.mean(g for _, g in r):.3f} ({len(r)} images)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
