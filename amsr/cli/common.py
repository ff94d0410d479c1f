"""Argument groups shared by the amsr CLIs, and the error boundary every ``main`` goes through."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from amsr.errors import AmsrError
from amsr.files import save_bytes
from amsr.mask import MaskConfig
from amsr.zoo import architecture_names


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=required, choices=architecture_names(), metavar="NAME",
                   help=f"zoo model: {', '.join(architecture_names())}")
    g.add_argument("--scale", type=int, required=required, help="upscaling factor (2, 3 or 4)")
    g.add_argument("--variant", default="", help="model variant (swinir: classical, lightweight, real)")
    g.add_argument("--weights", type=Path, help="checkpoint file (default: $AMSR_WEIGHTS_DIR, cache, download)")


def add_mask_args(p: argparse.ArgumentParser) -> None:
    d = MaskConfig()
    g = p.add_argument_group("mask")
    g.add_argument("--dilation", type=int, default=d.dilation, help=f"mask dilation radius in LR px (default {d.dilation})")
    g.add_argument("--blur-size", type=int, default=d.blur_size, help=f"Gaussian kernel size (default {d.blur_size})")
    g.add_argument("--blur-sigma", type=float, default=d.blur_sigma, help=f"Gaussian sigma (default {d.blur_sigma})")
    g.add_argument("--window-threshold", type=float, default=d.window_threshold,
                   help="transformer blocks compute a window when its mean mask is ≥ this "
                        f"(0: all windows; default {d.window_threshold})")
    g.add_argument("--output-dilation", type=int, default=d.output_dilation, metavar="D_OUT",
                   help="output blend: network output where the mask dilated by D_OUT (≤ --dilation) is 1, "
                        "torch bicubic elsewhere (default: no blend)")


def mask_config_from(args: argparse.Namespace) -> MaskConfig:
    try:
        return MaskConfig(blur_size=args.blur_size, blur_sigma=args.blur_sigma, dilation=args.dilation,
                          window_threshold=args.window_threshold,
                          output_dilation=getattr(args, "output_dilation", None))
    except ValueError as e:
        raise AmsrError(str(e)) from None


OPERATING_POINT_HELP = ("mask settings from amsr-calibrate --json FILE, or 'default' / 'default:DB': the shipped "
                        "default of --model at --scale (calibrated on T91+BSD200) for a budget of DB dB mean Y-PSNR "
                        "loss (default 0.05; the largest shipped budget ≤ DB is used: 0.05 or 0.1); replaces the "
                        "mask options. A file named 'default' is ./default")


def add_operating_point_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--operating-point", metavar="FILE|default[:DB]", help=OPERATING_POINT_HELP)


def config_and_source(args: argparse.Namespace) -> tuple[MaskConfig, dict[str, object] | None]:
    """The mask settings of a command line: ``--operating-point`` when given, else the mask options; and
    where they came from (``None``: the mask options)."""
    if getattr(args, "operating_point", None) is None:
        return mask_config_from(args), None
    from amsr.operating_point import resolve_operating_point

    return resolve_operating_point(args.operating_point, args.model, args.scale)


def write_json(path: Path, obj: object) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    save_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def run_main(prog: str, body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
             argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run ``body``; an ``AmsrError`` becomes one line on stderr and exit status 1."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format=f"{prog}: %(message)s")
    try:
        return body(args)
    except AmsrError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
