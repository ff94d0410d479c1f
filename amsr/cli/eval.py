"""amsr-eval: dense vs AMSR quality and effective compute of a zoo model (or your own, --module) on an HR/LR folder."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from amsr.cli.calibrate import add_calibration_args, calibrate
from amsr.cli.common import (
    OPERATING_POINT_HELP,
    add_mask_args,
    add_model_args,
    add_verbose_arg,
    config_and_source,
    describe_settings,
    graph_model,
    load_model,
    mask_options_given,
    model_from_args,
    parser,
    run_main,
    write_json,
)
from amsr.core.errors import AmsrError

if TYPE_CHECKING:
    import torch

    from amsr.masking.mask import MaskConfig
    from amsr.tools.evaluate import EvalReport, ImagePair


def build_parser() -> argparse.ArgumentParser:
    p = parser("amsr-eval", __doc__,
               "amsr-eval --model carn_m --scale 4 --data Set5/x4 --json carn_m_x4.json   # Set5/x4/{HR,LR}/",
               "amsr-eval --backend onnxruntime --onnx carn_m_x4.onnx --data Set5/x4   # an amsr-export graph")
    add_model_args(p, required=False, user_module=True)
    add_mask_args(p)
    p.add_argument("--data", required=True, metavar="DIR", help="folder with HR/ and LR/ of the same file names")
    p.add_argument("--backend", choices=("pytorch", "onnxruntime"), default="pytorch",
                   help="run the accelerated model in PyTorch (default) or run --onnx in onnxruntime")
    p.add_argument("--onnx", type=Path, metavar="FILE",
                   help="exported model (amsr-export) for --backend onnxruntime; model, scale and mask settings are "
                        "read from the file (default: none)")
    op = p.add_argument_group("operating point (instead of the mask options)")
    x = op.add_mutually_exclusive_group()
    x.add_argument("--quality-budget", metavar="DB",
                   help="calibrate first (on --calibration, never on --data) and use the most compute-saving "
                        "setting whose mean Y-PSNR loss there is ≤ DB (default: no calibration)")
    x.add_argument("--operating-point", metavar="FILE|default[:DB]", help=OPERATING_POINT_HELP)
    op.add_argument("--calibration", metavar="DIR", type=Path,
                    help="HR calibration images for --quality-budget (default $AMSR_DATA_DIR/train)")
    add_calibration_args(op)
    p.add_argument("--json", metavar="FILE", help="also write the report here, atomically (default: table only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on stderr)")
    add_verbose_arg(p)
    return p


def format_table(r: EvalReport) -> str:
    lines = [f"{r.model} x{r.scale} on {r.images} image(s)   mask: {r.settings}",
             f"{'':8}{'PSNR-Y':>9}{'SSIM-Y':>9}{'GMACs':>10}{'density':>9}"]
    for label, s in (("dense", r.dense), ("amsr", r.amsr)):
        dens = f"{s.density:9.3f}" if s.density is not None else f"{'':9}"
        lines.append(f"{label:8}{s.psnr_y:9.3f}{s.ssim_y:9.4f}{s.gmacs:10.3f}{dens}")
    saved = 1 - r.amsr.gmacs / r.dense.gmacs if r.dense.gmacs else 0.0
    lines.append(f"{'Δ':8}{r.amsr.psnr_y - r.dense.psnr_y:+9.3f}{r.amsr.ssim_y - r.dense.ssim_y:+9.4f}"
                 f"{-100 * saved:+9.1f}%")
    if r.amsr.windows is not None:
        lines.append(f"transformer windows computed: {r.amsr.windows:.3f}")
    return "\n".join(lines)


def _onnx_identity(args: argparse.Namespace) -> None:
    """Fill --model/--scale/--variant and the mask settings from an exported file's metadata."""
    from amsr.export.metadata import int_field, mask_config_field, read_metadata

    if args.onnx is None or not args.onnx.is_file():
        raise AmsrError("--backend onnxruntime needs --onnx FILE (an amsr-export output)")
    meta = read_metadata(args.onnx)  # validated: a malformed amsr.* value is one CheckpointError line
    args.onnx_meta = meta
    if "amsr.user_network" in meta and args.model is None and args.module is None:
        args.module = meta.get("amsr.model")  # amsr-export --module: rebuilt from the file (graph_model)
    elif args.module is None:
        args.model = args.model or meta.get("amsr.model")
    args.scale = args.scale or int_field(meta, "amsr.scale", str(args.onnx))
    args.variant = args.variant or meta.get("amsr.variant", "")
    if meta.get("amsr.kind") != "accelerated":
        raise AmsrError(f"{args.onnx}: not an accelerated export (kind {meta.get('amsr.kind')!r})")
    args.onnx_config = mask_config_field(meta, str(args.onnx))
    if args.onnx_config is None:
        raise AmsrError(f"{args.onnx}: an accelerated export without amsr.mask_config metadata")


