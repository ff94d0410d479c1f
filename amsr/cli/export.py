"""``amsr-export``: a zoo model (dense or accelerated) to ONNX, a Triton repository, or a TensorRT engine.

    amsr-export --model carn_m --scale 4 --dilation 2 --out carn_m_x4_amsr.onnx
    amsr-export --model carn_m --scale 4 --dense --out carn_m_x4.onnx
    amsr-export --model carn_m --scale 4 --mask-only --out carn_m_mask.onnx
    amsr-export --model swinir --scale 4 --out swinir_sparse.engine      # ONNX beside it, then TensorRT

An ``.engine`` output first writes ``<name>.onnx`` beside it; without TensorRT (or a GPU) the ONNX file
stays and the command fails with a one-line reason.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from amsr.cli.common import (
    DEFAULTS_EPILOG,
    add_mask_args,
    add_model_args,
    add_operating_point_arg,
    config_and_source,
    describe_settings,
    mask_options_given,
    run_main,
)
from amsr.errors import AmsrError
from amsr.mask import MaskConfig
from amsr.models import load_model
from amsr.weights import sha256_of


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amsr-export", description=__doc__, epilog=DEFAULTS_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_mask_args(p)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--dense", action="store_true", help="export the unaccelerated model")
    what.add_argument("--mask-only", action="store_true", help="export the mask-generation subgraph alone")
    p.add_argument("--out", type=Path, required=True, help="output .onnx (or .engine for TensorRT)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (≥ 17, default 17)")
    p.add_argument("--sparse-impl", choices=("gather_scatter", "plugin"), default="gather_scatter",
                   help="sparse stages as standard GatherND/ScatterND ops (default) or amsr::MaskedConv3x3 "
                        "TensorRT plugin nodes (see plugins/README.md)")
    add_operating_point_arg(p)
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-PyTorch check after export")
    p.add_argument("--triton-repo", type=Path, help="also write a Triton model repository here")
    p.add_argument("--triton-name", help="model name in the Triton repository (default: output file stem)")
    p.add_argument("--fp16", action="store_true", help="TensorRT: build in fp16 (refused for models without fp16 support)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _run(args: argparse.Namespace) -> int:
    from amsr.export.metadata import add_metadata
    from amsr.export.passes import export_mask_only
    from amsr.export.plugin_export import export_with_sparse_impl

    _check_outputs(args)
    model = load_model(args.model, args.scale, weights=args.weights, variant=args.variant)
    engine = is_engine_path(args.out)
    onnx_path = args.out.with_suffix(".onnx") if engine else args.out
    if args.dense and (mask_options_given(args) or args.operating_point):
        raise AmsrError("--dense exports the network without a mask: drop the mask options / --operating-point")
    config, source = (None, {"reason": "--dense"}) if args.dense else config_and_source(args)
    if args.mask_only:
        config = config or MaskConfig()  # a model whose default is dense: the generator at its own defaults
    print(f"amsr-export: {args.model} x{args.scale}: {describe_settings(config, source)}", file=sys.stderr)
    if args.mask_only:
        export_mask_only(model.accelerated(config), onnx_path, opset=args.opset)
    else:
        module = model.dense() if config is None else model.accelerated(config)
        export_with_sparse_impl(module, onnx_path, sparse_impl=args.sparse_impl, opset=args.opset,
                                verify=not args.no_verify)
    add_metadata(onnx_path, {"amsr.model": args.model, "amsr.variant": model.variant,
                             "amsr.weights_sha256": sha256_of(model.weights)})
    print(f"wrote {onnx_path}")
    if args.triton_repo:
        from amsr.export.triton import TritonOptions, write_triton_repo

        name = args.triton_name or onnx_path.stem
        repo = write_triton_repo(onnx_path, args.triton_repo,
                                 TritonOptions(name, tensorrt=args.fp16 or engine, tensorrt_fp16=args.fp16))
        print(f"wrote Triton model {repo}")
    if engine:
        from amsr.runtime.trt import BuildConfig, build_engine

        build_engine(onnx_path, args.out, BuildConfig(fp16=args.fp16), supports_half=model.arch.supports_half,
                     model_name=args.model)
        print(f"wrote {args.out}")
    return 0


ENGINE_SUFFIXES = (".engine", ".plan")  # TensorRT's two customary names for a serialized engine


def is_engine_path(out: Path) -> bool:
    return out.suffix.lower() in ENGINE_SUFFIXES


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before the model is loaded, an ``--out`` of another type or one that cannot be written (an
    existing directory, a path below a file, a read-only folder), and the same for ``--triton-repo``."""
    from amsr.files import OutputPathError, check_writable, check_writable_dir

    check_writable(args.out, "--out")
    if args.out.suffix.lower() != ".onnx" and not is_engine_path(args.out):
        raise OutputPathError(f"--out {args.out}: give a .onnx file, or .engine/.plan for a TensorRT engine "
                              "(its .onnx is written beside it)")
    if is_engine_path(args.out):
        check_writable(args.out.with_suffix(".onnx"), "--out (the .onnx beside the engine)")
    if args.triton_repo is not None:
        check_writable_dir(args.triton_repo, "--triton-repo")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("amsr-export", _run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
