"""The main job (``bash scripts/run.sh``): amsr end to end on its shipped defaults, in a few minutes on 2 cores.

1. export: CARN-M x4 at its shipped 0.05 dB operating point (the row graph, ``amsr.execution = rows``) and the
   dense reference graph, through the export cache ``Upscaler.from_model`` uses (``exported_model_path``,
   ``dense_fallback``; every export is verified against PyTorch before it is written); copies land in OUT.
2. parity: the graphs against their PyTorch references (``amsr.runtime.parity.compare_with_torch``, as
   ``amsr-parity``: max |Δ| ≤ 1e-4, identical masks, Y-PSNR within 0.001 dB): the accelerated graph on the
   Set5 images and a 160×240 centre crop of the first ``--parity-photos`` photos, the dense graph on Set5.
3. upscale: a few Photos2K x4 photos and Set5 x4 with onnxruntime on the CPU, the dense graph and the
   accelerated one as the product runs it (``Upscaler`` with ``auto``: the row graph where the mask density
   is ≤ ``amsr.sparse.auto.dense_above("rows")``, else the dense graph after the mask stage), interleaved per image in
   the same run (the order alternates per round), one warm-up round, median of ``--repeats`` rounds
   (``--small-repeats`` for Set5's small crops).
4. report: per image and per set — Y-PSNR against HR (``amsr.io.metrics.psnr_y``, ``scale`` px shaved) dense
   and accelerated, ΔPSNR, PSNR of the accelerated output against the dense one (8-bit RGB, whole image,
   ``amsr.runtime.fidelity.psnr_u8``), mask density, effective GMACs from the realised mask
   (``amsr.core.cost.run_counting_macs`` of what ran: the row program, or the dense network), time ratio
   accelerated / dense and the path ``auto`` ran. Printed as a table and written to OUT/report.md and
   OUT/report.json, with OUT/worst_blocks.png: the worst 32×32 blocks against dense (each image's worst, then
   the worst overall), dense | accelerated | |Δ|×8 | HR (``amsr.runtime.fidelity.contact_sheet``). Images
   where the accelerated run was slower than dense, or lost more than 0.05 dB, are named in the table and
   the report.

    python scripts/demo.py [--out out/demo] [--photos img_002.png ...] [--repeats 3] [--threads N]

The full research sweep (every zoo model × scale × set × dilation, hours) is ``bash scripts/sweep.sh``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from amsr.core import paths
from amsr.cli.common import quiet_export_noise
from amsr.core.errors import AmsrError

MODEL, SCALE = "carn_m", 4
# Two photos far below the rows' break-even (density ≈ 0.03 and 0.16), one right at it (0.39: rows, about as
# fast as dense) and one above it (0.65: auto runs the dense graph) — results/bench/photos.
DEFAULT_PHOTOS = ("img_002.png", "img_006.png", "img_007.png", "img_009.png")
QUALITY_BUDGET_DB = 0.05  # the shipped operating point's budget: a loss beyond it is named in the report
PHOTOS, SET5 = "Photos2K", "Set5"
# LR h×w of the photo crop parity runs on: the PyTorch reference of a whole photo takes about a minute on 2 cores,
# a crop this size seconds, and it keeps a photo's flat areas, which Set5's crops lack (the export itself was
# verified at two sizes; ``amsr-parity --data .../Photos2K/x4`` checks whole photos).
PARITY_CROP = (160, 240)


@dataclass
class DemoConfig:
    """What the demo runs. ``graphs``: already exported (accelerated, dense) files; skips the export (tests)."""

    out: Path = Path("out/demo")
    photos: tuple[str, ...] = DEFAULT_PHOTOS
    set5: int | None = None  # the first N Set5 images; None: all
    repeats: int = 3
    small_repeats: int = 5
    warmup: int = 1
    threads: int | None = None
    parity_photos: int = 1
    blocks: int = 4
    data: Path | None = None
    cache_dir: Path | None = None
    graphs: tuple[Path, Path] | None = None
    model: str = MODEL
    scale: int = SCALE


@dataclass(frozen=True)
class ParityInput:
    """One parity image: a Set5 image, or the centre crop of a photo (``PARITY_CROP``) with its HR crop."""

    set: str
    label: str
    lr: np.ndarray
    hr: np.ndarray


@dataclass
class Sample:
    """One image of the demo: its pair and what the run measured."""

    set: str
    name: str
    lr: np.ndarray
    hr: np.ndarray
    dense_out: np.ndarray | None = None
    amsr_out: np.ndarray | None = None
    path: str = ""
    dense_ms: list[float] = field(default_factory=list)
    amsr_ms: list[float] = field(default_factory=list)


def say(msg: str = "") -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------------- 1. export


def export_graphs(cfg: DemoConfig) -> dict[str, Any]:
    """The shipped default and the dense graph (cached exports), copied into ``cfg.out``."""
    from amsr.export.metadata import execution_field, read_metadata
    from amsr.core.files import save_with
    from amsr.operating_point import shipped_default_or_dense
    from amsr.runtime.upscaler import dense_fallback, export_cache_path, exported_model_path

    config, source = shipped_default_or_dense(cfg.model, cfg.scale)
    if config is None:
        raise AmsrError(f"{cfg.model} x{cfg.scale} has no shipped operating point ({(source or {}).get('reason')})")
    say(f"[1/4] export: {cfg.model} x{cfg.scale} at its shipped default: d_net {config.dilation}, d_out "
        f"{config.output_dilation}, window threshold {config.window_threshold:g} "
        f"({source.get('source')}, {source.get('budget_db')} dB budget)")
    t0 = time.perf_counter()
    if cfg.graphs is not None:
        acc, dense = cfg.graphs
        say(f"  using the given graphs {acc.name}, {dense.name}")
    else:
        cache = {"cache_dir": cfg.cache_dir}
        cached = export_cache_path(cfg.model, cfg.scale, mask=config, **cache).is_file()
        say(f"  accelerated graph: {'cached' if cached else 'exporting and verifying against PyTorch (~1 min, once)'}"
            f" under {cfg.cache_dir or paths.cache_dir() / 'onnx'}")
        acc = exported_model_path(cfg.model, cfg.scale, mask=config, **cache)
        dense = dense_fallback(acc, cfg.model, cfg.scale, **cache)
        if dense is None:  # not a row graph: auto has no dense fallback, but the demo still compares with dense
            dense = exported_model_path(cfg.model, cfg.scale, accelerated=False, **cache)
    meta = read_metadata(acc)
    copies = {}
    for kind, src in (("accelerated", acc), ("dense", dense)):
        dest = cfg.out / f"{cfg.model}_x{cfg.scale}_{'default' if kind == 'accelerated' else 'dense'}.onnx"
        save_with(dest, lambda tmp, src=src: shutil.copyfile(src, tmp))
        copies[kind] = str(dest)
        say(f"  {kind}: {dest} ({src.stat().st_size / 1e6:.1f} MB; cache {src})")
    export_s = time.perf_counter() - t0
    say(f"  execution of the accelerated graph: {execution_field(meta)}; {export_s:.1f} s")
    return {"config": config, "source": source, "accelerated": acc, "dense": dense, "copies": copies,
            "execution": execution_field(meta), "export_s": round(export_s, 1)}


# ----------------------------------------------------------------------------------------------- 2. parity


def check_parity(graphs: dict[str, Any], model: Any, inputs: Sequence[ParityInput]) -> list[dict[str, Any]]:
    """Both graphs against their PyTorch reference (``amsr-parity``'s references: the accelerated model in its
    dense execution mode, the dense model) through ``amsr.runtime.parity.compare_with_torch``: the accelerated
    graph on every input, the dense graph on the Set5 ones (PyTorch's grouped convs take seconds per photo)."""
    from amsr.io.images import to_tensor
    from amsr.runtime.parity import compare_with_torch

    small = [i for i in inputs if i.set == SET5] or list(inputs)
    references = (("accelerated", graphs["accelerated"], model.accelerated(graphs["config"], mode="dense"), inputs),
                  ("dense", graphs["dense"], model.dense(), small))
    say(f"[2/4] parity against PyTorch (atol 1e-4, masks identical, Y-PSNR within 0.001 dB): accelerated graph on "
        f"{len(inputs)} images, dense graph on {len(small)}")
    out = []
    for kind, onnx, reference, chosen in references:
        t0 = time.perf_counter()
        r = compare_with_torch(reference, onnx, [to_tensor(i.lr).numpy() for i in chosen],
                               names=[i.label for i in chosen], hr=[i.hr for i in chosen])
        say(f"  {kind}: {r.summary()} ({time.perf_counter() - t0:.1f} s)")
        out.append({"graph": kind, "passed": bool(r.passed), "max_abs_diff": float(r.max_abs_diff),
                    "psnr_diff_db": None if r.psnr_diff is None else float(r.psnr_diff),
                    "mask_mismatch_pixels": int(r.mask_mismatch_pixels), "atol": r.atol, "psnr_tol": r.psnr_tol,
                    "images": [{"name": row.name, "lr_size": list(row.shape[-2:]),
                                "max_abs_diff": float(row.max_abs_diff),
                                "mask_mismatch_pixels": int(row.mask_mismatch_pixels),
                                "psnr_diff_db": None if row.psnr_diff is None else float(row.psnr_diff)}
                               for row in r.rows]})
    return out


# ----------------------------------------------------------------------------------------------- 3. upscale


def upscale_and_time(cfg: DemoConfig, graphs: dict[str, Any], samples: list[Sample]) -> None:
    """Dense and accelerated ``Upscaler`` on every sample, interleaved per image, per set: warm-up rounds
    (whose outputs are kept), then timed rounds; the order of the two alternates from round to round."""
    from amsr.runtime.upscaler import RunOptions, Upscaler

    acc = Upscaler.from_options(graphs["accelerated"], RunOptions(threads=cfg.threads, dense_graph=graphs["dense"]))
    dense = Upscaler.from_options(graphs["dense"], RunOptions(threads=cfg.threads))
    say(f"[3/4] upscale with onnxruntime {'/'.join(acc.providers)}, threads "
        f"{cfg.threads or 'one per core'} ({os.cpu_count()} cores): dense vs accelerated (auto), interleaved")

    def timed(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        y = fn(x)
        return y, (time.perf_counter() - t0) * 1e3

    for set_name in dict.fromkeys(s.set for s in samples):
        group = [s for s in samples if s.set == set_name]
        repeats = cfg.small_repeats if set_name == SET5 else cfg.repeats
        t0 = time.perf_counter()
        for r in range(cfg.warmup + repeats):
            warm = r < cfg.warmup
            for s in group:
                order = ("dense", "amsr") if r % 2 == 0 else ("amsr", "dense")
                for kind in order:
                    y, ms = timed(dense if kind == "dense" else acc, s.lr)
                    if kind == "amsr":
                        ran = graphs["execution"] if acc.last_ran == "accelerated" else "dense"
                        if s.path and s.path != ran:
                            raise AmsrError(f"{s.name}: auto ran {ran} after {s.path} on the same image")
                        s.path = ran
                    if warm:
                        setattr(s, f"{kind}_out", y)
                    else:
                        getattr(s, f"{kind}_ms").append(ms)
            label = "warm-up" if warm else f"round {r - cfg.warmup + 1}/{repeats}"
            say(f"  {set_name}: {label} of {len(group)} images done ({time.perf_counter() - t0:.1f} s)")


# ----------------------------------------------------------------------------------------------- 4. report


def score(cfg: DemoConfig, model: Any, graphs: dict[str, Any], samples: list[Sample]) -> list[dict[str, Any]]:
    """Per-image rows: quality against HR and dense, effective GMACs of what ran, times and flags."""
    import torch

    from amsr.core.cost import run_counting_macs
    from amsr.io.images import to_tensor
    from amsr.io.metrics import psnr_y
    from amsr.masking.mask import MaskGenerator
    from amsr.models import unwrap_accelerated
    from amsr.runtime.fidelity import psnr_u8, worst_blocks
    from amsr.rows import row_program

    # The dense count on the meta device: shapes only, no arithmetic (the same hooks, the same numbers; PyTorch's
    # grouped convs take seconds per photo on 2 cores). A model the meta device cannot run is counted for real.
    dense_net = model.dense()
    meta_net = copy.deepcopy(dense_net).to("meta")

    def dense_count(x: torch.Tensor) -> int:
        try:
            return run_counting_macs(meta_net, x.to("meta"))[1]
        except (NotImplementedError, RuntimeError):
            return run_counting_macs(dense_net, x)[1]

    acc_net = model.accelerated(graphs["config"])
    program = row_program(unwrap_accelerated(acc_net)) if graphs["execution"] == "rows" else None
    what_runs = program if program is not None else acc_net  # what the exported graph computes
    gen = next(m for m in acc_net.modules() if isinstance(m, MaskGenerator))
    rows = []
    with torch.no_grad():
        for s in samples:
            x = to_tensor(s.lr)
            density = float(gen(x).mean())
            dense_macs = dense_count(x)
            amsr_macs = dense_macs if s.path == "dense" else run_counting_macs(what_runs, x)[1]
            assert s.dense_out is not None and s.amsr_out is not None
            p_dense, p_amsr = float(psnr_y(s.dense_out, s.hr, cfg.scale)), float(psnr_y(s.amsr_out, s.hr, cfg.scale))
            vs_dense = float(psnr_u8(s.amsr_out, s.dense_out))
            d_ms, a_ms = statistics.median(s.dense_ms), statistics.median(s.amsr_ms)
            delta = p_amsr - p_dense
            blocks = worst_blocks(s.amsr_out, s.dense_out, k=cfg.blocks)
            row = {"set": s.set, "image": s.name, "lr_size": [int(s.lr.shape[0]), int(s.lr.shape[1])],
                   "density": round(density, 4), "path": s.path,
                   "psnr_y_dense": round(p_dense, 4), "psnr_y_amsr": round(p_amsr, 4),
                   "delta_psnr_db": round(delta, 4),
                   "psnr_vs_dense_db": None if math.isinf(vs_dense) else round(vs_dense, 3),
                   "identical_to_dense": math.isinf(vs_dense),
                   "worst_block_vs_dense": asdict(blocks[0]) if blocks else None,
                   "gmacs_dense": round(dense_macs / 1e9, 4), "gmacs_amsr": round(amsr_macs / 1e9, 4),
                   "gmacs_ratio": round(amsr_macs / dense_macs, 4),
                   "dense_ms": round(d_ms, 2), "amsr_ms": round(a_ms, 2), "ratio": round(a_ms / d_ms, 4),
                   "dense_ms_runs": [round(t, 2) for t in s.dense_ms],
                   "amsr_ms_runs": [round(t, 2) for t in s.amsr_ms]}
            row["slower"] = bool(row["ratio"] > 1.0)
            row["quality_loss"] = bool(delta < -QUALITY_BUDGET_DB)
            rows.append(row)
    return rows


def set_means(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per set: means of the per-image numbers; the time ratio as Σ accelerated / Σ dense (amsr-bench's)."""
    out = {}
    for set_name in dict.fromkeys(r["set"] for r in rows):
        g = [r for r in rows if r["set"] == set_name]
        vs = [r["psnr_vs_dense_db"] for r in g if r["psnr_vs_dense_db"] is not None]
        dense_ms, amsr_ms = sum(r["dense_ms"] for r in g), sum(r["amsr_ms"] for r in g)
        delta = float(np.mean([r["delta_psnr_db"] for r in g]))
        out[set_name] = {
            "images": len(g), "density": round(float(np.mean([r["density"] for r in g])), 4),
            "paths": {p: sum(r["path"] == p for r in g) for p in ("rows", "dense") if any(r["path"] == p for r in g)},
            "psnr_y_dense": round(float(np.mean([r["psnr_y_dense"] for r in g])), 4),
            "psnr_y_amsr": round(float(np.mean([r["psnr_y_amsr"] for r in g])), 4),
            "delta_psnr_db": round(delta, 4),
            "psnr_vs_dense_db": round(float(np.mean(vs)), 3) if vs else None,  # over the images that differ
            "images_differing_from_dense": len(vs),
            "gmacs_dense": round(float(np.mean([r["gmacs_dense"] for r in g])), 4),
            "gmacs_amsr": round(float(np.mean([r["gmacs_amsr"] for r in g])), 4),
            "gmacs_ratio": round(sum(r["gmacs_amsr"] for r in g) / sum(r["gmacs_dense"] for r in g), 4),
            "dense_ms": round(dense_ms, 2), "amsr_ms": round(amsr_ms, 2), "ratio": round(amsr_ms / dense_ms, 4),
            "slower": bool(amsr_ms > dense_ms), "quality_loss": bool(delta < -QUALITY_BUDGET_DB)}
    return out


def note(r: dict[str, Any]) -> str:
    """The plain-words flag of a row: slower than dense, and/or more than the 0.05 dB budget lost."""
    parts = []
    if r["slower"]:
        parts.append(f"SLOWER than dense ({r['ratio']:.3f}×)")
    if r["quality_loss"]:
        parts.append(f"LOST {-r['delta_psnr_db']:.2f} dB (> {QUALITY_BUDGET_DB} dB)")
    return "; ".join(parts)


COLUMNS = ("set", "image", "LR h×w", "density", "path", "PSNR-Y dense", "PSNR-Y amsr", "ΔPSNR", "vs dense",
           "GMACs dense", "GMACs amsr", "dense ms", "amsr ms", "ratio", "note")


def table_rows(rows: list[dict[str, Any]], means: dict[str, dict[str, Any]]) -> list[list[str]]:
    """The table's cells: each image, then each set's mean (time: Σ, ratio Σ/Σ)."""
    def vs(v: float | None, identical: bool) -> str:
        return "identical" if identical else "—" if v is None else f"{v:.2f} dB"

    cells = []
    for r in rows:
        cells.append([r["set"], r["image"], f"{r['lr_size'][0]}×{r['lr_size'][1]}", f"{r['density']:.3f}", r["path"],
                      f"{r['psnr_y_dense']:.3f}", f"{r['psnr_y_amsr']:.3f}", f"{r['delta_psnr_db']:+.3f}",
                      vs(r["psnr_vs_dense_db"], r["identical_to_dense"]), f"{r['gmacs_dense']:.2f}",
                      f"{r['gmacs_amsr']:.2f}", f"{r['dense_ms']:.0f}", f"{r['amsr_ms']:.0f}", f"{r['ratio']:.3f}",
                      note(r)])
    for set_name, m in means.items():
        paths_ran = ", ".join(f"{p} ×{n}" for p, n in m["paths"].items())
        cells.append([set_name, f"mean of {m['images']}", "", f"{m['density']:.3f}", paths_ran,
                      f"{m['psnr_y_dense']:.3f}", f"{m['psnr_y_amsr']:.3f}", f"{m['delta_psnr_db']:+.3f}",
                      vs(m["psnr_vs_dense_db"], m["images_differing_from_dense"] == 0), f"{m['gmacs_dense']:.2f}",
                      f"{m['gmacs_amsr']:.2f}", f"Σ {m['dense_ms']:.0f}", f"Σ {m['amsr_ms']:.0f}",
                      f"{m['ratio']:.3f}", note(m)])
    return cells


def text_table(cells: list[list[str]]) -> str:
    widths = [max(len(c[i]) for c in [list(COLUMNS), *cells]) for i in range(len(COLUMNS))]
    def line(c: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip()
    return "\n".join([line(COLUMNS), line(["-" * w for w in widths]), *map(line, cells)])


def markdown_table(cells: list[list[str]]) -> str:
    def line(c: Sequence[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in c) + " |"
    return "\n".join([line(COLUMNS), "|" + "---|" * len(COLUMNS), *map(line, cells)])


def shortfalls(rows: list[dict[str, Any]], means: dict[str, dict[str, Any]]) -> list[str]:
    """One sentence per shortfall: slower than dense, quality beyond the budget (images and set means)."""
    lines = []
    for label, items in (("image", rows), ("set mean", [{"set": k, "image": "mean", **v} for k, v in means.items()])):
        for r in items:
            where = f"{r['set']} {r['image']}" if label == "image" else f"{r['set']} (mean of {r['images']})"
            path = f", path {r['path']}" if label == "image" else ""
            if r["slower"]:
                why = " (auto ran the mask stage, then the dense graph)" if r.get("path") == "dense" else ""
                lines.append(f"slower than dense: {where}{path}: {r['amsr_ms']:.0f} vs {r['dense_ms']:.0f} ms, "
                             f"ratio {r['ratio']:.3f}{why}")
            if r["quality_loss"]:
                lines.append(f"quality fell by more than {QUALITY_BUDGET_DB} dB: {where}{path}: "
                             f"{r['delta_psnr_db']:+.3f} dB against dense ({r['psnr_y_amsr']:.3f} vs "
                             f"{r['psnr_y_dense']:.3f} dB)")
    return lines


def worst_block_sheet(samples: list[Sample], k: int) -> tuple[np.ndarray, list[dict[str, Any]], str]:
    """``k`` worst 32×32 blocks of the accelerated output against dense (against HR when every output equals
    dense): the worst of each image that differs, then the next worst overall; grouped per image, worst image
    first: dense | accelerated | |Δ|×8 (``contact_sheet``) | HR."""
    from PIL import Image, ImageDraw

    from amsr.runtime.fidelity import BLOCK, contact_sheet, worst_blocks

    against = "dense"
    found = [(b.psnr_db, i, b) for i, s in enumerate(samples) for b in worst_blocks(s.amsr_out, s.dense_out, k)]
    if not found:  # every output equals dense: show where both are furthest from HR
        against = "HR"
        found = [(b.psnr_db, i, b) for i, s in enumerate(samples) for b in worst_blocks(s.amsr_out, s.hr, k)]
    found.sort(key=lambda t: t[0])
    # Each image's worst block first (so every image that differs is shown), then the next worst overall.
    firsts = list({i: (p, i, b) for p, i, b in reversed(found)}.values())
    firsts.sort(key=lambda t: t[0])
    chosen = firsts[:k]
    chosen += [t for t in found if t not in chosen][: k - len(chosen)]
    chosen.sort(key=lambda t: t[0])
    parts, listed = [], []
    zoom = 4
    cell = BLOCK * zoom
    for i in dict.fromkeys(i for _, i, _ in chosen):
        s = samples[i]
        blocks = tuple(b for _, j, b in chosen if j == i)
        sheet = contact_sheet(s.dense_out, s.amsr_out, blocks, block=BLOCK, zoom=zoom, reference=s.hr)
        label = Image.new("RGB", (sheet.shape[1], 28), (255, 255, 255))
        draw = ImageDraw.Draw(label)
        draw.text((4, 2), f"{s.set} {s.name} ({s.path}): dense | accelerated | |diff|x8 | HR", fill=(0, 0, 0))
        draw.text((4, 15), f"vs {against}: " + ", ".join(f"({b.y},{b.x}) {b.psnr_db:.1f} dB" for b in blocks),
                  fill=(0, 0, 0))
        parts += [np.asarray(label), sheet]
        listed += [{"set": s.set, "image": s.name, "y": b.y, "x": b.x,
                    f"psnr_db_vs_{against.lower()}": round(b.psnr_db, 3)} for b in blocks]
    if not parts:
        parts = [np.full((28, 4 * cell + 5 * 4, 3), 255, np.uint8)]
    return np.concatenate(parts, axis=0), listed, against


def markdown_report(report: dict[str, Any], cells: list[list[str]], lines: list[str]) -> str:
    g, c = report["graphs"], report["operating_point"]["mask_config"]
    parity = "; ".join(f"{p['graph']} {'PASSED' if p['passed'] else 'FAILED'} (max |Δ| {p['max_abs_diff']:.1e}, "
                       f"{p['mask_mismatch_pixels']} mask px differ)" for p in report["parity"])
    t = report["timing"]
    out = [f"# amsr demo: {report['model']} x{report['scale']} at its shipped default", "",
           f"- Operating point: d_net {c['dilation']}, d_out {c['output_dilation']}, window threshold "
           f"{c['window_threshold']:g} ({report['operating_point']['source'].get('source')}, "
           f"{report['operating_point']['source'].get('budget_db')} dB budget).",
           f"- Graphs: `{g['copies']['accelerated']}` (execution: {g['execution']}) and `{g['copies']['dense']}`.",
           f"- Parity against PyTorch (accelerated graph on "
           f"{', '.join(i['name'] for i in report['parity'][0]['images'])};"
           f" dense graph on {len(report['parity'][-1]['images'])} of them): {parity}.",
           f"- Timing: onnxruntime {t['providers']}, threads {t['threads']}, {t['cores']} cores, "
           f"{platform.machine()}; dense and accelerated interleaved per image in the same run (order alternating "
           f"per round), {t['warmup']} warm-up round, median of {t['repeats']} rounds (Set5: "
           f"{t['small_repeats']}). `auto` runs the row graph where the mask density is ≤ "
           f"{report['dense_above_density']:.2f}, else the mask stage and the dense graph. A shared machine: "
           "ratios within a few percent of 1 are noise.",
           "- Columns: PSNR-Y against HR (Y channel, scale px shaved); ΔPSNR = accelerated − dense; vs dense = "
           "8-bit RGB PSNR of the accelerated output against the dense output; GMACs = effective multiply-"
           "accumulates per image from the realised mask (of what ran); ratio = accelerated / dense time "
           "(means: Σ / Σ).", "", markdown_table(cells), "", "## Where it falls short", ""]
    out += [f"- {x}" for x in lines] or ["- nowhere: every image ran at most as long as dense and lost at most "
                                         f"{QUALITY_BUDGET_DB} dB."]
    sheet = report["contact_sheet"]
    out += ["", "## Worst blocks", "",
            f"`{Path(sheet['file']).name}`: {len(sheet['blocks'])} 32×32 blocks furthest from {sheet['against']} "
            "(each image's worst, then the worst overall; 4× zoom): dense | accelerated | |Δ|×8 | HR.", "",
            f"![worst blocks]({Path(sheet['file']).name})", "",
            f"Wall time {report['wall_s']:.0f} s (export {g['export_s']:.0f} s)."]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------- main


def load_samples(cfg: DemoConfig) -> tuple[list[Sample], list[ParityInput]]:
    """The photos and Set5 images (LR, HR), and the images parity runs on: the Set5 ones and the centre crop
    (``PARITY_CROP``) of the first ``cfg.parity_photos`` photos."""
    from amsr.tools.evaluate import find_pairs, load_pair

    data = cfg.data or paths.data_dir()
    samples, parity = [], []
    for set_name, names in ((PHOTOS, cfg.photos), (SET5, None)):
        if names is not None and not names or names is None and cfg.set5 == 0:
            continue
        folder = data / set_name / f"x{cfg.scale}"
        if not folder.is_dir():
            raise AmsrError(f"{folder}: no such folder (set AMSR_DATA_DIR or --data to the shared data)")
        pairs = {p.name: p for p in find_pairs(folder)}
        if names is None:
            chosen = sorted(pairs)[: cfg.set5]
        else:
            missing = [n for n in names if n not in pairs]
            if missing:
                raise AmsrError(f"{folder}: no {', '.join(missing)} (it has {', '.join(sorted(pairs))})")
            chosen = list(names)
        for i, n in enumerate(chosen):
            lr, hr = load_pair(pairs[n], cfg.scale)
            samples.append(Sample(set_name, n, lr, hr))
            if set_name == SET5:
                parity.append(ParityInput(set_name, f"{set_name}/{n}", lr, hr))
            elif i < cfg.parity_photos:
                parity.append(_centre_crop(set_name, n, lr, hr, cfg.scale))
    if not samples or not parity:
        raise AmsrError("nothing to run: give at least one photo or Set5 image, and one image for parity")
    return samples, parity


def _centre_crop(set_name: str, name: str, lr: np.ndarray, hr: np.ndarray, scale: int) -> ParityInput:
    h, w = min(PARITY_CROP[0], lr.shape[0]), min(PARITY_CROP[1], lr.shape[1])
    y, x = (lr.shape[0] - h) // 2, (lr.shape[1] - w) // 2
    return ParityInput(set_name, f"{set_name}/{name}[{y}:{y + h}, {x}:{x + w}]",
                       np.ascontiguousarray(lr[y:y + h, x:x + w]),
                       np.ascontiguousarray(hr[y * scale:(y + h) * scale, x * scale:(x + w) * scale]))


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """The whole demonstration; returns the JSON report (also written to ``cfg.out``)."""
    from amsr.core.files import check_writable_dir, save_bytes
    from amsr.io.images import save_png
    from amsr.models import load_model
    from amsr.sparse.auto import dense_above

    t_start = time.perf_counter()
    check_writable_dir(cfg.out, "--out")
    samples, parity_files = load_samples(cfg)  # before minutes of work: a missing image is one line now
    graphs = export_graphs(cfg)
    model = load_model(cfg.model, cfg.scale)
    parity = check_parity(graphs, model, parity_files)
    upscale_and_time(cfg, graphs, samples)
    say("[4/4] score: PSNR-Y against HR, effective GMACs of what ran (PyTorch, from the realised mask)")
    rows = score(cfg, model, graphs, samples)
    means = set_means(rows)
    sheet, blocks, against = worst_block_sheet(samples, cfg.blocks)
    sheet_path = save_png(cfg.out / "worst_blocks.png", sheet)
    from amsr.runtime.onnxrt import import_onnxruntime

    ort = import_onnxruntime()
    report: dict[str, Any] = {
        "model": cfg.model, "scale": cfg.scale,
        "operating_point": {"mask_config": graphs["config"].to_json(), "source": graphs["source"]},
        "graphs": {"accelerated": str(graphs["accelerated"]), "dense": str(graphs["dense"]),
                   "copies": graphs["copies"], "execution": graphs["execution"], "export_s": graphs["export_s"]},
        "parity": parity, "dense_above_density": dense_above("rows"), "quality_budget_db": QUALITY_BUDGET_DB,
        "timing": {"backend": f"onnxruntime {ort.__version__}", "providers": "CPU",
                   "threads": cfg.threads or "one per core",
                   "cores": os.cpu_count(), "warmup": cfg.warmup, "repeats": cfg.repeats,
                   "small_repeats": cfg.small_repeats, "statistic": "median", "interleaved": True},
        "data": str(cfg.data or paths.data_dir()), "sets": means, "per_image": rows,
        "shortfalls": shortfalls(rows, means),
        "contact_sheet": {"file": str(sheet_path), "against": against, "blocks": blocks},
    }
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    cells = table_rows(rows, means)
    save_bytes(cfg.out / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    save_bytes(cfg.out / "report.md", markdown_report(report, cells, report["shortfalls"]).encode())
    say()
    say(text_table(cells))
    say()
    if report["shortfalls"]:
        say("Where it falls short:")
        for line in report["shortfalls"]:
            say(f"  - {line}")
    else:
        say(f"Nowhere slower than dense, nowhere more than {QUALITY_BUDGET_DB} dB lost.")
    failed = [p["graph"] for p in parity if not p["passed"]]
    if failed:
        say(f"PARITY FAILED for the {' and '.join(failed)} graph")
    say(f"wrote {cfg.out / 'report.md'}, {cfg.out / 'report.json'}, {sheet_path} ({report['wall_s']:.0f} s)")
    return report


def build_parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=d.out, help=f"report folder (default {d.out}; untracked)")
    p.add_argument("--photos", nargs="*", default=list(d.photos), metavar="NAME",
                   help=f"Photos2K x4 LR file names (default {' '.join(d.photos)})")
    p.add_argument("--set5", type=int, metavar="N", help="only the first N Set5 images (default all 5)")
    p.add_argument("--repeats", type=int, default=d.repeats, help=f"timed rounds (default {d.repeats})")
    p.add_argument("--small-repeats", type=int, default=d.small_repeats,
                   help=f"timed rounds for Set5's small crops (default {d.small_repeats})")
    p.add_argument("--warmup", type=int, default=d.warmup, help=f"warm-up rounds (default {d.warmup}; ≥ 1)")
    p.add_argument("--threads", type=int, help="onnxruntime threads per session (default one per core)")
    p.add_argument("--parity-photos", type=int, default=d.parity_photos,
                   help=f"photos whose centre crop parity also runs on, besides Set5 (default {d.parity_photos})")
    p.add_argument("--blocks", type=int, default=d.blocks, help=f"worst blocks on the sheet (default {d.blocks})")
    p.add_argument("--data", type=Path, help="data folder (default $AMSR_DATA_DIR or ../shared/data)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    for name in ("repeats", "small_repeats", "warmup", "blocks"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be ≥ 1")
    if a.set5 is not None and a.set5 < 0 or a.parity_photos < 0 or (a.threads is not None and a.threads < 1):
        p.error("--set5 and --parity-photos must be ≥ 0, --threads ≥ 1")
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(name)s: %(message)s")
    quiet_export_noise()  # the exporter's own chatter, as in every amsr CLI
    cfg = replace(DemoConfig(), out=a.out, photos=tuple(a.photos), set5=a.set5, repeats=a.repeats,
                  small_repeats=a.small_repeats, warmup=a.warmup, threads=a.threads, parity_photos=a.parity_photos,
                  blocks=a.blocks, data=a.data)
    try:
        report = run_demo(cfg)
    except AmsrError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    return 0 if all(p["passed"] for p in report["parity"]) else 1


if __name__ == "__main__":
    sys.exit(main())
