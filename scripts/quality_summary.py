"""Markdown table of every results/quality/<model>_x<scale>.json point → results/quality/summary.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "results/quality")
    lines = ["| model | set | d_net | d_out | window thr | ΔPSNR-Y (dB) | ΔSSIM-Y | net density | out density "
             "| windows | GMACs (dense) | GMACs saved |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in sorted(root.glob("*_x*.json")):
        d = json.loads(f.read_text())
        if "sets" not in d:
            continue
        for set_name, pts in d["sets"].items():
            for p in sorted(pts, key=lambda q: -q["saved"]):
                c = p["config"]
                od = "—" if p["output_density"] is None else f"{p['output_density']:.2f}"
                win = "—" if p.get("windows") is None else f"{p['windows']:.2f}"
                lines.append(f"| {d['model']} x{d['scale']}{' (dense-tail count)' if 'dense_tail' in f.name else ''} "
                             f"| {set_name} | {c['dilation']} | {c['output_dilation']} | {c['window_threshold']} "
                             f"| {-p['loss_db']:+.3f} | {-p['ssim_loss']:+.4f} | {p['density']:.2f} | {od} | {win} "
                             f"| {p['gmacs']:.2f} ({p['dense_gmacs']:.2f}) | {100 * p['saved']:.1f}% |")
    (root / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
