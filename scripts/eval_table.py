"""The research sweep (``bash scripts/sweep.sh``): dense vs AMSR quality and effective GMACs for every zoo model
with local weights, every scale, set and dilation of the raw in-network skip (hours on 2 cores).

For each model × scale × set, the dense model runs once per image and the accelerated model once per
dilation of the sweep; each row goes to ``OUT/eval/<model>_x<scale>_<set>.json`` (amsr-eval's contract, one
``amsr`` entry per dilation under ``sweep``) and the Markdown table of the rows asked for to
``OUT/eval_table.md``. OUT defaults to the untracked ``out/sweep``.

Resumable: a row whose JSON already exists in OUT with the same dilations is read back instead of computed
(``--force`` recomputes it). The tracked ``results/`` is written only with ``--refresh-results``: at the end,
the row JSONs of this run are copied to ``RESULTS/eval/`` and ``RESULTS/eval_table.md`` is rebuilt from every
row JSON there (so a partial sweep does not drop the other models' rows).

    python scripts/eval_table.py [--models carn_m imdn ...] [--sets Set5 Set14] [--dilations 0 1 2 4]
                                 [--out out/sweep] [--force] [--refresh-results [--results results]]
    python scripts/eval_table.py --from-json results/eval/*.json      # only print the table of these files
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from amsr.core import paths
from amsr.cli.common import write_json
from amsr.core.errors import AmsrError
from amsr.core.files import save_bytes
from amsr.masking.mask import MaskConfig
from amsr.models import load_model, unwrap_accelerated
from amsr.tools.evaluate import _mean, find_pairs, load_pair, score
from amsr.zoo import get_architecture

DEFAULT_MODELS = ["carn_m", "imdn", "pan", "fsrcnn", "imdtn", "hit_srf", "ngswin"]


@torch.no_grad()
def sweep(name: str, scale: int, set_name: str, dilations: list[int]) -> dict[str, object]:
    model = load_model(name, scale, allow_download=False)
    pairs = find_pairs(paths.data_dir() / set_name / f"x{scale}")
    dense = model.dense()
    accs = {d: model.accelerated(MaskConfig(dilation=d)) for d in dilations}
    dense_rows, acc_rows = [], {d: [] for d in dilations}
    for pair in tqdm(pairs, desc=f"{name} x{scale} {set_name}", unit="img", file=sys.stderr):
        lr, hr = load_pair(pair, scale)
        dense_rows.append(score(dense, lr, hr, scale))
        for d, acc in accs.items():
            inner = unwrap_accelerated(acc)
            acc_rows[d].append(score(acc, lr, hr, scale, lambda inner=inner: float(inner.last_mask.mean())))
    return {"model": name, "scale": scale, "set": set_name, "images": len(pairs),
            "dense": asdict(_mean(dense_rows)),
            "sweep": [{"dilation": d, **asdict(_mean(rows))} for d, rows in acc_rows.items()]}


def table(results: list[dict[str, object]]) -> str:
    lines = ["| model | scale | set | dense PSNR/SSIM | GMACs | dilation | AMSR PSNR/SSIM | ΔPSNR | density | GMACs saved |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        dense = r["dense"]
        for s in r["sweep"]:
            saved = 100 * (1 - s["gmacs"] / dense["gmacs"])
            lines.append(f"| {r['model']} | x{r['scale']} | {r['set']} | {dense['psnr_y']:.2f} / {dense['ssim_y']:.4f} "
                         f"| {dense['gmacs']:.2f} | {s['dilation']} | {s['psnr_y']:.2f} / {s['ssim_y']:.4f} "
                         f"| {s['psnr_y'] - dense['psnr_y']:+.2f} | {s['density']:.2f} | {saved:.1f}% |")
    return "\n".join(lines) + "\n"


def _order(models: list[str]) -> Callable[[dict[str, object]], tuple[object, ...]]:
    """Table order: the models as listed (others after, by name), then scale, then set (Set5 before Set14)."""
    return lambda r: (models.index(r["model"]) if r["model"] in models else len(models), str(r["model"]),
                      r["scale"], len(str(r["set"])), str(r["set"]))


def _existing(path: Path, dilations: list[int]) -> dict[str, object] | None:
    """The row stored at ``path`` when it is a readable sweep row of the same dilations, else ``None`` (with a
    line saying why it is recomputed when there is a file)."""
    if not path.is_file():
        return None
    try:
        r = json.loads(path.read_text())
        have = [s["dilation"] for s in r["sweep"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"recomputing {path}: unreadable ({e})", file=sys.stderr)
        return None
    if have != dilations:
        print(f"recomputing {path}: it has dilations {have}, asked for {dilations}", file=sys.stderr)
        return None
    return r


def refresh_results(rows: dict[Path, dict[str, object]], results: Path, models: list[str]) -> None:
    """Copy this run's row JSONs into ``results/eval`` and rebuild ``results/eval_table.md`` from every row there."""
    for src, r in rows.items():
        write_json(results / "eval" / src.name, r)
    everything = []
    for f in sorted((results / "eval").glob("*.json")):
        r = json.loads(f.read_text())
        if isinstance(r, dict) and "sweep" in r:  # sweep rows only (not eval/photos/…, not amsr-eval reports)
            everything.append(r)
    order = _order(DEFAULT_MODELS + [m for m in models if m not in DEFAULT_MODELS])  # the whole table: zoo order
    save_bytes(results / "eval_table.md", table(sorted(everything, key=order)).encode())
    print(f"refreshed {results / 'eval'} ({len(rows)} rows) and {results / 'eval_table.md'} "
          f"({len(everything)} rows)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    p.add_argument("--dilations", nargs="+", type=int, default=[0, 1, 2, 4])
    p.add_argument("--out", type=Path, default=Path("out/sweep"),
                   help="where the rows and the table go (default out/sweep, untracked)")
    p.add_argument("--force", action="store_true", help="recompute rows whose JSON already exists in --out")
    p.add_argument("--refresh-results", action="store_true",
                   help="also copy this run's rows into --results and rebuild its eval_table.md")
    p.add_argument("--results", type=Path, default=Path("results"),
                   help="the tracked results folder --refresh-results writes (default results)")
    p.add_argument("--from-json", type=Path, nargs="+", help="only rebuild the table from these result files")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.from_json:
        results = sorted((json.loads(f.read_text()) for f in args.from_json), key=_order(args.models))
        print(table(results))
        return 0
    done: dict[Path, dict[str, object]] = {}
    reused = 0
    for name in args.models:
        for scale in args.scales:
            if scale not in get_architecture(name).scales:
                continue
            for set_name in args.sets:
                dest = args.out / "eval" / f"{name}_x{scale}_{set_name}.json"
                r = None if args.force else _existing(dest, args.dilations)
                if r is not None:
                    print(f"reusing {dest} (exists; --force recomputes it)", file=sys.stderr)
                    reused += 1
                else:
                    try:
                        r = sweep(name, scale, set_name, args.dilations)
                    except AmsrError as e:
                        print(f"skipped {name} x{scale} {set_name}: {e}", file=sys.stderr)
                        continue
                    write_json(dest, r)
                    print(f"wrote {dest}", file=sys.stderr)
                done[dest] = r
    rows = sorted(done.values(), key=_order(args.models))
    save_bytes(args.out / "eval_table.md", table(rows).encode())
    print(table(rows))
    print(f"{len(rows)} rows ({reused} reused from {args.out / 'eval'}); table in {args.out / 'eval_table.md'}",
          file=sys.stderr)
    if args.refresh_results and args.out.resolve() != args.results.resolve():
        refresh_results(done, args.results, args.models)
    elif args.refresh_results:
        refresh_results({}, args.results, args.models)  # rows are already there: rebuild the whole table
    return 0


if __name__ == "__main__":
    sys.exit(main())
