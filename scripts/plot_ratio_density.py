"""Time ratio (accelerated / dense) against mask density, per image, from amsr-bench reports: where does
sparse start to pay? Writes an SVG scatter (no plotting library needed) and prints a least-squares line.

    python scripts/plot_ratio_density.py results/bench/photos/carn_m_x4_photos2k_default_rows.json \\
        results/bench/photos/carn_m_x4_set14_default_rows.json --out results/bench/photos/ratio_vs_density.svg
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
W, H, PAD = 640, 420, 56


def _points(report: Path) -> list[tuple[float, float]]:
    r = json.loads(report.read_text())
    return [(float(i["density"]), float(i["ratio"])) for i in r["per_image"]]


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line ratio = a + b·density."""
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    b = sum((p[0] - mx) * (p[1] - my) for p in points) / sxx if sxx else 0.0
    return my - b * mx, b


def svg(series: dict[str, list[tuple[float, float]]], y_max: float) -> str:
    def sx(d: float) -> float:
        return PAD + d * (W - 2 * PAD)

    def sy(r: float) -> float:
        return H - PAD - r / y_max * (H - 2 * PAD)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="black"/>',
           f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="black"/>',
           f'<line x1="{PAD}" y1="{sy(1):.1f}" x2="{W - PAD}" y2="{sy(1):.1f}" stroke="grey" stroke-dasharray="4 3"/>',
           f'<text x="{W - PAD - 70}" y="{sy(1) - 4:.1f}" fill="grey">dense = 1</text>',
           f'<text x="{W / 2 - 60}" y="{H - 16}">mask density (network mask)</text>',
           f'<text x="14" y="{PAD - 16}">time ratio (accelerated incl. mask / dense)</text>']
    for k in range(0, 11, 2):
        d = k / 10
        out.append(f'<text x="{sx(d) - 8:.1f}" y="{H - PAD + 16}">{d:.1f}</text>')
    steps = max(1, int(y_max / 0.5))
    for k in range(steps + 1):
        r = k * 0.5
        out.append(f'<text x="{PAD - 30}" y="{sy(r) + 4:.1f}">{r:.1f}</text>')
    for (_, pts), colour in zip(series.items(), COLOURS):
        for d, r in pts:
            out.append(f'<circle cx="{sx(d):.1f}" cy="{sy(min(r, y_max)):.1f}" r="4" fill="{colour}" fill-opacity="0.8"/>')
        a, b = fit(pts)
        out.append(f'<line x1="{sx(0):.1f}" y1="{sy(a):.1f}" x2="{sx(1):.1f}" y2="{sy(min(a + b, y_max)):.1f}" '
                   f'stroke="{colour}" stroke-width="1"/>')
    for i, (name, colour) in enumerate(zip(series, COLOURS)):
        out.append(f'<circle cx="{PAD + 14}" cy="{PAD + 10 + 18 * i}" r="4" fill="{colour}"/>'
                   f'<text x="{PAD + 24}" y="{PAD + 14 + 18 * i}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    series = {r.stem: _points(r) for r in a.reports}
    every = [pt for pts in series.values() for pt in pts]
    a0, b0 = fit(every)
    print(f"all {len(every)} images: ratio ≈ {a0:.3f} + {b0:.3f}·density; equals 1 at density {(1 - a0) / b0:.3f}"
          if b0 else "no slope")
    for name, pts in series.items():
        a1, b1 = fit(pts)
        print(f"{name}: {len(pts)} images, ratio ≈ {a1:.3f} + {b1:.3f}·density")
    y_max = max(2.0, min(4.0, max(r for _, r in every) * 1.05))
    a.out.write_text(svg(series, y_max))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
