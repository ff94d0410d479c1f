"""Calibration: measure mask settings on calibration images and choose the operating point for a budget.

``score_grid`` measures each setting on calibration pairs: mean Y-PSNR/SSIM loss against the dense
model and effective GMACs (``amsr.core.cost``: what the code really computes; the tail of the network runs
only where it can reach a pixel the output blend keeps, see ``amsr.sparse.tail``). Every setting runs the
accelerated model itself (one forward per setting and image), so output and cost are what the model does.
``choose_operating_point`` picks with ``amsr.operating_point.pick``.

Calibration images: HR images of the user's kind of content, *never* the test sets. LR images are made with
``make_lr``: torch bicubic downscale with ``antialias=True`` (a = −0.75; close to, but not the same as,
MATLAB's ``imresize``, which the benchmark LR images use), rounded to 8 bits like a stored PNG.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from amsr.core.cost import run_counting_macs
from amsr.core.errors import AmsrError, InputImageError
from amsr.io.images import list_images, read_rgb8, to_tensor, to_uint8
from amsr.io.metrics import psnr_y, ssim_y
from amsr.masking.mask import MaskConfig
from amsr.models import LoadedModel, unwrap_accelerated
from amsr.operating_point import GridPoint, OperatingPoint, check_budget, no_default_reason, pick, within_blend_floor
from amsr.weights import sha256_of

Pair = tuple[np.ndarray, np.ndarray]  # (LR, HR) uint8 H×W×3

def make_lr(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """HR (cropped to a multiple of ``scale``) and its LR by torch bicubic downscale, antialias=True, uint8."""
    h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
    hr = hr[:h, :w]
    lr = F.interpolate(to_tensor(hr), size=(h // scale, w // scale), mode="bicubic", align_corners=False,
                       antialias=True)
    return to_uint8(lr), hr


def calibration_sample(files: Sequence[Path], max_images: int | None) -> list[Path]:
    """The images calibration uses out of a sorted list: all of them, or every ``k``-th when ``max_images``
    is less than the count (the sample spans the folder). Fine-tuning leaves out the same images
    (``FinetuneSpec.holdout``), so a checkpoint trained on a folder is calibrated on images it never saw."""
    if max_images is None or len(files) <= max_images:
        return list(files)
    step = len(files) / max_images
    return [files[int(i * step)] for i in range(max_images)]


def load_calibration(folder: str | os.PathLike[str], scale: int, max_images: int | None = None,
                     crop: int | None = None) -> list[Pair]:
    """(LR, HR) pairs from a folder (and its subfolders) of HR images (sorted; every ``k``-th image when ``max_images`` is less
    than the count, so the sample spans the folder); ``crop``: centre crop of that many LR pixels per side.

    Raises:
        InputImageError: no such folder, or no images in it.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputImageError(f"{root}: no such folder of calibration images")
    files = list_images(root, recursive=True)  # training sets come as subfolders (T91/, BSD200/)
    if not files:
        raise InputImageError(f"{root}: no images (expected HR .png/.jpg/… files)")
    pairs = []
    files = calibration_sample(files, max_images)
    for f in files:
        hr = read_rgb8(f)
        if crop is not None:
            c = crop * scale
            top, left = max(0, (hr.shape[0] - c) // 2), max(0, (hr.shape[1] - c) // 2)
            hr = hr[top:top + c, left:left + c]
        if min(hr.shape[:2]) < 16 * scale:
            continue  # too small to score
        lr, hr = make_lr(hr, scale)
        pairs.append((lr, hr))
    if not pairs:
        raise InputImageError(f"{root}: every image is smaller than {16 * scale} px")
    return pairs


# (d_net, d_out) of ``default_grid``. The output blend sets the quality (the kept fraction, d_out) and the
# network mask the compute (d_net): margins d_net − d_out of 3 (``MIN_BLEND_MARGIN``; thinner ones are never
# picked) and 4 around each d_out of 1–6, and the paper's plain mask (d 1–2, no blend) for large budgets.
DEFAULT_PAIRS: tuple[tuple[int, int | None], ...] = (
    (1, None), (2, None),
    (4, 1), (5, 1),
    (5, 2), (6, 2),
    (6, 3), (7, 3),
    (7, 4), (8, 4),
    (8, 5), (9, 6), (10, 6),
)


# The settings only weights fine-tuned under their mask tolerate (results §6): the thin blends, margins 0–2
# and d_out ≥ d_net, d_net 1–4 (CARN-M x4 trained at 3 / 3 loses 0.038 dB on Set14 where the published weights
# lose 0.284), and raw skips at d 3–4 (no blend: IMDTN x4 trained at raw d 1 loses 0.025 dB on Set14 at raw
# d 3, saving 14 %, where the published weights lose 2.32 dB).
FINE_TUNED_PAIRS: tuple[tuple[int, int | None], ...] = (
    (1, 1), (2, 1), (3, 1), (2, 2), (3, 2), (4, 2), (1, 3), (2, 3), (3, 3), (4, 3), (3, None), (4, None),
)


# Each setting is measured with the paper's mask and with a high-frequency floor (``MaskConfig.hf_floor``). The
# 2-means splits every image in two, so on a crop textured everywhere the weaker half of its texture is skipped
# whatever the dilation: T91/t53 (hair beside a face) lost 0.64–0.69 dB at d 10 / 6 and 6 / 3, which failed
# the worst-image rule for every setting of the fine-tuned CARN-M and IMDTN checkpoints. A floor of 0.04 takes
# CARN-M x4 at d 6 / 3 on the 20 held-out crops from 0.049 (worst 0.687) to 0.006 (worst 0.049) dB.
HF_FLOORS: tuple[float | None, ...] = (None, 0.04)


def default_grid(model: LoadedModel, fine_tuned: bool = False) -> list[MaskConfig]:
    """The settings ``amsr-calibrate`` measures: ``DEFAULT_PAIRS`` (d_net 1–10, d_out none or 1–6) that the
    architecture's blend floor admits (``SparseRules.min_blend_margin`` / ``min_output_dilation``; raw skips
    are kept), at window thresholds 0.25 and 0.5 for transformers (0.5 otherwise), each with the high-frequency
    floors of ``HF_FLOORS``. ``fine_tuned``: also ``FINE_TUNED_PAIRS``, below the blend floor, which was
    measured on the published weights."""
    rules = model.arch.rules
    pairs = [(d, d_out) for d, d_out in DEFAULT_PAIRS if within_blend_floor(d, d_out, rules)]
    if fine_tuned:
        pairs += [p for p in FINE_TUNED_PAIRS if p not in pairs]
    thresholds = (0.25, 0.5) if rules.windows or rules.window_adapters else (0.5,)
    return [MaskConfig(dilation=d, output_dilation=d_out, window_threshold=thr, hf_floor=floor)
            for floor in HF_FLOORS for thr in thresholds for d, d_out in pairs]


@torch.no_grad()
def score_grid(model: LoadedModel, pairs: Sequence[Pair], grid: Iterable[MaskConfig],
               progress: Callable[[str], None] | None = None, reference: LoadedModel | None = None) -> list[GridPoint]:
    """Measure every setting of ``grid`` on ``pairs`` (mean over images): the losses against ``reference``'s
    dense output (default ``model``'s own; for fine-tuned weights, the original network they replace)."""
    grid = list(grid)
    dense = (reference or model).dense()
    d_rows = []
    for lr, hr in pairs:
        sr, macs = run_counting_macs(dense, to_tensor(lr))
        out = to_uint8(sr)
        d_rows.append((psnr_y(out, hr, model.scale), ssim_y(out, hr, model.scale), macs / 1e9))
    results: dict[MaskConfig, GridPoint] = {}
    for c in dict.fromkeys(grid):
        if progress:
            progress(f"σ={c.blur_sigma} d_net={c.dilation} d_out={c.output_dilation} thr={c.window_threshold} "
                     f"hf_floor={c.hf_floor}")
        acc = model.accelerated(c)
        inner = unwrap_accelerated(acc)
        rows = []
        for (lr, hr), (dp, ds, dm) in zip(pairs, d_rows):
            sr, macs = run_counting_macs(acc, to_tensor(lr))
            out = to_uint8(sr)
            od = None if inner.last_output_mask is None else float(inner.last_output_mask.mean())
            assert inner.last_mask is not None  # set by the forward above
            rows.append((dp - psnr_y(out, hr, model.scale), ds - ssim_y(out, hr, model.scale), macs / 1e9, dm,
                         float(inner.last_mask.mean()), od, inner.window_fraction()))
        a = np.array([row[:5] for row in rows], dtype=float)
        ods = [row[5] for row in rows if row[5] is not None]
        ws = [row[6] for row in rows if row[6] is not None]
        results[c] = GridPoint(c, float(a[:, 0].mean()), float(a[:, 1].mean()), float(a[:, 2].mean()),
                               float(a[:, 3].mean()), float(a[:, 4].mean()),
                               float(np.mean(ods)) if ods else None, float(np.mean(ws)) if ws else None,
                               float(a[:, 0].max()))
    return [results[c] for c in grid]


# The blend keeps the network only ≥ MIN_BLEND_MARGIN px inside its mask (d_net − d_out): nearer the mask's
# edge the identity-skipped features reach the kept pixels. On the textured calibration crops a 1-px margin
# looked free (CARN-M x4 d_net 4 / d_out 3: 0.039 dB), but on Photos2K, whose masks are fragmented, it lost
# 0.35 and 0.48 dB on two photos and 0.062 dB mean; 2 px still lost 0.20 (img_008) and 0.10 (img_009);
# 3 px (6 / 3): +0.063 dB mean, worst −0.149, the same as 5 px (8 / 3: +0.071, worst −0.130).
def choose_operating_point(model: LoadedModel, images: Sequence[Pair], budget_db: float,
                           grid: Iterable[MaskConfig] | None = None,
                           scorer: Callable[[LoadedModel, Sequence[Pair], list[MaskConfig]], list[GridPoint]]
                           | None = None,
                           progress: Callable[[str], None] | None = None,
                           reference: LoadedModel | None = None, fine_tuned: bool = False) -> OperatingPoint:
    """Measure ``grid`` (default ``default_grid(model, fine_tuned)``) on the calibration ``images`` and pick the
    most compute-saving setting whose mean Y-PSNR loss is ≤ ``budget_db``. ``scorer`` replaces ``score_grid``
    (tests). ``config`` of the result is None when nothing fits: use the dense model. ``reference``: the
    network whose dense output the loss is measured against (``score_grid``). ``fine_tuned``: the weights were
    trained under their mask (``amsr-finetune``), so the thin blends below the published weights' floor are
    measured and admitted on their loss (``admissible``).

    Raises:
        AmsrError: a negative or non-finite budget, or no calibration images.
    """
    check_budget(budget_db)
    if not images:
        raise AmsrError("no calibration images")
    unsafe = no_default_reason(model.arch.rules)
    if unsafe and not fine_tuned:  # ``admissible`` refuses every setting: measure none
        return OperatingPoint(model.arch.id, model.scale, float(budget_db), None, None,
                              {"images": len(images), "reason": unsafe})
    grid = list(grid) if grid is not None else default_grid(model, fine_tuned)
    points = (scorer or (lambda m, i, g: score_grid(m, i, g, progress, reference)))(model, images, grid)
    best = pick(points, budget_db, model.arch.rules, fine_tuned)
    calibration: dict[str, object] = {"images": len(images)}
    if reference is not None:
        calibration["reference_weights"] = str(reference.weights)
    if fine_tuned:  # the thin blends were admitted: for these weights only (check_fine_tuned_weights)
        sha = sha256_of(model.weights) if Path(model.weights).is_file() else None  # None: in-memory weights (tests)
        calibration.update({"fine_tuned": True, "weights": str(model.weights), "weights_sha256": sha})
    return OperatingPoint(model.arch.id, model.scale, float(budget_db), best.config if best else None, best,
                          calibration, tuple(points))
