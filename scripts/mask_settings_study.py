"""Why the mask uses a 5×5, σ = 1.5 blur: ΔPSNR and density of CARN-M x4 on Set5 for three blurs.

    python scripts/mask_settings_study.py [--out results/mask_settings.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from amsr.core import paths
from amsr.cli.common import write_json
from amsr.masking.mask import MaskConfig
from amsr.models import load_model, unwrap_accelerated
from amsr.tools.evaluate import find_pairs, load_pair, score

BLURS = [(3, 0.8), (5, 1.5), (7, 2.5)]
MODES = [{"dilation": 1}, {"dilation": 4, "output_dilation": 2}]


@torch.no_grad()
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("results/mask_settings.json"))
    args = p.parse_args()
    model = load_model("carn_m", 4, allow_download=False)
    pairs = [load_pair(pair, 4) for pair in find_pairs(paths.data_dir() / "Set5" / "x4")]
    dense = float(np.mean([score(model.dense(), lr, hr, 4).psnr_y for lr, hr in pairs]))
    rows = []
    for size, sigma in BLURS:
        for mode in MODES:
            acc = model.accelerated(MaskConfig(blur_size=size, blur_sigma=sigma, **mode))
            inner = unwrap_accelerated(acc)
            s = [score(acc, lr, hr, 4, lambda: float(inner.last_mask.mean())) for lr, hr in pairs]
            rows.append({"blur_size": size, "blur_sigma": sigma, **mode,
                         "delta_psnr": float(np.mean([x.psnr_y for x in s])) - dense,
                         "density": float(np.mean([x.density for x in s])),
                         "gmacs": float(np.mean([x.gmacs for x in s]))})
            print(rows[-1], file=sys.stderr)
    write_json(args.out, {"model": "carn_m", "scale": 4, "set": "Set5", "dense_psnr": dense, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
