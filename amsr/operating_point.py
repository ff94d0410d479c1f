"""Operating points: a mask setting chosen for a quality budget, the rules a setting must meet to be one,
and the shipped defaults.

A *setting* is a ``MaskConfig`` (blur σ, network dilation d_net, window threshold, output-blend dilation
d_out); a ``GridPoint`` is one measured on calibration pairs (``amsr.tools.calibrate`` measures them:
mean Y-PSNR/SSIM loss against the dense model and effective GMACs). ``pick`` chooses the most
compute-saving admissible one.

Shipped defaults: ``amsr/zoo/operating_points.json`` holds, per model, scale and budget (0.05 and 0.1 dB),
the setting ``scripts/calibrate_defaults.py`` chose on T91+BSD200 crops; ``default_operating_point`` reads
it (``amsr-eval --operating-point default[:DB]``). Test-set numbers: ``results/quality/defaults.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amsr.core.errors import AmsrError, did_you_mean
from amsr.masking.mask import MaskConfig
from amsr.zoo.descriptor import SparseRules


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


MIN_BLEND_MARGIN = 3
# And the blend keeps the network ≥ 3 px around the mask (d_out): on Photos2K the CARN-M x4 point the 20
# calibration crops chose, d 5 / 2 with the floor (crops 0.013 dB, worst 0.100), lost 0.242 dB on its worst
# photo, 4 / 1 0.396; 6 / 3 loses 0.149, within the photos bar. Chosen on Photos2K, like the margin.
MIN_OUTPUT_DILATION = 3
# And no calibration image may lose more than this many budgets (0.05 dB mean → 0.15 dB per image, the
# photos issue's bar); grids scored before the per-image loss was kept (``worst_db`` None) pass.
WORST_IMAGE_BUDGETS = 3.0


def no_default_reason(rules: SparseRules | None) -> str | None:
    """Why no training-free setting of an architecture is offered (``SparseRules.unsafe_training_free``), as
    the one line calibration and the tools print; ``None``: calibrate as usual."""
    if rules is None or rules.unsafe_training_free is None:
        return None
    return (f"no training-free setting is offered: {rules.unsafe_training_free}; fine-tune it (amsr-finetune) "
            "and calibrate the checkpoint with --reference-weights")


def within_blend_floor(dilation: int, output_dilation: int | None, rules: SparseRules | None = None) -> bool:
    """Whether a setting's blend is as wide and as far inside the network mask as the architecture allows
    (``rules.min_output_dilation``, ``rules.min_blend_margin``, else ``MIN_OUTPUT_DILATION``,
    ``MIN_BLEND_MARGIN``); a raw skip (no blend) always is."""
    if output_dilation is None:
        return True
    margin = MIN_BLEND_MARGIN if rules is None or rules.min_blend_margin is None else rules.min_blend_margin
    least = MIN_OUTPUT_DILATION if rules is None or rules.min_output_dilation is None else rules.min_output_dilation
    return output_dilation >= least and dilation - output_dilation >= margin


def admissible(point: GridPoint, budget_db: float, rules: SparseRules | None = None,
               fine_tuned: bool = False) -> bool:
    """Whether ``point`` may be a default for ``budget_db``: within it on the mean and per image, saving
    compute, and, unless the weights are ``fine_tuned`` under their mask, of an architecture that offers
    training-free settings at all (``no_default_reason``: not PAN or IMDN) and within its blend floor
    (``within_blend_floor``). Both were measured on published weights; a fine-tuned network's settings are
    judged by their measured loss, the mean and the worst image alike."""
    c = point.config
    worst_ok = point.worst_db is None or point.worst_db <= WORST_IMAGE_BUDGETS * budget_db
    floor_ok = fine_tuned or within_blend_floor(c.dilation, c.output_dilation, rules)
    safe = fine_tuned or no_default_reason(rules) is None
    return point.loss_db <= budget_db and point.saved > 0 and floor_ok and worst_ok and safe


def pick(points: Sequence[GridPoint], budget_db: float, rules: SparseRules | None = None,
         fine_tuned: bool = False) -> GridPoint | None:
    """The ``admissible`` point with the most GMACs saved (ties: smaller loss); ``None`` when none is."""
    check_budget(budget_db)
    ok = [p for p in points if admissible(p, budget_db, rules, fine_tuned)]
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


def resolve_operating_point(spec: str, model_id: str, scale: int,
                            weights: str | os.PathLike[str] | None = None) -> tuple[MaskConfig, dict[str, object]]:
    """The mask settings a command line names with ``--operating-point FILE|default[:DB]``, and what a report
    says of their source. ``weights``: the checkpoint the command runs (``None``: the published one).

    Raises:
        AmsrError: a bad budget, no shipped default, an unreadable file or one of another model/scale, an
            operating point that is the dense model (nothing within the budget saved compute), or one
            calibrated for fine-tuned weights given other weights (``check_fine_tuned_weights``).
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
    check_fine_tuned_weights(spec, doc.get("calibration"), weights)
    return cfg, {"source": str(spec)}


def check_fine_tuned_weights(spec: str, calibration: object, weights: str | os.PathLike[str] | None) -> None:
    """An operating point calibrated for fine-tuned weights (``calibration.fine_tuned``) runs only with them:
    its thin blends cost the published weights 0.3–1.3 dB on Set14 (results §6, d 3 / 3 … 1 / 1), so other
    weights are refused rather than silently damaged.

    Raises:
        AmsrError: no ``weights`` (the published ones would run), or a file whose sha256 is not the recorded one.
    """
    if not isinstance(calibration, dict) or not calibration.get("fine_tuned"):
        return
    want, name = calibration.get("weights_sha256"), calibration.get("weights", "?")
    if weights is None:
        raise AmsrError(f"{spec} was calibrated for the fine-tuned weights {name}: give them with --weights "
                        "(the published weights lose quality at its setting)")
    from amsr.weights import sha256_of

    if want is not None and sha256_of(weights) != want:
        raise AmsrError(f"{spec} was calibrated for the fine-tuned weights {name} (sha256 {str(want)[:12]}…), "
                        f"not {weights}")


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
        cal = entry.get("calibration")
        why = cal.get("reason") if isinstance(cal, dict) else None  # SparseRules.unsafe_training_free (PAN, IMDN)
        return None, {"source": "dense", "budget_db": used,
                      "reason": why or f"nothing within {used} dB saves compute for {model_id} x{scale}"}
    return config_from_json(cfg), _shipped_source(budget_db, used, entry)


def _shipped_source(requested_db: float, used_db: float, entry: dict[str, object]) -> dict[str, object]:
    return {"source": "shipped default", "requested_budget_db": requested_db, "budget_db": used_db,
            "calibration": entry.get("calibration")}
