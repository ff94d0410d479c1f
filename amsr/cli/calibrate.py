"""amsr-calibrate: measure a grid of mask settings on your own HR images and write the most
compute-saving one whose mean Y-PSNR loss stays within the budget (an operating point for --operating-point
FILE of amsr-eval, amsr-export, amsr-upscale and amsr-bench). LR images are made by torch bicubic downscale
with antialias (not MATLAB imresize); use images like those you will upscale, never the test set you report.
Settings measured: amsr.tools.calibrate.default_grid. Defaults calibrated on T91+BSD200 ship with amsr for
CARN-M, IMDN and PAN (x2–x4) and IMDTN (x4): --operating-point default[:DB]."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from amsr.cli.common import (
    DEFAULT_BUDGET_DB,
    UsageError,
    add_model_args,
    add_verbose_arg,
    load_model,
    model_from_args,
    parser,
    run_main,
    write_json,
)
from amsr.core.errors import AmsrError

if TYPE_CHECKING:
    from amsr.operating_point import OperatingPoint


def add_calibration_args(p: argparse._ActionsContainer) -> None:  # a parser or an argument group
    p.add_argument("--max-images", type=int, default=20, help="calibrate on at most this many images (default 20)")
    p.add_argument("--crop", type=int, default=128,
                   help="centre crop of this many LR px per side (default 128; 0 = whole images)")


def build_parser() -> argparse.ArgumentParser:
    p = parser("amsr-calibrate", __doc__,
               "amsr-calibrate --model carn_m --scale 4 --images my_photos/ --json carn_m_x4_op.json",
               "amsr-upscale my_photos/ --out up/ --model carn_m --scale 4 --operating-point carn_m_x4_op.json",
               "amsr-calibrate --module mynets.edsr:build --weights edsr_x4.pth --input-range 255 --scale 4 "
               "--images my_photos/ --json edsr_op.json")
    add_model_args(p, user_module=True)
    p.add_argument("--images", required=True, type=Path, metavar="DIR", help="folder of HR calibration images")
    p.add_argument("--budget", default=str(DEFAULT_BUDGET_DB), metavar="DB",
                   help=f"largest mean Y-PSNR loss allowed, dB (default {DEFAULT_BUDGET_DB})")
    add_calibration_args(p)
    p.add_argument("--reference-weights", type=Path, metavar="FILE",
                   help="the --weights are fine-tuned (amsr-finetune) and replace this original checkpoint: the "
                        "loss is measured against its dense output, and the thin blends only fine-tuned weights "
                        "tolerate are measured and admitted too (default: the --weights network's own output, "
                        "published weights' grid)")
    p.add_argument("--json", required=True, type=Path, metavar="FILE",
                   help="write the operating point here (a file named 'default' is given to --operating-point "
                        "as ./default)")
    add_verbose_arg(p)
    return p


def calibrate(args: argparse.Namespace, folder: Path, budget: float) -> OperatingPoint:
    if args.max_images is not None and args.max_images < 1:
        raise AmsrError(f"--max-images must be ≥ 1, got {args.max_images}")
    from amsr.tools.calibrate import choose_operating_point, load_calibration

    pairs = load_calibration(folder, args.scale, args.max_images, args.crop or None)
    model = model_from_args(args, load_model)
    ref_weights = getattr(args, "reference_weights", None)
    if ref_weights and getattr(args, "module", None):
        raise UsageError("--reference-weights is for zoo models (--model)")
    reference = load_model(args.model, args.scale, weights=ref_weights, variant=args.variant) if ref_weights else None
    progress = (lambda s: print(f"calibrating {s}", file=sys.stderr)) if getattr(args, "verbose", False) else None
    op = choose_operating_point(model, pairs, budget, progress=progress, reference=reference,
                                fine_tuned=reference is not None)
    op.calibration.update({"folder": str(folder), "crop_lr_px": args.crop or None,
                           "lr": "torch bicubic downscale, antialias=True, uint8"})
    return op


def _run(args: argparse.Namespace) -> int:
    from amsr.core.files import check_writable
    from amsr.operating_point import parse_budget

    budget = parse_budget(args.budget)
    check_writable(args.json, "--json")  # before minutes of calibration
    op = calibrate(args, args.images, budget)
    write_json(args.json, op.to_json())
    if op.chosen is None and "reason" in op.calibration:
        print(f"{op.model} x{args.scale}: {op.calibration['reason']}: use the dense model")
    elif op.chosen is None:
        print(f"{op.model} x{args.scale}: no setting stays within {budget} dB on "
              f"{op.calibration['images']} image(s): use the dense model")
    else:
        c = op.chosen
        floor = "" if c.config.hf_floor is None else f", hf_floor {c.config.hf_floor}"
        print(f"{op.model} x{args.scale}: dilation {c.config.dilation}, output_dilation "
              f"{c.config.output_dilation}, window_threshold {c.config.window_threshold}{floor}: "
              f"{-c.loss_db:+.3f} dB, {100 * c.saved:.1f}% GMACs saved on {op.calibration['images']} image(s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("amsr-calibrate", _run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
