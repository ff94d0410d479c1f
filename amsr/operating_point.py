"""Choosing an operating point: the most compute-saving mask setting whose measured quality loss stays
within a budget on a calibration set.

A *setting* is a ``MaskConfig`` (blur σ, network dilation d_net, window threshold, output-blend dilation
d_out). ``score_grid`` measures each setting on calibration pairs: mean Y-PSNR/SSIM loss against the dense
model and effective GMACs (``amsr.cost``: what the code really computes; the tail of the network runs
only where it can reach a pixel the output blend keeps, see ``amsr.sparse_tail``). Every setting runs the
accelerated model itself (one forward per setting and image), so output and cost are what the model does.

Calibration images: HR images of the user's kind of content, *never* the test sets. LR images are made with
``make_lr``: torch bicubic downscale with ``antialias=True`` (a = −0.75; close to, but not the same as,
MATLAB's ``imresize``, which the benchmark LR images use), rounded to 8 bits like a stored PNG.

Shipped defaults: ``amsr/zoo/operating_points.json`` holds, per model, scale and budget (0.05 and 0.1 dB),
the setting ``scripts/calibrate_defaults.py`` chose on T91+BSD200 crops; ``default_operating_point`` reads
it (``amsr-eval --operating-point default[:DB]``). Test-set numbers: ``results/quality/defaults.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from amsr.cost import run_counting_macs
from amsr.errors import AmsrError, InputImageError, did_you_mean
from amsr.images import list_images, read_rgb8, to_tensor, to_uint8
from amsr.mask import MaskConfig
from amsr.metrics import psnr_y, ssim_y
from amsr.models import LoadedModel, unwrap_accelerated
from amsr.zoo.descriptor import SparseRules

Pair = tuple[np.ndarray, np.ndarray]  # (LR, HR) uint8 H×W×3


@dataclass(frozen=True)
class GridPoint:
    """One measured setting: mean loss vs dense (positive = worse) and the effective compute."""

    config: MaskConfig
    loss_db: float
    ssim_loss: float
    gmacs: float
    dense_gmacs: float
    density: float  # network mask
    output_density: float | None  # blend mask (None: no blend)
    windows: float | None = None
    worst_db: float | None = None  # the largest per-image loss (None: not recorded, grids before it was)

    @property
    def saved(self) -> float:
        return 1.0 - self.gmacs / self.dense_gmacs if self.dense_gmacs else 0.0

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["saved"] = self.saved
        return d


@dataclass(frozen=True)
class OperatingPoint:
    """The chosen setting (``config`` None: no setting fits the budget, run the dense model)."""

    model: str
    scale: int
    budget_db: float
    config: MaskConfig | None
    chosen: GridPoint | None
    calibration: dict[str, object] = field(default_factory=dict)
    grid: tuple[GridPoint, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"model": self.model, "scale": self.scale, "budget_db": self.budget_db,
                "config": self.config.to_json() if self.config else None,
                "chosen": self.chosen.to_json() if self.chosen else None,
                "calibration": self.calibration, "grid": [g.to_json() for g in self.grid]}


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


def default_grid(model: LoadedModel) -> list[MaskConfig]:
    """The settings ``amsr-calibrate`` measures: ``DEFAULT_PAIRS`` (d_net 1–10, d_out none or 1–6) that the
    architecture's blend floor admits (``SparseRules.min_blend_margin`` / ``min_output_dilation``; raw skips
    are kept), at window thresholds 0.25 and 0.5 for transformers (0.5 otherwise)."""
    rules = model.arch.rules
    pairs = [(d, d_out) for d, d_out in DEFAULT_PAIRS if within_blend_floor(d, d_out, rules)]
    thresholds = (0.25, 0.5) if rules.windows else (0.5,)
    return [MaskConfig(dilation=d, output_dilation=d_out, window_threshold=thr)
            for thr in thresholds for d, d_out in pairs]


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
            progress(f"σ={c.blur_sigma} d_net={c.dilation} d_out={c.output_dilation} thr={c.window_threshold}")
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
MIN_BLEND_MARGIN = 3
# And no calibration image may lose more than this many budgets (0.05 dB mean → 0.15 dB per image, the
# photos issue's bar); grids scored before the per-image loss was kept (``worst_db`` None) pass.
WORST_IMAGE_BUDGETS = 3.0


def within_blend_floor(dilation: int, output_dilation: int | None, rules: SparseRules | None = None) -> bool:
    """Whether a setting's blend is as wide and as far inside the network mask as the architecture allows
    (``rules.min_output_dilation``, ``rules.min_blend_margin``, else ``MIN_BLEND_MARGIN``); a raw skip (no
    blend) always is."""
    if output_dilation is None:
        return True
    margin = MIN_BLEND_MARGIN if rules is None or rules.min_blend_margin is None else rules.min_blend_margin
    least = 1 if rules is None else rules.min_output_dilation
    return output_dilation >= least and dilation - output_dilation >= margin


def admissible(point: GridPoint, budget_db: float, rules: SparseRules | None = None) -> bool:
    """Whether ``point`` may be a default for ``budget_db``: within it on the mean and per image, saving
    compute, and within the architecture's blend floor (``within_blend_floor``)."""
    c = point.config
    worst_ok = point.worst_db is None or point.worst_db <= WORST_IMAGE_BUDGETS * budget_db
    return (point.loss_db <= budget_db and point.saved > 0 and within_blend_floor(c.dilation, c.output_dilation, rules)
            and worst_ok)


