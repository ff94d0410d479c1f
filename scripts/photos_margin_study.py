"""The blend-margin study behind ``amsr.operating_point.MIN_BLEND_MARGIN``: (d_net, d_out) pairs of a x4 model's
shipped default on Photos2K, ΔPSNR-Y against the dense model per image (PyTorch, the dense reference mode
of the masked layers: the same values as the sparse path, faster on CPU), and the output-mask density.

    python scripts/photos_margin_study.py ../shared/data/Photos2K/x4 4/3 6/3 8/3 6/2 8/2 > margin.txt
    python scripts/photos_margin_study.py --model imdtn ../shared/data/Photos2K/x4 6/3 6/3@0.01

Output (``results/eval/photos/carn_m_x4_photos2k_margin.txt``, ``imdtn_x4_photos2k_margin.txt``): one line per
image, then per pair the mean and the worst ΔPSNR, the mean output-mask density and the GMACs ratio (1.00 in
the dense reference mode, which computes everything; ``--mode sparse`` for the realised ratio).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import torch

from amsr.models import load_model, unwrap_accelerated
from amsr.operating_point import default_operating_point
from amsr.tools.evaluate import find_pairs, load_pair, score


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="carn_m", help="x4 zoo model (default %(default)s)")
    ap.add_argument("data", help="folder with HR/ and LR/")
    ap.add_argument("pairs", nargs="+", help="D_NET/D_OUT[@WINDOW_THRESHOLD]")
    ap.add_argument("--mode", default="dense", choices=("dense", "sparse"),
                    help="masked layers' execution: dense reference (same values, faster for CNNs on CPU; "
                         "reports dense MACs) or sparse (realised MACs; windows are faster so) (default %(default)s)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    data, name = a.data, a.model
    pairs = [(*map(int, s.split("@")[0].split("/")), float(s.split("@")[1]) if "@" in s else None)
             for s in a.pairs]
    model = load_model(name, 4)
    base = default_operating_point(name, 4)
    assert base is not None
    dense = model.dense()
    accs = {pr: model.accelerated(dataclasses.replace(base, dilation=pr[0], output_dilation=pr[1],
                                                      window_threshold=base.window_threshold if pr[2] is None else pr[2]),
                                  mode=a.mode, sparse_tail=False) for pr in pairs}
    res: dict[tuple[object, ...], list[tuple[float, float, float]]] = {pr: [] for pr in pairs}
    for p in find_pairs(data):
        lr, hr = load_pair(p, 4)
        with torch.no_grad():
            d = score(dense, lr, hr, 4)
            line = f"{p.name:14s}"
            for pr, acc in accs.items():
                inner = unwrap_accelerated(acc)
                s = score(acc, lr, hr, 4, density_of=lambda: float(inner.last_output_mask.mean()))  # type: ignore[union-attr]
                assert s.density is not None
                res[pr].append((s.psnr_y - d.psnr_y, s.density, s.gmacs / d.gmacs))
                line += (f" {pr[:2] if pr[2] is None else pr}: {s.psnr_y - d.psnr_y:+.3f} o{s.density:.2f}"
                         f" g{s.gmacs / d.gmacs:.2f}")
        print(line, flush=True)
    for pr, r in res.items():
        print(pr[:2] if pr[2] is None else pr, f"mean {statistics.mean(x[0] for x in r):+.3f} min {min(x[0] for x in r):+.3f} "
                  f"output density {statistics.mean(x[1] for x in r):.3f} "
                  f"GMACs ratio {statistics.mean(x[2] for x in r):.3f} (mean of images)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
