"""Issue #13's check on Photos2K: the shipped default operating point run as ``amsr-upscale`` runs it (tiled
at 512 px, or at half the image when it fits one tile) against ``--tile 0`` and against the dense model.

    python scripts/photos_fidelity.py [--model carn_m --scale 4] [--json results/fidelity/photos2k.json]
                                      [--sheets DIR]

Per image: max |tiled − untiled| in 8-bit levels, PSNR against dense (whole and flat region), the worst
32×32 block; PASSED/FAILED against ``runtime.fidelity.FidelityThresholds``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from amsr.core import paths
from amsr.cli.common import write_json
from amsr.core.files import check_writable
from amsr.io.images import list_images
from amsr.models import load_model
from amsr.operating_point import default_operating_point
from amsr.runtime.fidelity import FidelityThresholds, check_fidelity, fidelity_line, fidelity_report
from amsr.runtime.upscaler import exported_model_path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="carn_m")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--data", type=Path, default=None, help="LR folder (default Photos2K/x<scale>/LR)")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--sheets", type=Path, help="write a contact sheet per image here")
    a = p.parse_args()
    if a.json:
        check_writable(a.json, "--json")
    config = default_operating_point(a.model, a.scale)
    onnx = exported_model_path(a.model, a.scale, mask=config)
    dense_net = load_model(a.model, a.scale).dense()
    folder = a.data or paths.data_dir() / "Photos2K" / f"x{a.scale}" / "LR"
    thresholds = FidelityThresholds()
    rows = []
    for r in check_fidelity(onnx, list_images(folder), dense_net, tile=a.tile, threads=a.threads, sheets=a.sheets):
        print(fidelity_line(r, thresholds), flush=True)
        rows.append(r)
    report = fidelity_report(rows, thresholds)
    print("PASSED" if report["passed"] else "FAILED",
          f"({sum(i['passed'] for i in report['images'])}/{len(rows)} images)")
    if a.json:
        write_json(a.json, {"model": a.model, "scale": a.scale, "config": config.__dict__ if config else None,
                            **report})
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