def pick(points: Sequence[GridPoint], budget_db: float, rules: SparseRules | None = None) -> GridPoint | None:
    """The ``admissible`` point with the most GMACs saved (ties: smaller loss); ``None`` when none is."""
    check_budget(budget_db)
    ok = [p for p in points if admissible(p, budget_db, rules)]
    if not ok:
        return None
    return min(ok, key=lambda p: (-round(p.saved, 6), p.loss_db))


DEFAULT_BUDGET_DB = 0.05


def parse_budget(s: str | float) -> float:
    """A budget in dB from the command line (checked in the body, so that errors are one line)."""
    try:
        v = float(s)
    except ValueError:
        raise AmsrError(f"quality budget must be a number of dB, got {s!r}") from None
    check_budget(v)
    return v


def check_budget(budget_db: float) -> None:
    if not (isinstance(budget_db, (int, float)) and np.isfinite(budget_db) and budget_db >= 0):
        raise AmsrError(f"quality budget must be a finite number of dB ≥ 0, got {budget_db!r}")


def choose_operating_point(model: LoadedModel, images: Sequence[Pair], budget_db: float,
                           grid: Iterable[MaskConfig] | None = None,
                           scorer: Callable[[LoadedModel, Sequence[Pair], list[MaskConfig]], list[GridPoint]]
                           | None = None,
                           progress: Callable[[str], None] | None = None,
                           reference: LoadedModel | None = None) -> OperatingPoint:
    """Measure ``grid`` (default ``default_grid``) on the calibration ``images`` and pick the most
    compute-saving setting whose mean Y-PSNR loss is ≤ ``budget_db``. ``scorer`` replaces ``score_grid``
    (tests). ``config`` of the result is None when nothing fits: use the dense model. ``reference``: the
    network whose dense output the loss is measured against (``score_grid``).

    Raises:
        AmsrError: a negative or non-finite budget, or no calibration images.
    """
    check_budget(budget_db)
    if not images:
        raise AmsrError("no calibration images")
    grid = list(grid) if grid is not None else default_grid(model)
    points = (scorer or (lambda m, i, g: score_grid(m, i, g, progress, reference)))(model, images, grid)
    best = pick(points, budget_db, model.arch.rules)
    calibration: dict[str, object] = {"images": len(images)}
    if reference is not None:
        calibration["reference_weights"] = str(reference.weights)
    return OperatingPoint(model.arch.id, model.scale, float(budget_db), best.config if best else None, best,
                          calibration, tuple(points))


def config_from_json(d: object) -> MaskConfig:
    """The ``MaskConfig`` of an operating point's ``config`` object.

    Raises:
        AmsrError: not an object, an unknown setting (all named, with the known ones), or a bad value
            (``MaskConfig`` checks types, finiteness and bounds): one line each.
    """
    try:
        return MaskConfig.from_json(d)
    except ValueError as e:
        raise AmsrError(f"bad mask settings in operating point: {e}") from None