def _ort_scored(twin: torch.nn.Module, onnx_path: Path) -> torch.nn.Module:
    """SR from onnxruntime; effective MACs and mask density from the PyTorch twin run on the same input
    (the masks are identical — ``amsr-parity`` checks it), since onnxruntime cannot count realised work."""
    import torch

    from amsr.runtime.onnxrt import OrtUpscaler

    class OrtScored(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.twin = twin
            self.ort = OrtUpscaler(onnx_path)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.twin(x)
            return torch.from_numpy(self.ort(x.numpy()))

    return OrtScored()


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from amsr.core import paths
    from amsr.core.files import check_writable
    from amsr.models import unwrap_accelerated
    from amsr.operating_point import parse_budget
    from amsr.tools.evaluate import evaluate, find_pairs

    if args.json:  # before the evaluation, so that its results are never computed for nowhere
        check_writable(args.json, "--json")
    pairs = find_pairs(args.data)
    if args.backend == "onnxruntime":
        _onnx_identity(args)
    name = args.model or args.module
    if not name or not args.scale:
        raise AmsrError("--model (or --module) and --scale are required (or --backend onnxruntime --onnx FILE)")
    if (args.module and args.backend == "pytorch" and args.quality_budget is None
            and not (args.operating_point or mask_options_given(args))):
        raise AmsrError(f"{name}: --module has no shipped operating point: give mask options, --operating-point "
                        "FILE or --quality-budget DB")
    config: MaskConfig | None = args.onnx_config if args.backend == "onnxruntime" else None
    extra: dict[str, object] = {}
    if args.quality_budget is not None:
        budget = parse_budget(args.quality_budget)
        folder = args.calibration or paths.data_dir() / "train"
        if folder.resolve() == Path(args.data).resolve() or Path(args.data).resolve() in folder.resolve().parents:
            raise AmsrError("--calibration must not be the evaluation data (the reported numbers would not be honest)")
        op = calibrate(args, folder, budget)
        extra = {"operating_point": {k: v for k, v in op.to_json().items() if k != "grid"}}
        if op.config is None:
            raise AmsrError(f"no mask setting stays within {budget} dB on the calibration images: use the dense model")
        config = op.config
    elif config is None:
        config, source = config_and_source(args)
        if config is None:
            raise AmsrError(f"{name} x{args.scale}: {describe_settings(config, source)}; nothing to "
                            "compare: give mask options or --operating-point FILE")
        if source is not None:
            extra = {"operating_point": source}
    if args.backend == "onnxruntime" and args.module == args.onnx_meta.get("amsr.model"):
        model = graph_model(args.onnx, args.onnx_meta, scale=args.scale, weights=args.weights)
    else:
        model = model_from_args(args, load_model)
    acc = model.accelerated(config)
    inner = unwrap_accelerated(acc)

    def density() -> float:
        assert inner.last_mask is not None
        return float(inner.last_mask.mean())

    def progress(it: Iterable[ImagePair]) -> Iterable[ImagePair]:
        return tqdm(it, desc=f"{name} x{args.scale}", unit="img", disable=args.no_progress, file=sys.stderr)

    scored = _ort_scored(acc, args.onnx) if args.backend == "onnxruntime" else acc
    extra["backend"] = args.backend
    report = evaluate(name, args.scale, model.dense(), scored, density, pairs, {**config.to_json(), **extra},
                      progress, windows_of=inner.window_fraction)
    print(format_table(report))
    if args.json:
        write_json(args.json, report.to_json())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("amsr-eval", _run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
