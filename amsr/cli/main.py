"""amsr: the amsr tools under one name; amsr TOOL ... runs amsr-TOOL ... (same options, same output)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from amsr.core.errors import did_you_mean

# TOOL → what it does (its module amsr.cli.TOOL, console script amsr-TOOL).
TOOLS = {
    "eval": "dense vs AMSR quality and effective compute of a zoo model on an HR/LR folder",
    "calibrate": "pick the mask settings that stay within a quality budget on your images (an operating point)",
    "export": "a zoo model to ONNX, a Triton repository or a TensorRT engine",
    "parity": "check an exported graph against PyTorch, or its tiled output against the dense model",
    "upscale": "upscale image files with an exported graph or a zoo model",
    "bench": "dense vs accelerated speed of a zoo model on the same images",
    "finetune": "train a zoo model with its mask in the loop (mask-aware fine-tuning)",
}


def build_parser() -> argparse.ArgumentParser:
    width = max(map(len, TOOLS))
    listing = "\n".join(f"  {tool:<{width}}  {what}" for tool, what in TOOLS.items())
    return argparse.ArgumentParser(
        prog="amsr", usage="amsr TOOL [options]  (amsr TOOL --help for its options)",
        description=f"{__doc__}\n\ntools:\n{listing}", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  amsr export --model carn_m --scale 4 --out carn_m_x4.onnx\n"
               "  amsr upscale photos/ --out up/ --onnx carn_m_x4.onnx")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in TOOLS:
        tool_main = importlib.import_module(f"amsr.cli.{args[0]}").main
        return int(tool_main(args[1:]))
    parser = build_parser()
    if not args or args[0].startswith("-"):
        parser.parse_args(args)  # --help: the listing, exit 0; any other option: argparse's error, exit 2
        parser.print_usage(sys.stderr)
        return 2
    guess = did_you_mean(args[0], TOOLS)
    why = f"did you mean {guess!r}?" if guess else f"choose from {', '.join(TOOLS)}"
    parser.exit(2, f"amsr: error: unknown tool {args[0]!r}; {why}\n")
    return 2  # not reached


if __name__ == "__main__":
    sys.exit(main())