def load_operating_point(path: str | os.PathLike[str]) -> tuple[dict[str, object], MaskConfig | None]:
    """The JSON written by ``amsr-calibrate`` and its ``MaskConfig`` (None: dense).

    Raises:
        AmsrError: unreadable file, not JSON, no ``config`` entry, or bad mask settings (``config_from_json``).
    """
    try:
        d = json.loads(Path(path).read_text())
    except OSError as e:
        raise AmsrError(f"{path}: cannot read operating point ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise AmsrError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(d, dict) or "config" not in d:
        raise AmsrError(f"{path}: not an operating point (no 'config' entry)")
    cfg = d["config"]
    try:
        return d, None if cfg is None else config_from_json(cfg)
    except AmsrError as e:
        raise AmsrError(f"{path}: {e}") from None


# ---------------------------------------------------------------------------------------------------------
# Shipped defaults: ``amsr/zoo/operating_points.json`` (written by scripts/calibrate_defaults.py)
# ---------------------------------------------------------------------------------------------------------

DEFAULT_OPERATING_POINTS = "operating_points.json"  # in the amsr.zoo package


def budget_key(budget_db: float) -> str:
    """The key of a budget in the shipped file: ``0.05`` → ``"0.05"``, ``0.1`` → ``"0.1"``."""
    return f"{float(budget_db):g}"


def shipped_defaults() -> dict[str, Any]:  # parsed JSON
    """The parsed ``amsr/zoo/operating_points.json``: ``{"models": {model: {scale: {budget: {"config": MaskConfig
    fields or null, "calibration": {...}}}}}, ...}`` (scale and budget keys are strings).

    Raises:
        AmsrError: the file is missing from the installation or not valid JSON.
    """
    from importlib import resources

    try:
        text = resources.files("amsr.zoo").joinpath(DEFAULT_OPERATING_POINTS).read_text(encoding="utf-8")
        doc = json.loads(text)
    except (OSError, json.JSONDecodeError) as e:
        raise AmsrError(f"the shipped default operating points (amsr/zoo/{DEFAULT_OPERATING_POINTS}) cannot be "
                        f"read: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        raise AmsrError(f"amsr/zoo/{DEFAULT_OPERATING_POINTS}: no 'models' entry")
    return doc


def calibrated_defaults() -> list[tuple[str, int]]:
    """(model, scale) of every shipped default, in file order."""
    models = shipped_defaults()["models"]
    return [(m, int(s)) for m, scales in models.items() for s in scales]


def default_operating_point_entry(model_id: str, scale: int,
                                  budget_db: float = DEFAULT_BUDGET_DB) -> tuple[float, dict[str, object]]:
    """The shipped entry used for ``budget_db``: the largest calibrated budget ≤ ``budget_db`` (so the chosen
    setting stayed within the requested budget on the calibration images), and its ``{"config", "calibration"}``.

    Raises:
        AmsrError: a bad budget, no default for this model and scale (the message lists those shipped), or a
            budget below the smallest one calibrated.
    """
    check_budget(budget_db)
    models = shipped_defaults()["models"]
    scales = models.get(model_id, {})
    budgets = scales.get(str(scale)) if isinstance(scales, dict) else None
    if not budgets:
        have = ", ".join(f"{m} x{'/x'.join(sorted(s, key=int))}" for m, s in models.items())
        raise AmsrError(f"no default operating point for {model_id} x{scale} (calibrated: {have}); run "
                        "amsr-calibrate on your own images, or amsr-eval --quality-budget DB")
    fitting = sorted((float(k), k) for k in budgets if float(k) <= budget_db + 1e-12)
    if not fitting:
        raise AmsrError(f"no default operating point for {model_id} x{scale} within {budget_db} dB (calibrated "
                        f"budgets: {', '.join(sorted(budgets, key=float))} dB); run amsr-calibrate")
    b, key = fitting[-1]
    entry = budgets[key]
    if not isinstance(entry, dict) or "config" not in entry:
        raise AmsrError(f"amsr/zoo/{DEFAULT_OPERATING_POINTS}: {model_id} x{scale} {key} dB has no 'config'")
    return b, entry


def default_operating_point(model_id: str, scale: int, budget_db: float = DEFAULT_BUDGET_DB) -> MaskConfig | None:
    """The shipped default mask settings of ``model_id`` at ``scale`` for a quality budget (dB of mean Y-PSNR
    loss on the calibration images, T91+BSD200): the entry of the largest calibrated budget ≤ ``budget_db``
    (0.05 and 0.1 are shipped). ``None``: no setting within that budget saves compute — run the dense model.

    Raises:
        AmsrError: no default for this model and scale (e.g. a model not calibrated yet; the message lists
            the calibrated ones), or ``budget_db`` below every calibrated budget.
    """
    _, entry = default_operating_point_entry(model_id, scale, budget_db)
    cfg = entry["config"]
    return None if cfg is None else config_from_json(cfg)


def is_default_spec(spec: str) -> bool:
    """``default`` or ``default:DB`` (a file of that name is given as ``./default``)."""
    return spec == "default" or spec.startswith("default:")


def resolve_operating_point(spec: str, model_id: str, scale: int) -> tuple[MaskConfig, dict[str, object]]:
    """The mask settings a command line names with ``--operating-point FILE|default[:DB]``, and what a report
    says of their source.

    Raises:
        AmsrError: a bad budget, no shipped default, an unreadable file or one of another model/scale, or an
            operating point that is the dense model (nothing within the budget saved compute).
    """
    if is_default_spec(spec):
        _, _, b = spec.partition(":")
        budget = parse_budget(b) if b else DEFAULT_BUDGET_DB
        used, entry = default_operating_point_entry(model_id, scale, budget)
        if entry["config"] is None:
            raise AmsrError(f"the default operating point of {model_id} x{scale} for {used} dB is the dense "
                            "model (no setting within that budget saved compute on the calibration images)")
        return config_from_json(entry["config"]), _shipped_source(budget, used, entry)
    if not Path(spec).exists():
        head, sep, tail = spec.partition(":")
        guess = did_you_mean(head, ["default"])
        raise AmsrError(f"operating point {spec!r} is neither 'default[:DB]' nor an existing file"
                        + (f"; did you mean {guess + sep + tail!r}?" if guess else ""))
    doc, cfg = load_operating_point(spec)
    if doc.get("model") not in (None, model_id) or doc.get("scale") not in (None, scale):
        raise AmsrError(f"{spec}: operating point of {doc.get('model')} x{doc.get('scale')}, not {model_id} x{scale}")
    if cfg is None:
        raise AmsrError(f"{spec}: no setting fitted its budget (dense model)")
    return cfg, {"source": str(spec)}


def shipped_default_or_dense(model_id: str, scale: int,
                             budget_db: float = DEFAULT_BUDGET_DB) -> tuple[MaskConfig | None, dict[str, object]]:
    """What a tool runs when no mask setting is asked for: the shipped default of ``model_id`` x``scale`` for
    ``budget_db``, or ``None`` (the dense model) where none is calibrated or the default is dense; with the
    source a report prints (``"reason"`` says why it is dense).

    The raw in-network skip (``MaskConfig()``, d 1 without blend) is never a default: it costs 1–4 dB on the
    pretrained CNNs (results/README.md §1) and drew a 4-px grid over flat areas of real photos (issue #13).
    """
    try:
        used, entry = default_operating_point_entry(model_id, scale, budget_db)
    except AmsrError:
        return None, {"source": "dense", "reason": f"no calibrated operating point for {model_id} x{scale}"}
    cfg = entry["config"]
    if cfg is None:
        return None, {"source": "dense", "budget_db": used,
                      "reason": f"nothing within {used} dB saves compute for {model_id} x{scale}"}
    return config_from_json(cfg), _shipped_source(budget_db, used, entry)


def _shipped_source(requested_db: float, used_db: float, entry: dict[str, object]) -> dict[str, object]:
    return {"source": "shipped default", "requested_budget_db": requested_db, "budget_db": used_db,
            "calibration": entry.get("calibration")}
