"""Issue #13's check on Photos2K: the shipped default operating point run as ``amsr-upscale`` runs it (tiled
at 512 px, or at half the image when it fits one tile) against ``--tile 0`` and against the dense model.

    python scripts/photos_fidelity.py [--model carn_m --scale 4] [--json results/fidelity/photos2k.json]
                                      [--sheets DIR]

Per image: max |tiled − untiled| in 8-bit levels, PSNR against dense (whole and flat region), the worst
32×32 block; PASSED/FAILED against ``runtime.fidelity.FidelityThresholds``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from amsr import paths
from amsr.images import list_images, read_rgb8, save_png
from amsr.models import load_model
from amsr.operating_point import default_operating_point
from amsr.runtime.fidelity import FidelityThresholds, contact_sheet, dense_reference, production_tile, score_image
from amsr.runtime.onnxrt import OrtUpscaler
from amsr.runtime.upscaler import Upscaler, exported_model_path


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
    config = default_operating_point(a.model, a.scale)
    onnx = exported_model_path(a.model, a.scale, mask=config)
    dense_net = load_model(a.model, a.scale).dense()
    folder = a.data or paths.data_dir() / "Photos2K" / f"x{a.scale}" / "LR"
    thresholds = FidelityThresholds()
    ort = OrtUpscaler(onnx, threads=a.threads)
    rows = []
    for f in list_images(folder):
        lr = read_rgb8(f)
        tile = production_tile(lr.shape[:2], a.tile)
        tiled = Upscaler.from_onnx(onnx, threads=a.threads, tile=tile)(lr)
        whole = Upscaler.from_onnx(onnx, threads=a.threads)(lr)
        x = lr.transpose(2, 0, 1)[None].astype(np.float32) / 255
        dense = dense_reference(dense_net, x)
        dense_u8 = np.rint(np.clip(dense[0], 0, 1).transpose(1, 2, 0) * 255).astype(np.uint8)
        masks = ort.masks(x)
        flat = masks.get("mask/output", masks["mask"])[0, 0] == 0
        r = score_image(f.name, tiled, dense_u8, flat, a.scale, tile)
        levels = int(np.abs(tiled.astype(np.int16) - whole.astype(np.int16)).max())
        fails = r.failures(thresholds)
        b = r.worst_blocks[0]
        print(f"{f.name} {lr.shape[1]}×{lr.shape[0]} tile {tile}: tiled vs untiled max {levels} level(s); "
              f"vs dense {r.psnr_db:.2f} dB, flat {r.flat_psnr_db if r.flat_psnr_db is None else round(r.flat_psnr_db, 2)}"
              f" dB ({r.flat_fraction:.2f} of px); worst block ({b.y},{b.x}) {b.psnr_db:.2f} dB"
              f" {'PASSED' if not fails else 'FAILED: ' + '; '.join(fails)}", flush=True)
        rows.append({**r.to_json(), "tiled_vs_untiled_max_levels": levels, "passed": not fails})
        if a.sheets:
            save_png(a.sheets / f"{f.stem}_sheet.png", contact_sheet(dense_u8, tiled, r.worst_blocks))
    ok = all(r["passed"] for r in rows)
    print("PASSED" if ok else "FAILED", f"({sum(r['passed'] for r in rows)}/{len(rows)} images)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"model": a.model, "scale": a.scale, "config": config.__dict__ if config else None,
                                      "thresholds": thresholds.__dict__, "images": rows}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
