"""amsr-bench: dense vs accelerated speed of a zoo model on the same images in the same run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from amsr.cli.common import (
    add_mask_args,
    add_model_args,
    add_operating_point_arg,
    add_verbose_arg,
    config_and_source,
    describe_settings,
    load_model,
    parser,
    run_main,
    write_json,
)
from amsr.core.errors import AmsrError

# Light copies for the parser (tests/cli/test_help.py checks them against the originals).
STRATEGIES = ("auto", "pixel", "tile", "rows")  # amsr.tools.bench.STRATEGIES
DEFAULT_TILE = 16  # amsr.sparse.tiles.DEFAULT_TILE


def build_parser() -> argparse.ArgumentParser:
    p = parser("amsr-bench", __doc__,
               "amsr-bench --model carn_m --scale 4 --data Photos2K/x4 --json carn_m_x4_bench.json",
               "amsr-bench --model carn_m --scale 4 --data Set5/x4 --backend pytorch --device cuda")
    add_model_args(p)
    add_mask_args(p)
    p.add_argument("--data", required=True, type=Path, metavar="DIR",
                   help="folder of LR images (or with an LR/ subfolder)")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "pytorch"),
                   help="time the exported graphs in onnxruntime (default; exported once, cached under --cache) "
                        "or the modules in PyTorch")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--device", default="cpu",
                   help="PyTorch backend: cpu (default) or cuda[:N] (timings synchronise the GPU)")
    p.add_argument("--dense-tail", action="store_true",
                   help="PyTorch backend, output blend: compute the tail convs densely (same output; exported "
                        "graphs always do; default: sparsely)")
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
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (default: all)")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="folder for exported graphs (default $AMSR_CACHE_DIR/bench, else ~/.cache/amsr/bench)")
    p.add_argument("--no-profile", action="store_true",
                   help="skip the onnxruntime per-node profile (default: profile after timing)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the report here, atomically (default: none)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: one on stderr, advancing per image and round)")
    add_verbose_arg(p)
    return p


def _check_outputs(args: argparse.Namespace) -> None:
    """``--json`` and the export cache (onnxruntime backend) must be writable before anything is measured."""
    from amsr.core.files import check_writable, check_writable_dir
    from amsr.tools.bench import default_cache

    if args.json:
        check_writable(args.json, "--json")
    if args.backend == "onnxruntime":
        what = "--cache" if args.cache else "export cache ($AMSR_CACHE_DIR)"
        check_writable_dir(args.cache or default_cache(), what)


def _progress_bar(disable: bool) -> tuple[Callable[[str, int, int], None], Callable[[], None]]:
    """``run_bench``'s progress callback drawing a tqdm bar on stderr (as amsr-eval and amsr-upscale do), and its
    close function. Drawn between timed calls, never inside one."""
    from tqdm import tqdm

    bars: list[tqdm] = []  # made on the first report, when the total is known

    def update(phase: str, done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="amsr-bench", unit="img", file=sys.stderr, disable=disable))
        bar = bars[0]
        bar.total = total
        if done == bar.n:  # a phase starts: show its name now (the export or the profile may take a while)
            bar.set_description(f"amsr-bench: {phase}")
        else:
            bar.update(done - bar.n)

    def close() -> None:
        for bar in bars:
            bar.close()

    return update, close


def _run(args: argparse.Namespace) -> int:
    from amsr.tools.bench import BenchSpec, run_bench

    _check_outputs(args)
    config, source = config_and_source(args)
    if config is None:
        raise AmsrError(f"{args.model} x{args.scale}: {describe_settings(config, source)}; nothing to compare: "
                        "give mask options or --operating-point FILE")
    model = load_model(args.model, args.scale, weights=args.weights, variant=args.variant)
    spec = BenchSpec(backend=args.backend, threads=args.threads, config=config, device=args.device,
                     operating_point=source, sparse_tail=not args.dense_tail, strategy=args.strategy, tile=args.tile,
                     warmup=args.warmup, repeats=args.repeats, limit=args.limit, cache=args.cache,
                     profile=not args.no_profile, break_even=args.break_even)
    progress, close = _progress_bar(disable=args.no_progress)
    try:
        r = run_bench(model, args.data, spec, progress)
    finally:
        close()
    print(f"{r.model} x{r.scale} {r.backend} on {r.device}, {r.threads} thr, strategy {r.strategy}"
          + ("" if r.tile is None else f" T={r.tile}") + f", {r.images} image(s)")
    print(f"dense {r.dense_ms:.1f} ms  amsr {r.amsr_ms:.1f} ms  mask {r.mask_ms:.1f} ms  "
          f"ratio {r.ratio:.3f}  gmacs_ratio {r.gmacs_ratio:.3f}  mask/dense {r.mask_share_of_dense:.3f}  "
          f"density {r.density:.3f}  tiles {r.tile_fraction:.3f}")
    if r.profile is not None:
        for stage in ("dense", "amsr"):
            pr = r.profile[stage]
            print(f"  profile {stage}: {pr['total_ms']:.1f} ms/img by stage {pr['by_stage_ms']}")
    if args.json:
        write_json(args.json, r.to_json())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("amsr-bench", _run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
