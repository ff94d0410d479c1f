"""``amsr-parity``: does an exported ONNX model compute what the PyTorch reference computes?

    amsr-parity --onnx carn_m_x4_amsr.onnx --data ../shared/data/Set5/x4

The reference is rebuilt from the model identity stored in the file by amsr-export (model, scale, variant,
mask settings); ``--model/--scale/--weights`` override it. Golden outputs come from PyTorch, the graph runs
in onnxruntime, and Polygraphy's comparator checks max |Δ| ≤ --atol; masks must be identical and the
Y-PSNR against HR may move by at most --psnr-tol dB. Prints PASSED or FAILED; exit status 0 or 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from amsr.cli.common import run_main, write_json
from amsr.errors import AmsrError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amsr-parity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", type=Path, required=True, help="exported model (from amsr-export)")
    p.add_argument("--data", type=Path, required=True, help="folder with LR/ (and HR/ for the PSNR check)")
    p.add_argument("--model", help="override the model name stored in the file")
    p.add_argument("--scale", type=int, help="override the scale stored in the file")
    p.add_argument("--variant", default=None)
    p.add_argument("--weights", type=Path, help="checkpoint (default: as for amsr-eval)")
    p.add_argument("--trt", type=Path, metavar="ENGINE",
                   help="check this TensorRT engine (built from --onnx) instead of running --onnx in onnxruntime; "
                        "tolerances follow the engine's precision (runtime/trt_parity.py)")
    p.add_argument("--atol", type=float, default=1e-4, help="max abs difference allowed (default 1e-4)")
    p.add_argument("--psnr-tol", type=float, default=1e-3, help="max PSNR difference in dB (default 0.001)")
    p.add_argument("--providers", default=None, help="onnxruntime providers: 'auto' or a comma list (default CPU)")
    p.add_argument("--json", type=Path, help="write the per-image report here")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _reference(args: argparse.Namespace, meta: dict[str, str]):  # type: ignore[no-untyped-def]
    from amsr.mask import MaskConfig
    from amsr.models import load_model

    name = args.model or meta.get("amsr.model")
    scale = args.scale or (int(meta["amsr.scale"]) if "amsr.scale" in meta else None)
    if not name or not scale:
        raise AmsrError(f"{args.onnx} does not say which model it is (not written by amsr-export?): "
                        "pass --model and --scale")
    model = load_model(name, scale, weights=args.weights,
                       variant=args.variant if args.variant is not None else meta.get("amsr.variant", ""))
    _check_weights_sha(args, meta, model.weights)
    kind = meta.get("amsr.kind", "dense")
    if kind == "dense":
        return model.dense()
    if kind != "accelerated":
        raise AmsrError(f"{args.onnx}: parity checks full models, not a {kind!r} graph")
    try:
        config = MaskConfig(**json.loads(meta["amsr.mask_config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise AmsrError(f"{args.onnx}: unreadable mask settings in metadata ({e})") from None
    # The dense reference path computes the same values as the sparse one, much faster in PyTorch.
    return model.accelerated(config, mode="dense")


def _engine_parity(reference, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The engine against the PyTorch golden outputs on the LR/HR images of ``--data``."""
    from amsr.evaluate import find_pairs
    from amsr.images import read_rgb8, to_tensor
    from amsr.runtime.trt_parity import compare_engine_with_torch

    pairs = find_pairs(args.data)
    return compare_engine_with_torch(reference, args.trt, [to_tensor(read_rgb8(p.lr)).numpy() for p in pairs],
                                     names=[p.name for p in pairs], hr=[read_rgb8(p.hr) for p in pairs],
                                     onnx_path=args.onnx)


def _run(args: argparse.Namespace) -> int:
    from amsr.export.metadata import read_metadata
    from amsr.runtime.parity import check_parity_on_set

    _check_outputs(args)
    if not args.onnx.is_file():
        raise AmsrError(f"{args.onnx}: no such file")
    meta = read_metadata(args.onnx)
    _check_data_scale(args, meta)
    reference = _reference(args, meta)
    if args.trt is not None:
        result = _engine_parity(reference, args)
    else:
        providers = args.providers.split(",") if args.providers and args.providers != "auto" else args.providers
        result = check_parity_on_set(reference, args.onnx, args.data, atol=args.atol, psnr_tol=args.psnr_tol,
                                     providers=providers)
    for row in result.rows:
        print(f"  {row.name}: max|Δ| {row.max_abs_diff:.2e}, mask mismatches {row.mask_mismatch_pixels}"
              + (f", ΔPSNR {row.psnr_diff:.2e} dB" if row.psnr_diff is not None else ""))
    print(result.summary())
    if args.json:
        def num(v: object) -> float | None:  # numpy scalars → JSON numbers
            return None if v is None else float(v)  # type: ignore[arg-type]

        write_json(args.json, {"passed": bool(result.passed), "max_abs_diff": num(result.max_abs_diff),
                               "psnr_diff": num(result.psnr_diff),
                               "mask_mismatch_pixels": int(result.mask_mismatch_pixels),
                               "atol": args.atol, "psnr_tol": args.psnr_tol,
                               "images": [{"name": r.name, "max_abs_diff": num(r.max_abs_diff),
                                           "mask_mismatch_pixels": int(r.mask_mismatch_pixels),
                                           "psnr_diff": num(r.psnr_diff)} for r in result.rows]})
    return 0 if result.passed else 1


def _check_outputs(args: argparse.Namespace) -> None:
    """``--json`` must be writable before the (minutes long) comparison runs, not after it."""
    from amsr.files import check_writable

    if args.json:
        check_writable(args.json, "--json")


def _check_weights_sha(args: argparse.Namespace, meta: dict[str, str], weights: Path) -> None:
    """Refuse a reference built from another checkpoint than the one the file records: its outputs differ by
    design, so the verdict would say nothing about the export. Skipped when ``--model`` names another model
    (the recorded checksum is not about it) or the file records none (not written by amsr-export)."""
    from amsr.errors import CheckpointError
    from amsr.weights import sha256_of

    recorded = meta.get("amsr.weights_sha256")
    if not recorded or (args.model and args.model != meta.get("amsr.model")):
        return
    got = sha256_of(weights)
    if got != recorded:
        raise CheckpointError(f"{weights} (sha256 {got[:12]}…) is not the checkpoint {args.onnx.name} was exported "
                              f"from (sha256 {recorded[:12]}…): pass that file with --weights")


def _check_data_scale(args: argparse.Namespace, meta: dict[str, str]) -> None:
    """Refuse HR/LR pairs of another scale than the graph's before anything runs (a wrong-scale set ran 86 s
    and ended in a traceback). Reads image headers only; pairs it cannot read are left to the run to report."""
    from PIL import Image

    from amsr.export.metadata import int_field
    from amsr.images import list_images

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
