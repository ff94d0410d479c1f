"""amsr-finetune: train a zoo model with its mask in the loop (mask-aware fine-tuning), so that the skip
costs less quality at the same mask. Writes a checkpoint in the architecture's own layout (give it to every
tool with --weights) and a JSON provenance record beside it (base checkpoint sha256, data, steps, settings,
seed, final loss). Interrupted runs resume from the state file beside --out; the same seed, data and thread
count give the same weights. Train on your own HR images, never on a test set you report; then recalibrate
(amsr-calibrate --weights OUT --reference-weights ORIGINAL) for an operating point of the new weights: the
loss is measured against the original network, and the thin blends only fine-tuned weights tolerate are
measured too."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from amsr.cli.common import (
    UsageError,
    add_mask_args,
    add_model_args,
    add_verbose_arg,
    load_model,
    mask_config_from,
    mask_options_given,
    parser,
    run_main,
)


def build_parser() -> argparse.ArgumentParser:
    p = parser("amsr-finetune", __doc__,
               "amsr-finetune --model carn_m --scale 4 --dilation 1 --data ../shared/data/train --minutes 30 "
               "--out carn_m_ft_x4.pth",
               "amsr-eval --model carn_m --scale 4 --weights carn_m_ft_x4.pth --dilation 1 --data Set14/x4")
    add_model_args(p)
    add_mask_args(p)
    t = p.add_argument_group("training")
    t.add_argument("--data", required=True, type=Path, metavar="DIR",
                   help="folder (and subfolders) of HR training images; LR is made by torch bicubic, antialias")
    t.add_argument("--out", required=True, type=Path, metavar="FILE",
                   help="checkpoint to write (.pth); its record is FILE with .json, its resumable state FILE.state")
    t.add_argument("--steps", type=int, default=500, help="optimiser steps (cosine schedule over them; default 500)")
    t.add_argument("--minutes", type=float, help="also stop after this many minutes (default: no limit)")
    t.add_argument("--batch", type=int, default=8, help="patches per step (default 8)")
    t.add_argument("--patch", type=int, default=48, help="LR patch side, px (default 48)")
    t.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate at the start (default 1e-4)")
    t.add_argument("--seed", type=int, default=0, help="seed of the patch sampling (default 0)")
    t.add_argument("--mask-source", choices=("image", "patch"), default="image",
                   help="masks of the whole LR image cropped with the patch, as inference (default), or of the patch")
    t.add_argument("--target", choices=("dense", "hr"), default="dense",
                   help="train the output towards the original network's dense output (default: distillation, "
                        "the loss is the mask's own error) or towards the HR patch")
    t.add_argument("--loss", choices=("l1", "l2"), default="l1",
                   help="objective: l1 (default) or l2, the squared error PSNR measures (progress shows L1 either way)")
    t.add_argument("--holdout", type=int, default=20, metavar="N",
                   help="leave out the N images amsr-calibrate --max-images N takes from --data, to calibrate "
                        "the new weights on unseen images (default 20, amsr-calibrate's default; 0 = train on all)")
    t.add_argument("--save-every", type=int, default=50, help="write the resumable state every N steps (default 50)")
    t.add_argument("--device", default="cpu", help="torch device (default cpu)")
    t.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_verbose_arg(p)
    return p


def _run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from amsr.core.files import check_writable
    from amsr.tools.finetune import FinetuneSpec, finetune, record_path_for, remove_state, save_finetuned

    if not mask_options_given(args):
        raise UsageError("give the mask to train under, e.g. --dilation 1 (and --output-dilation D_OUT for a blend)")
    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        raise UsageError(f"--device {args.device}: no such device here (cpu{', cuda' if torch.cuda.is_available() else ''})")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be ≥ 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    for path, what in ((args.out, "--out"), (record_path_for(args.out), "record")):
        check_writable(path, what)  # before minutes of training
    spec = FinetuneSpec(config=mask_config_from(args), data=args.data, steps=args.steps, minutes=args.minutes,
                        batch=args.batch, patch=args.patch, lr=args.lr, seed=args.seed,
                        mask_source=args.mask_source, target=args.target, loss=args.loss, holdout=args.holdout,
                        save_every=args.save_every)
    model = load_model(args.model, args.scale, weights=args.weights, variant=args.variant)
    bar = tqdm(total=spec.steps, desc="amsr-finetune", unit="step", file=sys.stderr, disable=args.no_progress)

    def progress(step: int, steps: int, loss: float) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(l1=f"{loss:.4f}")

    try:
        result = finetune(model, spec, out=args.out, device=args.device, progress=progress)
    finally:
        bar.close()
    ckpt, record = save_finetuned(args.out, result)
    r = result.record
    if r["steps_done"] == spec.steps:
        remove_state(args.out)
    print(f"{args.model} x{args.scale}: {r['steps_done']}/{spec.steps} steps in {r['seconds']:.0f} s on "
          f"{r['images']} image(s) ({r['held_out']} held out for calibration), final L1 {r['final_loss_l1']}; wrote {ckpt} and {record}"
          + ("" if r["steps_done"] == spec.steps else "; stopped by --minutes (the state file stays for a resume)"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("amsr-finetune", _run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
