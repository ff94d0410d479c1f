"""amsr-export: a zoo model or your own network (--module), dense or accelerated, to ONNX, a Triton repository, or a
TensorRT engine.

An .engine output first writes <name>.onnx beside it; without TensorRT (or a GPU) the ONNX file stays and the
command fails with a one-line reason. Unless --no-verify, the ONNX graph is run in onnxruntime and compared with
PyTorch before it is written; the last line says the result.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from amsr.cli.common import (
    add_mask_args,
    add_model_args,
    add_operating_point_arg,
    add_verbose_arg,
    config_and_source,
    describe_settings,
    UsageError,
    load_model,
    mask_options_given,
    model_from_args,
    parser,
    user_network_args,
    run_main,
)
from amsr.core.errors import AmsrError


def build_parser() -> argparse.ArgumentParser:
    p = parser("amsr-export", __doc__,
               "amsr-export --model carn_m --scale 4 --out carn_m_x4.onnx            # the shipped 0.05 dB point",
               "amsr-export --model carn_m --scale 4 --dense --out carn_m_x4_dense.onnx",
               "amsr-export --model swinir --scale 4 --out swinir_x4.engine        # ONNX beside it, then TensorRT",
               "amsr-export --module mynets.edsr:build --weights edsr_x4.pth --scale 4 --operating-point op.json "
               "--out edsr.onnx")
    add_model_args(p, user_module=True)
    add_mask_args(p)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--dense", action="store_true", help="export the unaccelerated model")
    what.add_argument("--mask-only", action="store_true", help="export the mask-generation subgraph alone")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="output .onnx (or .engine/.plan for TensorRT)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (≥ 17, default 17)")
    p.add_argument("--sparse-impl", choices=("gather_scatter", "plugin"), default="gather_scatter",
                   help="sparse stages as standard GatherND/ScatterND ops (default) or amsr::MaskedConv3x3 "
                        "TensorRT plugin nodes (see plugins/README.md)")
    add_operating_point_arg(p)
    p.add_argument("--no-verify", action="store_true",
                   help="skip the onnxruntime-vs-PyTorch check after export (default: check)")
    p.add_argument("--triton-repo", type=Path, metavar="DIR", help="also write a Triton model repository here "
                                                                   "(default: none)")
    p.add_argument("--triton-name", metavar="NAME", help="model name in the Triton repository (default: the --out "
                                                         "file stem)")
    p.add_argument("--fp16", action="store_true",
                   help="TensorRT: build in fp16 (default fp32; refused for models without fp16 support)")
    add_verbose_arg(p)
    return p


def _run(args: argparse.Namespace) -> int:
    from amsr.export.metadata import add_metadata, execution_field, read_metadata
    from amsr.export.onnx_export import export_mask_only
    from amsr.export.plugin_export import export_with_sparse_impl
    from amsr.runtime.export_check import onnxruntime_check
    from amsr.masking.mask import MaskConfig
    from amsr.weights import sha256_of

    _check_outputs(args)
    if args.module and not (args.dense or args.operating_point or mask_options_given(args)):
        raise UsageError("--module has no shipped operating point: give --operating-point FILE (from amsr-calibrate "
                         "--module … --json FILE), mask options, or --dense")
    model = model_from_args(args, load_model)
    name = args.model or args.module
    engine = is_engine_path(args.out)
    onnx_path = args.out.with_suffix(".onnx") if engine else args.out
    if args.dense and (mask_options_given(args) or args.operating_point):
        raise AmsrError("--dense exports the network without a mask: drop the mask options / --operating-point")
    config, source = (None, {"reason": "--dense"}) if args.dense else config_and_source(args)
    if args.mask_only and config is None:  # a model whose default is dense: the generator at its own defaults
        config, source = MaskConfig(), {"source": "mask generator defaults"}
    settings = describe_settings(config, source)
    print(f"amsr-export: {name} x{args.scale}: {settings}", file=sys.stderr)
    check = _VerificationLog(verbose=args.verbose)
    if args.mask_only:
        export_mask_only(model.accelerated(config), onnx_path, opset=args.opset)
        verified = "not compared with PyTorch (mask-only exports are checked by onnx.checker)"
    else:
        module = model.dense() if config is None else model.accelerated(config)
        with check.listening():
            export_with_sparse_impl(module, onnx_path, sparse_impl=args.sparse_impl, opset=args.opset,
                                    verify=None if args.no_verify else onnxruntime_check)
        verified = check.describe(args.no_verify, args.sparse_impl, masked=config is not None)
    identity = {"amsr.model": name, "amsr.variant": model.variant}
    if model.weights.is_file():  # a --module without --weights has its factory's weights, no file
        identity["amsr.weights_sha256"] = sha256_of(model.weights)
    if args.module:  # what amsr-parity needs to rebuild the same model from the file
        identity["amsr.user_network"] = json.dumps(user_network_args(args), sort_keys=True)
    add_metadata(onnx_path, identity)
    meta = read_metadata(onnx_path)
    kind = meta.get("amsr.kind", "dense")
    graph = {"accelerated": f"{execution_field(meta)} execution", "mask": "mask generator"}.get(
        kind, "dense graph")
    print(f"amsr-export: wrote {onnx_path}: {name} x{args.scale}, {settings}, {graph}; {verified}")
    if args.triton_repo:
        from amsr.export.triton import TritonOptions, write_triton_repo

        name = args.triton_name or onnx_path.stem
        repo = write_triton_repo(onnx_path, args.triton_repo,
                                 TritonOptions(name, tensorrt=args.fp16 or engine, tensorrt_fp16=args.fp16))
        print(f"wrote Triton model {repo}")
    if engine:
        from amsr.runtime.trt import BuildConfig, build_engine

        build_engine(onnx_path, args.out, BuildConfig(fp16=args.fp16), supports_half=model.arch.supports_half,
                     model_name=name)
        print(f"wrote {args.out}")
    return 0


class _VerificationLog(logging.Filter):
    """What the export's check against PyTorch found, read from the log: the exporter checks the graph with
    ``runtime.parity.compare_with_torch``, which logs its summary at INFO, and logs a warning when it could not
    check (onnxruntime missing). While ``listening``, that logger's INFO lines are noted and shown only with -v,
    as before; its warnings still show."""

    LOGGER = "amsr.runtime.parity"
    SKIPPED = "amsr.export.onnx_export"

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose
        self.summary: str | None = None
        self.skipped: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name == self.LOGGER and (m := re.search(r"(PASSED|FAILED): .*", message)):
            self.summary = m.group(0)
        elif record.name == self.SKIPPED and "not verified" in message:
            self.skipped = message.split("not verified: ", 1)[-1]
        return self.verbose or record.levelno >= logging.WARNING

    @contextmanager
    def listening(self) -> Iterator[None]:
        loggers = [logging.getLogger(self.LOGGER), logging.getLogger(self.SKIPPED)]
        levels = [lg.level for lg in loggers]
        loggers[0].setLevel(logging.INFO)  # so that compare_with_torch's summary is logged at all
        for lg in loggers:
            lg.addFilter(self)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.removeFilter(self)
                lg.setLevel(level)

    def describe(self, no_verify: bool, sparse_impl: str, masked: bool) -> str:
        """The end of amsr-export's last line: what the check found, or why there was none."""
        if no_verify:
            return "not compared with PyTorch (--no-verify)"
        if self.skipped is not None:
            return f"not compared with PyTorch ({self.skipped})"
        if self.summary is None:  # checked (a failed check raises) but its summary was not logged
            return "verified against PyTorch in onnxruntime"
        m = re.search(r"(\d+) inputs, max \|diff\| (\S+) \(atol (\S+)\), mask mismatches (\d+)", self.summary)
        if m is None:
            found = f"compared with PyTorch in onnxruntime: {self.summary}"
        else:
            n, diff, atol, masks = m.groups()
            found = (f"verified against PyTorch in onnxruntime on {n} synthetic images: max |Δ| {diff} "
                     f"(atol {atol})" + (", masks identical" if masked and masks == "0" else ""))
        if sparse_impl == "plugin":
            found = f"the gather/scatter graph {found}; its plugin rewrite is checked by onnx.checker only"
        return found


ENGINE_SUFFIXES = (".engine", ".plan")  # TensorRT's two customary names for a serialized engine


def is_engine_path(out: Path) -> bool:
    return out.suffix.lower() in ENGINE_SUFFIXES


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before the model is loaded, an ``--out`` of another type or one that cannot be written (an
    existing directory, a path below a file, a read-only folder), and the same for ``--triton-repo``."""
    from amsr.core.files import OutputPathError, check_writable, check_writable_dir

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
