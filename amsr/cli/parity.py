"""amsr-parity: does an exported ONNX model compute what the PyTorch reference computes?

The reference is rebuilt from the model identity stored in the file by amsr-export (model, scale, variant,
mask settings); --model/--scale/--weights override it. Golden outputs come from PyTorch, the graph runs
in onnxruntime, and Polygraphy's comparator checks max |Δ| ≤ --atol; masks must be identical and the
Y-PSNR against HR may move by at most --psnr-tol dB. Prints PASSED or FAILED; exit status 0 or 1.

--fidelity checks what a user sees instead: the graph runs as amsr-upscale runs it (tiled, the tile halved
for an image that fits one, so every image runs in ≥ 2 tiles) on the 8-bit RGB images of --data/LR (or
--data itself), against the dense network of the same model in PyTorch. Per image: PSNR against dense over
the whole image and over the flat region (output mask 0), the worst 32×32 HR block, and max |tiled −
untiled| in 8-bit levels; PASSED needs ≥ 45 dB whole and flat and ≥ 30 dB for the worst block on every image
(runtime/fidelity.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from amsr.cli.common import ModelName, UsageError, add_verbose_arg, graph_model, parser, run_main, write_json
from amsr.core.errors import AmsrError

if TYPE_CHECKING:
    from torch import nn

    from amsr.models import LoadedModel
    from amsr.runtime.parity import ParityResult


def build_parser() -> argparse.ArgumentParser:
    p = parser("amsr-parity", __doc__,
               "amsr-parity --onnx carn_m_x4.onnx --data Set5/x4                 # Set5/x4/{HR,LR}/",
               "amsr-parity --onnx carn_m_x4.onnx --data Photos2K/x4 --fidelity --tile 512")
    p.add_argument("--onnx", type=Path, required=True, metavar="FILE", help="exported model (from amsr-export)")
    p.add_argument("--data", type=Path, required=True, metavar="DIR",
                   help="folder with LR/ (and HR/ for the PSNR check)")
    p.add_argument("--model", action=ModelName, metavar="NAME",
                   help="override the model name stored in the file (default: the stored one)")
    p.add_argument("--scale", type=int, help="override the scale stored in the file (default: the stored one)")
    p.add_argument("--variant", default=None,
                   help="override the model variant stored in the file (default: the stored one)")
    p.add_argument("--weights", type=Path, metavar="FILE",
                   help="checkpoint (default: $AMSR_WEIGHTS_DIR, else the cache, else downloaded; refused unless the "
                        "graph was exported from it)")
    p.add_argument("--trt", type=Path, metavar="ENGINE",
                   help="check this TensorRT engine (built from --onnx) instead of running --onnx in onnxruntime (the "
                        "default); "
                        "tolerances follow the engine's precision (runtime/trt_parity.py)")
    p.add_argument("--atol", type=float, default=1e-4, help="max abs difference allowed (default 1e-4)")
    p.add_argument("--psnr-tol", type=float, default=1e-3, metavar="DB",
                   help="max PSNR difference in dB (default 0.001)")
    p.add_argument("--providers", default=None, help="onnxruntime providers: 'auto' or a comma list (default CPU)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the per-image report here (default: none)")
    f = p.add_argument_group("visual fidelity (--fidelity)")
    f.add_argument("--fidelity", action="store_true",
                   help="run the graph tiled, as amsr-upscale does, and score it against the dense model instead "
                        "(see above)")
    f.add_argument("--tile", type=int, default=512,
                   help="LR tile side, as amsr-upscale --tile (default 512; half the image when it fits one tile)")
    f.add_argument("--threads", type=int, help="onnxruntime threads (default: one per core)")
    f.add_argument("--sheets", type=Path, metavar="DIR",
                   help="also write <stem>_sheet.png per image: dense | accelerated | |diff|×8 of the worst blocks "
                        "(default: none)")
    add_verbose_arg(p)
    return p


def _reference(args: argparse.Namespace, meta: dict[str, str]) -> nn.Module:
    from amsr.export.metadata import mask_config_field

    model = _model(args, meta)
    kind = meta.get("amsr.kind", "dense")
    if kind == "dense":
        return model.dense()
    if kind != "accelerated":
        raise AmsrError(f"{args.onnx}: parity checks full models, not a {kind!r} graph")
    config = mask_config_field(meta, str(args.onnx))
    if config is None:
        raise AmsrError(f"{args.onnx}: an accelerated graph without amsr.mask_config metadata")
    # The dense reference path computes the same values as the sparse one, much faster in PyTorch.
    return model.accelerated(config, mode="dense")


def _model(args: argparse.Namespace, meta: dict[str, str]) -> LoadedModel:
    """The zoo model the graph records (``--model/--scale/--variant/--weights`` override it)."""
    return graph_model(args.onnx, meta, name=args.model, scale=args.scale, variant=args.variant,
                       weights=args.weights)


def _engine_parity(reference: nn.Module, args: argparse.Namespace) -> ParityResult:
    """The engine against the PyTorch golden outputs on the LR/HR images of ``--data``."""
    from amsr.io.images import read_rgb8, to_tensor
    from amsr.runtime.parity import parity_images
    from amsr.runtime.trt_parity import compare_engine_with_torch

    lr, hr = parity_images(args.data)
    return compare_engine_with_torch(reference, args.trt, [to_tensor(read_rgb8(p)).numpy() for p in lr],
                                     names=[p.name for p in lr], hr=None if hr is None else [read_rgb8(p) for p in hr],
                                     onnx_path=args.onnx)


def _run(args: argparse.Namespace) -> int:
    from amsr.export.metadata import read_metadata
    from amsr.runtime.onnxrt import parse_providers
    from amsr.runtime.parity import check_parity_on_set

    _check_outputs(args)
    if not args.onnx.is_file():
        raise AmsrError(f"{args.onnx}: no such file")
    meta = read_metadata(args.onnx)
    if args.fidelity:
        return _fidelity(args, meta)
    _check_data_scale(args, meta)
    reference = _reference(args, meta)
    if args.trt is not None:
        result = _engine_parity(reference, args)
    else:
        result = check_parity_on_set(reference, args.onnx, args.data, atol=args.atol, psnr_tol=args.psnr_tol,
                                     providers=parse_providers(args.providers))
    for row in result.rows:
        print(f"  {row.name}: max|Δ| {row.max_abs_diff:.2e}, mask mismatches {row.mask_mismatch_pixels}"
              + (f", ΔPSNR {row.psnr_diff:.2e} dB" if row.psnr_diff is not None else ""))
    print(result.summary())
    if args.json:
        def num(v: float | None) -> float | None:  # numpy scalars → JSON numbers
            return None if v is None else float(v)

        write_json(args.json, {"passed": bool(result.passed), "max_abs_diff": num(result.max_abs_diff),
                               "psnr_diff": num(result.psnr_diff),
                               "mask_mismatch_pixels": int(result.mask_mismatch_pixels),
                               "atol": args.atol, "psnr_tol": args.psnr_tol,
                               "images": [{"name": r.name, "max_abs_diff": num(r.max_abs_diff),
                                           "mask_mismatch_pixels": int(r.mask_mismatch_pixels),
                                           "psnr_diff": num(r.psnr_diff)} for r in result.rows]})
    return 0 if result.passed else 1


def _fidelity(args: argparse.Namespace, meta: dict[str, str]) -> int:
    """``--fidelity``: the graph tiled as amsr-upscale runs it, against the dense model (runtime/fidelity.py)."""
    from amsr.io.images import lr_images
    from amsr.runtime.fidelity import BLOCK, FidelityThresholds, check_fidelity, fidelity_line, fidelity_report
    from amsr.runtime.onnxrt import parse_providers

    kind = meta.get("amsr.kind", "dense")
    if kind not in ("dense", "accelerated"):
        raise AmsrError(f"{args.onnx}: --fidelity checks full models, not a {kind!r} graph")
    model = _model(args, meta)
    images = lr_images(args.data)
    thresholds = FidelityThresholds()
    rows = []
    for r in check_fidelity(args.onnx, images, model.dense(), tile=args.tile, threads=args.threads,
                            providers=parse_providers(args.providers), sheets=args.sheets):
        print(f"  {fidelity_line(r, thresholds)}", flush=True)
        rows.append(r)
    report = fidelity_report(rows, thresholds)
    passed = sum(i["passed"] for i in report["images"])
    print(f"{'PASSED' if report['passed'] else 'FAILED'}: {passed}/{len(rows)} images within "
          f"{thresholds.min_psnr_db:g} dB (whole, flat) and {thresholds.min_block_psnr_db:g} dB (worst "
          f"{BLOCK}×{BLOCK} block) of the dense model, tiled at {args.tile} px")
    if args.json:
        write_json(args.json, {"onnx": str(args.onnx), "model": model.arch.id, "scale": model.scale,
                               "kind": kind, "tile": args.tile, **report})
    return 0 if report["passed"] else 1


def _check_outputs(args: argparse.Namespace) -> None:
    """Options that do not go together, and outputs that cannot be written, refused before the (minutes long)
    comparison runs, not after it."""
    from amsr.core.files import check_writable, check_writable_dir

    if not args.fidelity and (args.sheets is not None or args.threads is not None):
        raise UsageError("--sheets and --threads apply only to --fidelity")
    if args.fidelity and args.trt is not None:
        raise UsageError("--fidelity runs the graph in onnxruntime: drop --trt")
    for name in ("tile", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be ≥ 1, got {value}")
    if args.json:
        check_writable(args.json, "--json")
    if args.sheets is not None:
        check_writable_dir(args.sheets, "--sheets")


def _check_data_scale(args: argparse.Namespace, meta: dict[str, str]) -> None:
    """Refuse HR/LR pairs of another scale than the graph's before anything runs (a wrong-scale set ran 86 s
    and ended in a traceback). Reads image headers only; pairs it cannot read are left to the run to report."""
    from PIL import Image

    from amsr.export.metadata import int_field
    from amsr.io.images import list_images

    scale = args.scale or int_field(meta, "amsr.scale", str(args.onnx))
    lr_dir, hr_dir = Path(args.data) / "LR", Path(args.data) / "HR"
    if scale is None or not lr_dir.is_dir() or not hr_dir.is_dir():
        return
    for lr in list_images(lr_dir):
        hr = hr_dir / lr.name
        try:
            with Image.open(lr) as a, Image.open(hr) as b:
                (w, h), (W, H) = a.size, b.size
        except (OSError, ValueError):
            continue
        if (W, H) != (w * scale, h * scale):
            raise AmsrError(f"{args.data}: {lr.name} is {w}×{h} in LR/ and {W}×{H} in HR/, not x{scale} as "
                            f"{args.onnx.name} upscales (data of another scale?)")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("amsr-parity", _run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
