"""amsr-upscale: upscale image files with an exported ONNX graph or a zoo model, in one process or on Ray.

INPUT is any mix of files and folders; a folder contributes the PNG/JPEG/WebP/BMP files directly inside it
(not its subfolders). Each input is written to OUT/<stem>.png (16-bit PNG for 16-bit input, alpha kept).
Existing outputs are skipped unless --overwrite. A file that cannot be processed is reported on one line and
skipped; the exit status is then 1.

--compare DIR (accelerated models only) also runs the dense network of the same model (PyTorch) on every
input written and writes DIR/<stem>_compare.png: dense | accelerated | |diff|×8, 4× zoomed crops of the
worst 32×32 blocks; it prints one line per image with the PSNR of the output against dense and its worst
block (8-bit RGB; runtime/fidelity.py).
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amsr.cli.common import (
    UsageError,
    add_mask_args,
    add_model_args,
    add_operating_point_arg,
    add_verbose_arg,
    config_and_source,
    describe_settings,
    graph_model,
    mask_options_given,
    parser,
    run_main,
)
from amsr.core.errors import AmsrError

if TYPE_CHECKING:
    from amsr.runtime.jobs import Job, JobResult
    from amsr.runtime.upscaler import RunOptions

PROG = "amsr-upscale"


def build_parser() -> argparse.ArgumentParser:
    p = parser(PROG, __doc__,
               "amsr-upscale photos/ --out up/ --model carn_m --scale 4                 # the shipped 0.05 dB point",
               "amsr-upscale photo.jpg --out up/ --onnx carn_m_x4.onnx --compare sheets/  # an amsr-export graph")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders (not recursive)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created)")
    p.add_argument("--onnx", type=Path, metavar="FILE", help="an exported graph (amsr-export); or use --model")
    add_model_args(p, required=False)
    add_mask_args(p)
    add_operating_point_arg(p)
    p.add_argument("--dense", action="store_true", help="with --model: the dense network instead of AMSR")
    g = p.add_argument_group("run")
    g.add_argument("--tile", type=int, default=512,
                   help="largest LR tile side in px, bounding memory (0: whole image; default 512)")
    g.add_argument("--overlap", type=int, default=16, help="LR px of context around each tile (default 16)")
    g.add_argument("--per-tile-mask", action="store_true",
                   help="AMSR graphs: each tile computes its own mask (default: one mask for the whole image)")
    g.add_argument("--threads", type=int, help="onnxruntime threads per session (default: one per core; "
                                               "1 per worker with --ray)")
    g.add_argument("--providers", default="cpu",
                   help="onnxruntime providers: cpu (default), auto (TensorRT, CUDA, CPU as available) "
                        "or a comma list such as cuda,cpu")
    g.add_argument("--workers", type=int,
                   help="images in flight: threads sharing one session, or Ray actors with --ray (default 1; "
                        "2 with --ray)")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray Data: a local instance (or $RAY_ADDRESS) without ADDRESS, else that cluster "
                        "(default: in this process)")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    g.add_argument("--compare", type=Path, metavar="DIR",
                   help="accelerated models: also write DIR/<stem>_compare.png (dense | accelerated | |diff|×8 of "
                        "the worst blocks) and print the PSNR against the dense model, for every output written "
                        "(slow: the dense network runs in PyTorch; with --onnx, --weights names its checkpoint; "
                        "default: no comparison)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: one on stderr, advancing per tile)")
    add_verbose_arg(p)
    return p


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.onnx is None) == (args.model is None):
        p.error("give exactly one of --onnx FILE and --model NAME")
    if args.model is not None and args.scale is None:
        p.error("--model needs --scale")
    if args.onnx is not None:
        weights = args.weights if args.compare is None else None  # --compare: the dense network's checkpoint
        given = [f for f, v in (("--scale", args.scale), ("--variant", args.variant), ("--weights", weights),
                                ("--dense", args.dense)) if v]
        if _mask_args_changed(args):
            given.append("mask options")
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            p.error(f"{', '.join(given)} {verb} only to --model (an ONNX graph fixes them)")
    elif args.dense and _mask_args_changed(args):
        p.error("mask options do not apply to --dense")
    for name in ("tile", "overlap", "threads", "workers"):
        value = getattr(args, name)
        if value is not None and value < (0 if name in ("tile", "overlap") else 1):
            p.error(f"--{name} must be ≥ {0 if name in ('tile', 'overlap') else 1}, got {value}")
    from amsr.core.files import check_writable_dir

    check_writable_dir(args.out, "--out")  # an existing file or a read-only folder: refused before any image runs
    if args.compare is not None:
        _check_compare(args)


def _check_compare(args: argparse.Namespace) -> None:
    """``--compare`` needs an accelerated model (a dense one has nothing to compare) and a writable folder."""
    from amsr.core.files import check_writable_dir

    if args.dense:
        raise UsageError("--compare compares an accelerated model with its dense network: drop --dense")
    if args.onnx is not None and args.onnx.is_file():
        from amsr.export.metadata import read_metadata

        kind = read_metadata(args.onnx).get("amsr.kind", "dense")
        if kind != "accelerated":
            raise UsageError(f"--compare compares an accelerated model with its dense network; {args.onnx} is a "
                             f"{kind} graph")
    check_writable_dir(args.compare, "--compare")


def _mask_args_changed(args: argparse.Namespace) -> bool:
    return args.operating_point is not None or bool(mask_options_given(args))


def _onnx_path(args: argparse.Namespace) -> Path:
    if args.onnx is not None:
        if not args.onnx.is_file():
            raise AmsrError(f"ONNX model not found: {args.onnx}")
        print(f"{PROG}: {args.onnx.name}: {_graph_settings(args.onnx)}", file=sys.stderr)
        return args.onnx
    from amsr.runtime.upscaler import export_cache_path, exported_model_path

    config, source = (None, {"reason": "--dense"}) if args.dense else config_and_source(args)
    if args.compare is not None and config is None:
        raise UsageError(f"--compare compares an accelerated model with its dense network; {args.model} "
                         f"x{args.scale} runs the {describe_settings(config, source)}")
    print(f"{PROG}: {args.model} x{args.scale}: {describe_settings(config, source)}", file=sys.stderr)

    def entry(fn: Callable[..., Path]) -> Path:
        return fn(args.model, args.scale, accelerated=config is not None, mask=config, variant=args.variant,
                  weights=args.weights)

    if not entry(export_cache_path).is_file():
        from amsr.core import paths

        print(f"{PROG}: exporting {args.model} x{args.scale} to ONNX (once; cached under {paths.cache_dir()})",
              file=sys.stderr)
    return entry(exported_model_path)


def _graph_settings(onnx: Path) -> str:
    """What an exported graph runs, from its metadata: model, mask settings and execution."""
    from amsr.export.metadata import execution_field, mask_config_field, read_metadata

    meta = read_metadata(onnx)
    name = " ".join(v for v in (meta.get("amsr.model"), f"x{meta.get('amsr.scale', '?')}") if v)
    kind = meta.get("amsr.kind", "dense")
    if kind != "accelerated":
        return f"{name}, {kind} graph"
    settings = describe_settings(mask_config_field(meta, str(onnx)), {"source": "graph metadata"})
    return f"{name}, {settings}, {execution_field(meta)} execution"


def _run_summary(args: argparse.Namespace, onnx: Path, options: RunOptions, scores: list[float]) -> str:
    """The line after the run: how the graph ran (tiles, masks, the dense fallback) and what was checked."""
    from amsr.export.metadata import execution_field, read_metadata

    from amsr.sparse.auto import dense_above, needs_mask

    how = "whole images" if options.tile is None else f"tiles ≤ {options.tile} px + {options.overlap} px overlap"
    meta = read_metadata(onnx)
    execution = execution_field(meta)
    if options.dense_graph is not None and not needs_mask(execution):  # no mask is computed at all
        how += f", the dense graph for every image ({execution} graphs are slower than dense: amsr.sparse.auto)"
    else:
        if meta.get("amsr.kind") == "accelerated":
            how += ", a mask per tile" if options.per_tile_mask and options.tile is not None else ", one mask per image"
        if options.dense_graph is not None:
            how += f", the dense graph for images of mask density > {dense_above(execution):g}"
    if args.onnx is None:
        checked = "the exported graphs matched PyTorch when exported"
    else:
        checked = f"{onnx.name} not compared with PyTorch here (amsr-parity does)"
    if scores:
        checked += f"; {len(scores)} output(s) compared with the dense model: lowest PSNR {min(scores):.2f} dB"
    return f"{PROG}: ran {how}; {checked}"


class _Progress:
    """The progress bar: images done, advancing within an image tile by tile (``Upscaler`` reports the fraction
    of an image done after each tile), so one large photo does not sit at 0/1 for minutes."""

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total_fmt} img [{elapsed}<{remaining}]"

    def __init__(self, total: int, disable: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=PROG, file=sys.stderr, disable=disable, bar_format=self.FORMAT)
        self._lock = threading.Lock()  # tile reports come from the worker threads
        self._done: dict[Path, float] = {}

    def tiles_of(self, src: Path) -> Callable[[float], None]:
        def report(fraction: float) -> None:
            with self._lock:
                self.bar.update(fraction - self._done.get(src, 0.0))
                self._done[src] = fraction

        return report

    def finished(self, src: Path) -> None:
        with self._lock:
            self.bar.update(1.0 - self._done.pop(src, 0.0))

    def write(self, line: str, file: Any) -> None:
        self.bar.write(line, file=file)

    def close(self) -> None:
        self.bar.close()


def _run_local(jobs: Sequence[Job], onnx: Path, options: RunOptions, workers: int,
               progress: _Progress | None = None) -> Iterator[JobResult]:
    from amsr.runtime.jobs import run_job
    from amsr.runtime.upscaler import Upscaler

    upscaler = Upscaler.from_options(onnx, options)

    def run(job: Job) -> JobResult:
        return run_job(upscaler, job) if progress is None else run_job(upscaler, job, progress.tiles_of(job.src))

    if workers == 1:
        for job in jobs:
            yield run(job)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:  # one session, shared: run() is thread-safe
        yield from pool.map(run, jobs)


def _comparer(args: argparse.Namespace, scores: list[float]) -> Callable[[JobResult], str]:
    """``--compare``: a function that scores one written output against the dense network of the same model,
    writes its contact sheet (atomically), appends its PSNR to ``scores`` and returns its report line."""
    from amsr.io.user_images import read_image, write_png
    from amsr.runtime.fidelity import BLOCK, compare_with_dense

    if args.model is not None:
        from amsr.models import load_model

        model = load_model(args.model, args.scale, weights=args.weights, variant=args.variant)
    else:
        from amsr.export.metadata import read_metadata

        model = graph_model(args.onnx, read_metadata(args.onnx), weights=args.weights,
                            hint="--compare needs it to run the dense network")
    dense = model.dense()

    def compare(job: JobResult) -> str:
        r, sheet = compare_with_dense(job.src.name, read_image(job.src), read_image(job.dest), dense, args.tile)
        dest = write_png(args.compare / f"{job.src.stem}_compare.png", sheet)
        scores.append(r.psnr_db)
        b = r.worst_blocks[0] if r.worst_blocks else None
        worst = "none (identical)" if b is None else f"({b.y}, {b.x}) {b.psnr_db:.2f} dB"
        return f"{job.src.name}: {r.psnr_db:.2f} dB vs dense, worst {BLOCK}×{BLOCK} block {worst} → {dest}"

    return compare


def _compare_one(compare: Callable[[JobResult], str], job: JobResult) -> tuple[str, bool]:
    """``compare(job)``'s line, or one failure line (as a failed job's) and ``False``."""
    from amsr.runtime.jobs import JOB_ERRORS

    try:
        return compare(job), True
    except JOB_ERRORS as e:
        msg = str(e) if str(job.src) in str(e) else f"{job.src}: {e}"
        return f"{PROG}: compare failed: {msg.splitlines()[0]}", False


def _run(args: argparse.Namespace) -> int:
    from amsr.runtime.jobs import plan_jobs
    from amsr.runtime.onnxrt import parse_providers
    from amsr.runtime.upscaler import RunOptions

    plan = plan_jobs(args.inputs, args.out, overwrite=args.overwrite)
    options = RunOptions(providers=parse_providers(args.providers), threads=args.threads, tile=args.tile or None,
                         overlap=args.overlap, per_tile_mask=args.per_tile_mask)
    failed = list(plan.failed)
    for r in failed:
        print(f"{PROG}: failed: {r.error}", file=sys.stderr)
    written = compare_failed = 0
    if plan.todo:
        onnx = _onnx_path(args)
        if args.onnx is None and not args.dense:  # auto: the dense graph where it is the faster (amsr.sparse.auto)
            from dataclasses import replace

            from amsr.runtime.upscaler import dense_fallback

            options = replace(options, dense_graph=dense_fallback(onnx, args.model, args.scale,
                                                                  variant=args.variant, weights=args.weights))
        scores: list[float] = []
        compare = _comparer(args, scores) if args.compare is not None else None
        progress = _Progress(len(plan.todo), disable=args.no_progress)
        try:
            if args.ray is not None:
                from amsr.runtime.ray_pipeline import upscale_files_ray

                results: Iterable[JobResult] = upscale_files_ray(
                    plan.todo, onnx, options, workers=args.workers or 2, address=args.ray or None)
            else:
                results = _run_local(plan.todo, onnx, options, args.workers or 1,
                                     None if args.no_progress else progress)
            for r in results:
                progress.finished(r.src)
                if r.ok:
                    written += 1
                    if compare is not None:
                        line, ok = _compare_one(compare, r)
                        compare_failed += not ok
                        progress.write(line, file=sys.stdout if ok else sys.stderr)
                else:
                    failed.append(r)
                    progress.write(f"{PROG}: failed: {r.error}", file=sys.stderr)
        finally:
            progress.close()
        if written:
            print(_run_summary(args, onnx, options, scores), file=sys.stderr)
    summary = f"{PROG}: {written} written to {args.out}"
    if plan.existing:
        summary += f", {len(plan.existing)} skipped (output exists; --overwrite to redo)"
    if failed:
        summary += f", {len(failed)} failed"
    if compare_failed:
        summary += f", {compare_failed} comparison(s) failed"
    print(summary, file=sys.stderr)
    return 1 if failed or compare_failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()

    def body(args: argparse.Namespace) -> int:
        _check_args(parser, args)
        return _run(args)

    return run_main(PROG, body, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
