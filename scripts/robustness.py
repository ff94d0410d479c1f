"""Dense vs AMSR under degraded LR inputs: Gaussian noise (σ on 0–255) and JPEG, applied to the benchmark LR.

For each set × degradation: dense PSNR/SSIM against HR, and per AMSR setting the PSNR, the network-mask
density and (blend) output-mask density and effective GMACs saved. ``+nafix`` settings use
``amsr.masking.mask.noise_aware_base_mask`` (pre-smoothing scaled by the estimated noise σ) instead of the plain mask.
Writes results/robustness.json.

    python scripts/robustness.py [--model carn_m] [--scale 4] [--sets Set5 Set14]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch

from amsr.core import paths
from amsr.cli.common import write_json
from amsr.core.cost import run_counting_macs
from amsr.io.images import to_tensor, to_uint8
from amsr.io.metrics import psnr_y
from amsr.masking.mask import MaskConfig, dilate, estimate_noise_sigma, noise_aware_base_mask
from amsr.models import load_model, unwrap_accelerated
from amsr.tools.evaluate import find_pairs, load_pair

DEGRADATIONS = ["clean", "noise10", "noise25", "jpeg30", "jpeg60"]
SETTINGS = {"d1": MaskConfig(dilation=1), "blend_d4_o2": MaskConfig(dilation=4, output_dilation=2)}


def degrade(lr: np.ndarray, kind: str, seed: int) -> np.ndarray:
    if kind == "clean":
        return lr
    if kind.startswith("noise"):
        sigma = float(kind[5:])
        rng = np.random.default_rng(seed)
        return np.clip(lr.astype(np.float64) + rng.normal(0, sigma, lr.shape), 0, 255).round().astype(np.uint8)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(lr).save(buf, format="JPEG", quality=int(kind[4:]))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).copy()


@torch.no_grad()
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="carn_m")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    p.add_argument("--degradations", nargs="+", default=DEGRADATIONS)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--out", type=Path, default=Path("results/robustness.json"))
    a = p.parse_args()
    model = load_model(a.model, a.scale, allow_download=False)
    dense = model.dense()
    accs = {k: model.accelerated(SETTINGS[k]) for k in a.settings}
    doc = {"model": a.model, "scale": a.scale, "settings": {k: str(c) for k, c in SETTINGS.items()}, "results": {}}
    for set_name in a.sets:
        pairs = [load_pair(pp, a.scale) for pp in find_pairs(paths.data_dir() / set_name / f"x{a.scale}")]
        for kind in a.degradations:
            rows: dict[str, list[list[float]]] = {}
            for idx, (lr0, hr) in enumerate(pairs):
                lr = degrade(lr0, kind, idx)
                x = to_tensor(lr)
                y, dm = run_counting_macs(dense, x)
                dp = psnr_y(to_uint8(y), hr, a.scale)
                rows.setdefault("dense", []).append([dp, float(estimate_noise_sigma(x))])
                for k, acc in accs.items():
                    inner = unwrap_accelerated(acc)
                    for fix in (False, True):
                        if fix:
                            c = inner.config
                            base = noise_aware_base_mask(x, c)
                            m = dilate(base, c.dilation)
                            mo = dilate(base, c.output_dilation) if c.output_dilation is not None else None
                            y, mac = run_counting_macs(_Call(inner, m, mo), x)
                        else:
                            y, mac = run_counting_macs(acc, x)
                        ap = psnr_y(to_uint8(y), hr, a.scale)
                        od = float(inner.last_output_mask.mean()) if inner.last_output_mask is not None else None
                        rows.setdefault(k + ("+nafix" if fix else ""), []).append(
                            [ap - dp, float(inner.last_mask.mean()), od if od is not None else float("nan"),
                             1 - mac / dm])
            res = {"dense_psnr": float(np.mean([r[0] for r in rows["dense"]])),
                   "noise_sigma_est": float(np.mean([r[1] for r in rows["dense"]]))}
            for k, r in rows.items():
                if k == "dense":
                    continue
                arr = np.array(r, dtype=float)
                res[k] = {"dpsnr": float(arr[:, 0].mean()), "density": float(arr[:, 1].mean()),
                          "output_density": None if np.isnan(arr[:, 2]).all() else float(np.nanmean(arr[:, 2])),
                          "saved": float(arr[:, 3].mean())}
            doc["results"].setdefault(set_name, {})[kind] = res
            write_json(a.out, doc)
            print(set_name, kind, {k: (round(v["dpsnr"], 3), round(v["density"], 2)) if isinstance(v, dict) else round(v, 2)
                                   for k, v in res.items()}, flush=True)
    return 0


class _Call(torch.nn.Module):
    """Runs an AcceleratedSR with given masks (so that run_counting_macs hooks see its layers)."""

    def __init__(self, inner, mask, output_mask):  # type: ignore[no-untyped-def]
        super().__init__()
        self.inner, self.mask, self.output_mask = inner, mask, output_mask

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.inner(x, mask=self.mask, output_mask=self.output_mask)


if __name__ == "__main__":
    sys.exit(main())
