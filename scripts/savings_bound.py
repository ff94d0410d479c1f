"""What any weights could reach under the output blend: per output dilation, the quality a *perfect* network
would give (the original dense output where the output mask keeps the network, bicubic elsewhere: the
bicubic pixels do not depend on the weights, so no fine-tuning can lose less) and the most compute any
weights could save there (the body at d_net 0, the 2-means mask itself, and the tail on the output mask,
effective GMACs of the realised masks against dense). Without a blend the tail runs densely: the ceiling is
the body at d_net 0.

    python scripts/savings_bound.py --model carn_m --scale 4 \\
        --sets ../shared/data/Set14/x4 ../shared/data/Photos2K/x4 > results/finetune/carn_m_x4_bound.txt

One line per image, then per set and output dilation the mean and the worst ΔPSNR-Y of the perfect-network
blend against dense and the mean of the saved fraction.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from amsr.core.cost import run_counting_macs
from amsr.io.images import to_tensor, to_uint8
from amsr.io.metrics import psnr_y
from amsr.masking.mask import MaskConfig, MaskGenerator
from amsr.models import load_model
from amsr.surgery import blend_output
from amsr.tools.evaluate import find_pairs, load_pair


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="carn_m")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--output-dilations", type=int, nargs="+", default=[0, 1, 2, 3, 6])
    ap.add_argument("--sets", nargs="+", required=True, help="folders with HR/ and LR/")
    a = ap.parse_args()
    torch.set_num_threads(2)
    base = load_model(a.model, a.scale)
    dense = base.dense()
    blends: list[int | None] = [None, *a.output_dilations]
    # The body's ceiling: d_net 0; ``accelerated`` admits d_out > d_net (fine-tuned weights may use it).
    lowest = {d: base.accelerated(MaskConfig(dilation=0, output_dilation=d)) for d in blends}
    masks = MaskGenerator(MaskConfig(dilation=0))
    print(f"{a.model} x{a.scale}: perfect-network blend ΔPSNR-Y vs dense, saved GMACs at d_net 0 "
          "(none = no blend, the tail dense)")
    for folder in a.sets:
        res: dict[int | None, list[tuple[float, float]]] = {d: [] for d in blends}
        for p in find_pairs(folder):
            lr, hr = load_pair(p, a.scale)
            x = to_tensor(lr)
            with torch.no_grad():
                y, dense_macs = run_counting_macs(dense, x)
                ref = psnr_y(to_uint8(y), hr, a.scale)
                line = f"{Path(folder).parent.name}/{p.name:14s} dense {ref:.3f}"
                for d in blends:
                    if d is None:
                        loss = 0.0
                    else:
                        _, m_out = masks(x, output_dilation=d)
                        loss = psnr_y(to_uint8(blend_output(x, y, m_out)), hr, a.scale) - ref
                    _, macs = run_counting_macs(lowest[d], x)
                    res[d].append((loss, 1 - macs / dense_macs))
                    line += f"  o{'-' if d is None else d}: {loss:+.3f} s{1 - macs / dense_macs:.2f}"
            print(line, flush=True)
        for d, r in res.items():
            losses = [x for x, _ in r]
            print(f"{Path(folder).parent.name} d_out {'none' if d is None else d}: perfect network "
                  f"mean {statistics.mean(losses):+.3f} dB, worst {min(losses):+.3f}; saved at most "
                  f"{statistics.mean(s for _, s in r):.1%} ({len(r)} images)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
