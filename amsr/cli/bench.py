"""``amsr-bench``: dense vs accelerated speed of a zoo model on the same images in the same run."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from amsr.bench import STRATEGIES, run_bench
from amsr.cli.common import (
    DEFAULTS_EPILOG,
    add_mask_args,
    add_model_args,
    add_operating_point_arg,
    config_and_source,
    describe_settings,
    run_main,
    write_json,
)
from amsr.errors import AmsrError
from amsr.models import load_model
from amsr.sparse_tiles import DEFAULT_TILE


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amsr-bench", description=__doc__, epilog=DEFAULTS_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_mask_args(p)
    p.add_argument("--data", required=True, type=Path, help="folder of LR images (or with an LR/ subfolder)")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "pytorch"))
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--device", default="cpu",
                   help="PyTorch backend: cpu (default) or cuda[:N] (timings synchronise the GPU)")
    p.add_argument("--dense-tail", action="store_true",
                   help="PyTorch backend, output blend: compute the tail convs densely (same output; exported "
                        "graphs always do)")
    add_operating_point_arg(p)
    p.add_argument("--strategy", default="auto", choices=STRATEGIES,
                   help="pixel gather, tile gather, rows (CARN/CARN-M with a blend: the net on its active "
                        "pixels' rows), or auto (per image: rows, tile or dense; default)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"tile size in LR px (default {DEFAULT_TILE})")
    p.add_argument("--break-even", type=float, default=None,
                   help="auto: mask density (rows) or active-tile fraction (tile) above which the dense network "
                        "runs (default: per model)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (median per image; default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--cache", type=Path, default=None,
                   help="folder for exported graphs (default $AMSR_CACHE_DIR/bench, else ~/.cache/amsr/bench)")
    p.add_argument("--no-profile", action="store_true", help="skip the onnxruntime per-node profile")
    p.add_argument("--json", type=Path, help="write the report here (atomically)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _check_outputs(args: argparse.Namespace) -> None:
    """``--json`` and the export cache (onnxruntime backend) must be writable before anything is measured."""
    from amsr.bench import default_cache
    from amsr.files import check_writable, check_writable_dir

    if args.json:
        check_writable(args.json, "--json")
    if args.backend == "onnxruntime":
        what = "--cache" if args.cache else "export cache ($AMSR_CACHE_DIR)"
        check_writable_dir(args.cache or default_cache(), what)


def _run(args: argparse.Namespace) -> int:
    _check_outputs(args)
    config, source = config_and_source(args)
    if config is None:
        raise AmsrError(f"{args.model} x{args.scale}: {describe_settings(config, source)}; nothing to compare: "
                        "give mask options or --operating-point FILE")
    model = load_model(args.model, args.scale, weights=args.weights, variant=args.variant)
    r = run_bench(model, args.data, backend=args.backend, threads=args.threads, config=config,
                  device=args.device, operating_point=source, sparse_tail=not args.dense_tail,
                  strategy=args.strategy, tile=args.tile, warmup=args.warmup, repeats=args.repeats,
                  limit=args.limit, cache=args.cache, profile=not args.no_profile, break_even=args.break_even)
    print(f"{r['model']} x{r['scale']} {r['backend']} on {r['device']}, {r['threads']} thr, strategy {r['strategy']}"
          + ("" if r["tile"] is None else f" T={r['tile']}") + f", {r['images']} image(s)")
    print(f"dense {r['dense_ms']:.1f} ms  amsr {r['amsr_ms']:.1f} ms  mask {r['mask_ms']:.1f} ms  "
          f"ratio {r['ratio']:.3f}  gmacs_ratio {r['gmacs_ratio']:.3f}  mask/dense {r['mask_share_of_dense']:.3f}  "
          f"density {r['density']:.3f}  tiles {r['tile_fraction']:.3f}")
    for stage in ("dense", "amsr"):
        if "profile" in r:
            pr = r["profile"][stage]
            print(f"  profile {stage}: {pr['total_ms']:.1f} ms/img by stage {pr['by_stage_ms']}")
    if args.json:
        write_json(args.json, r)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("amsr-bench", _run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
