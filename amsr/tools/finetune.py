"""Mask-aware fine-tuning (``amsr-finetune``): train a zoo network with its mask in the loop, so that the
paper's skip costs less quality and the mask can be tighter at the same budget.

The network is trained exactly as inference applies the method (``accelerate`` in its dense reference mode,
the same values as the sparse path with gradients): masked convs compute where the mask is 1 and pass their
input through elsewhere, window blocks compute only their selected windows, and with an output blend the
loss sees the blended output (network where the output mask is 1, bicubic elsewhere), so only what inference
keeps is trained. Only the weights change: the saved checkpoint has the architecture's own layout (it must
load back through the zoo's ``detect``/``build``, checked before writing) and every tool takes it with
``--weights``; a JSON record beside it names its provenance.

Data: HR images of a folder (never a test set); LR made on the fly as calibration makes it (torch bicubic,
antialias, uint8: ``amsr.tools.calibrate.make_lr``). ``mask_source="image"`` (default) computes each image's masks
once on the whole LR image, as inference does, and crops them with the patch; ``"patch"`` computes them on
the patch (the 2-means then sees only the patch: more pixels skipped in flat patches than inference skips).

Deterministic for a seed on one device and thread count (patch sampling draws from its own generator; the
state file holds it), and resumable: the state (weights, optimiser, generator, step, losses) is written
atomically every ``save_every`` steps and at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from amsr.core.errors import AmsrError, InputImageError
from amsr.core.files import save_bytes, save_with
from amsr.io.images import list_images, read_rgb8, to_tensor
from amsr.masking.mask import MaskConfig, MaskGenerator
from amsr.models import LoadedModel
from amsr.surgery import AcceleratedSR, accelerate
from amsr.tools.calibrate import calibration_sample, make_lr
from amsr.weights import sha256_of

MASK_SOURCES = ("image", "patch")
TARGETS = ("dense", "hr")
LOSSES = ("l1", "l2")


@dataclass(frozen=True)
class FinetuneSpec:
    """What to train and how.

    Attributes:
        config: the mask settings trained under (those inference will use, or tighter).
        data: folder (and subfolders) of HR training images.
        steps: optimiser steps; the learning rate follows a cosine from ``lr`` to 0 over them.
        minutes: stop this call after this much wall-clock time even if ``steps`` are not done (``None``: no
            limit); a later call with the same spec resumes.
        batch: patches per step.
        patch: LR patch side in pixels (a multiple of the architecture's ``size.multiple_of``).
        lr: Adam's initial learning rate.
        seed: seeds patch sampling (images, positions, flips).
        mask_source: ``"image"`` or ``"patch"`` (module docstring).
        target: what the output is trained towards: ``"dense"`` the original network's dense output on the
            same patch (distillation: the loss is the mask's own error, what the quality budget measures), or
            ``"hr"`` the HR patch (the loss then also carries the network's own error).
        loss: the objective, ``"l1"`` (mean absolute error) or ``"l2"`` (mean squared error, what PSNR
            measures); the record's ``*_loss_l1`` figures are L1 either way, so runs compare.
        holdout: leave out of training the images ``amsr-calibrate --max-images HOLDOUT`` takes from the same
            folder (``calibration_sample``), so the new weights are calibrated on images they never saw.
        save_every: write the resumable state every this many steps.
    """

    config: MaskConfig
    data: Path
    steps: int = 500
    minutes: float | None = None
    batch: int = 8
    patch: int = 48
    lr: float = 1e-4
    seed: int = 0
    mask_source: str = "image"
    target: str = "dense"
    loss: str = "l1"
    holdout: int = 0
    save_every: int = 50

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.save_every < 1:
            raise AmsrError(f"steps, batch and save_every must be ≥ 1 (got {self.steps}, {self.batch}, "
                            f"{self.save_every})")
        if self.patch < 8:
            raise AmsrError(f"patch must be ≥ 8 LR px, got {self.patch}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise AmsrError(f"lr must be a positive number, got {self.lr}")
        if self.minutes is not None and not self.minutes > 0:
            raise AmsrError(f"minutes must be > 0, got {self.minutes}")
        if self.target not in TARGETS:
            raise AmsrError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.loss not in LOSSES:
            raise AmsrError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.holdout < 0:
            raise AmsrError(f"holdout must be ≥ 0, got {self.holdout}")
        if self.mask_source not in MASK_SOURCES:
            raise AmsrError(f"mask_source must be one of {', '.join(MASK_SOURCES)}, got {self.mask_source!r}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"], d["data"] = self.config.to_json(), str(self.data)
        return d


@dataclass
class FinetuneResult:
    """The trained weights (architecture layout) and the provenance record written beside them."""

    state_dict: dict[str, torch.Tensor]
    record: dict[str, Any]
    losses: list[float] = field(default_factory=list)


class TrainingSet:
    """HR images with their LR (``make_lr``) and, for ``mask_source="image"``, the whole-image masks.

    Images whose LR is smaller than the patch are left out (T91 holds HR images of 76 px at x4). Kept as uint8
    (T91 + BSD200 at x4: ~140 MB HR); a patch is converted when drawn.
    """

    def __init__(self, folder: Path, scale: int, patch: int, config: MaskConfig, mask_source: str,
                 holdout: int = 0) -> None:
        root = Path(folder)
        files = list_images(root, recursive=True)
        if not files:
            raise InputImageError(f"{root}: no images (expected HR .png/.jpg/… files)")
        held = set(calibration_sample(files, holdout)) if holdout else set()
        if len(held) >= len(files):
            raise InputImageError(f"{root}: holding out {holdout} images leaves none of its {len(files)} to train on")
        files = [f for f in files if f not in held]
        self.held_out = len(held)
        self.root, self.scale, self.patch = root, scale, patch
        self.files: list[Path] = []
        self.lr: list[torch.Tensor] = []
        self.hr: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []  # per image: 1×2×h×w uint8 (network mask, output mask)
        generator = MaskGenerator(config, cuda_graphs=False) if mask_source == "image" else None
        for f in files:
            lr, hr = make_lr(read_rgb8(f), scale)
            if min(lr.shape[:2]) < patch:
                continue
            self.files.append(f)
            self.lr.append(torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1))
            self.hr.append(torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1))
            if generator is not None:
                with torch.no_grad():
                    masks = _masks(generator, to_tensor(lr))
                self.masks.append(torch.cat(masks, dim=1).to(torch.uint8))
        if not self.files:
            raise InputImageError(f"{root}: no image is at least {patch * scale} px on each side "
                                  f"(a {patch} px LR patch at x{scale})")

    def digest(self) -> str:
        """sha256 over the used files' relative paths and sizes: names the data in the provenance record."""
        h = hashlib.sha256()
        for f in self.files:
            h.update(f"{f.relative_to(self.root).as_posix()}:{f.stat().st_size};".encode())
        return h.hexdigest()

    def draw(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``n`` random patches: LR n×3×p×p and HR n×3×sp×sp float [0, 1], masks n×2×p×p float or ``None``,
        each under one of the 8 flips/transpositions."""
        p, s = self.patch, self.scale
        lrs, hrs, masks = [], [], []
        for _ in range(n):
            i = int(torch.randint(len(self.files), (1,), generator=rng))
            lr, hr = self.lr[i], self.hr[i]
            top = int(torch.randint(lr.shape[1] - p + 1, (1,), generator=rng))
            left = int(torch.randint(lr.shape[2] - p + 1, (1,), generator=rng))
            flip = int(torch.randint(8, (1,), generator=rng))
            lrs.append(_orient(lr[:, top:top + p, left:left + p], flip))
            hrs.append(_orient(hr[:, top * s:(top + p) * s, left * s:(left + p) * s], flip))
            if self.masks:
                masks.append(_orient(self.masks[i][0, :, top:top + p, left:left + p], flip))
        to_float = lambda ts: torch.stack(ts).float() / 255  # noqa: E731
        return to_float(lrs), to_float(hrs), torch.stack(masks).float() if masks else None


def _orient(t: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 symmetries of the square (C×H×W): transpose if k ≥ 4, then k mod 4 quarter turns."""
    if k >= 4:
        t = t.transpose(1, 2)
    return torch.rot90(t, k % 4, dims=(1, 2)).contiguous()


def _masks(generator: MaskGenerator, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(network mask, output mask) of ``x``; without an output blend the output mask is all ones."""
    d_out = generator.config.output_dilation
    if d_out is None:
        mask = generator(x)
        return mask, torch.ones_like(mask)
    mask, output_mask = generator(x, output_dilation=d_out)
    return mask, output_mask


def trainable(model: LoadedModel, config: MaskConfig) -> tuple[dict[str, torch.Tensor], AcceleratedSR]:
    """(the network's state dict by its own names, a trainable copy of the network accelerated in its dense
    reference mode that shares those tensors).

    The surgery wraps the copy's own layers in place (no parameter is copied), so the tensors of the state
    dict taken before it are the ones training updates, under the architecture's names. The tail runs
    densely: the blend keeps only pixels the sparse tail computes exactly, so the loss is the same."""
    # Rebuilt from the weights rather than copied: ``load_model`` freezes every parameter, ``build`` leaves
    # them as the authors' code does (CARN's mean shifts stay fixed, the rest trains).
    net = model.arch.build({k: v.clone() for k, v in model.net.state_dict().items()}, model.scale).to(
        next(model.net.parameters()).dtype)
    state = net.state_dict(keep_vars=True)
    acc = accelerate(net, model.arch.rules, config, mode="dense", inplace=True, tail=None)
    acc.check_inputs = False
    return state, acc


def state_path_for(out: Path) -> Path:
    """Where the resumable state of a run writing ``out`` lives (beside it)."""
    return out.with_name(out.name + ".state")


def record_path_for(out: Path) -> Path:
    """The provenance record of the checkpoint ``out`` (``carn_m_ft.pth`` → ``carn_m_ft.json``)."""
    return out.with_suffix(".json")


def _identity(model: LoadedModel, spec: FinetuneSpec, data: TrainingSet) -> dict[str, Any]:
    """What makes two runs the same run: a state file is resumed only under the same identity."""
    # ``minutes`` and ``save_every`` say when to stop and save, not what is computed: a resume may change them.
    math_spec = {k: v for k, v in spec.to_json().items() if k not in ("minutes", "save_every")}
    return {"model": model.arch.id, "variant": model.variant, "scale": model.scale,
            "base_weights_sha256": sha256_of(model.weights), "spec": math_spec, "data_sha256": data.digest(),
            "threads": torch.get_num_threads()}


def finetune(model: LoadedModel, spec: FinetuneSpec, out: Path | None = None, device: str = "cpu",
             progress: Callable[[int, int, float], None] | None = None) -> FinetuneResult:
    """Fine-tune ``model`` under ``spec`` and return its weights (not written; ``save_finetuned`` writes).

    ``out``: the checkpoint the run will write; its state file (``state_path_for``) is resumed when it holds
    the same run (same model, weights, spec, data and thread count) and rewritten every ``spec.save_every``
    steps. ``progress(step, steps, loss)`` after each step.

    Raises:
        AmsrError: the patch does not fit the architecture's size rules, or the state file is of another run.
        InputImageError: no usable training image.
    """
    size = model.arch.size
    if spec.patch % size.multiple_of or spec.patch < size.minimum:
        raise AmsrError(f"{model.arch.id}: --patch must be a multiple of {size.multiple_of} and ≥ {size.minimum} "
                        f"LR px (got {spec.patch})")
    dev = torch.device(device)
    data = TrainingSet(spec.data, model.scale, spec.patch, spec.config, spec.mask_source, spec.holdout)
    identity = _identity(model, spec, data)
    state, acc = trainable(model, spec.config)
    acc.to(dev).eval()  # eval: inference semantics (no drop-path); gradients flow all the same
    params = [p for p in acc.parameters() if p.requires_grad]
    teacher = model.net.to(dev).eval() if spec.target == "dense" else None  # frozen by load_model
    opt = torch.optim.Adam(params, lr=spec.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, spec.steps)
                                                                                 / spec.steps)))
    rng = torch.Generator().manual_seed(spec.seed)
    step, elapsed = 0, 0.0
    losses: list[float] = []
    saved = state_path_for(out) if out is not None else None
    if saved is not None and saved.is_file():
        step, losses, elapsed = _resume(saved, identity, state, opt, sched, rng)
    generator = MaskGenerator(spec.config, cuda_graphs=False).to(dev) if spec.mask_source == "patch" else None
    started = time.monotonic()
    while step < spec.steps:
        if spec.minutes is not None and time.monotonic() - started >= spec.minutes * 60:
            break
        x, hr, masks = data.draw(spec.batch, rng)
        x = x.to(dev)
        if masks is None:
            assert generator is not None
            with torch.no_grad():
                mask, output_mask = _masks(generator, x)
        else:
            mask, output_mask = masks[:, :1].to(dev), masks[:, 1:].to(dev)
        y = acc(x, mask=mask, output_mask=output_mask if spec.config.output_dilation is not None else None)
        if teacher is None:
            target = hr.to(dev)
        else:  # distillation: the HR patch is not used (nor moved to the device)
            with torch.no_grad():
                target = teacher(x)
        l1 = F.l1_loss(y, target)
        loss = l1 if spec.loss == "l1" else F.mse_loss(y, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        losses.append(float(l1.detach()))
        if progress is not None:
            progress(step, spec.steps, losses[-1])
        if saved is not None and (step % spec.save_every == 0 or step == spec.steps):
            _save_state(saved, identity, state, opt, sched, rng, step, losses,
                        elapsed + time.monotonic() - started)
    elapsed += time.monotonic() - started
    weights = {k: v.detach().cpu().clone() for k, v in state.items()}
    _check_layout(model, weights)
    tail = losses[-20:]
    record = {**identity, "base_weights": str(model.weights), "data": str(spec.data), "images": len(data.files),
              "held_out": data.held_out,
              "steps_done": step, "minutes": spec.minutes,
              "first_loss_l1": round(sum(losses[:20]) / len(losses[:20]), 6) if losses else None,
              "final_loss_l1": round(sum(tail) / len(tail), 6) if tail else None,
              "seconds": round(elapsed, 1), "device": str(dev), "torch": torch.__version__,
              "loss": ("L1" if spec.loss == "l1" else "mean squared error") + " on [0, 1] RGB of the output as inference makes it (mask, skip, blend) against "
                      + ("the original network's dense output" if teacher is not None else "the HR patch")}
    return FinetuneResult(weights, record, losses)


def _check_layout(model: LoadedModel, weights: dict[str, torch.Tensor]) -> None:
    """The weights load back through the zoo (``detect``, then ``build``'s strict load): what ``--weights``
    will do. A descriptor whose network renames the official keys would fail here, not in a user's tool."""
    if not model.arch.detect(weights):
        raise AmsrError(f"{model.arch.id}: the trained state dict is not recognised as its own layout")
    model.arch.build(weights, model.scale)


def _save_state(path: Path, identity: dict[str, Any], state: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
                sched: torch.optim.lr_scheduler.LRScheduler, rng: torch.Generator, step: int, losses: list[float],
                elapsed: float) -> None:
    blob = {"identity": json.dumps(identity, sort_keys=True), "weights": {k: v.detach().cpu() for k, v in state.items()},
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng.get_state(), "step": step,
            "losses": losses, "elapsed": elapsed}
    save_with(path, lambda tmp: torch.save(blob, tmp))


def _resume(path: Path, identity: dict[str, Any], state: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
            sched: torch.optim.lr_scheduler.LRScheduler, rng: torch.Generator) -> tuple[int, list[float], float]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — any unreadable state is the same one-line refusal
        raise AmsrError(f"{path}: unreadable training state ({type(e).__name__}); delete it to start over") from None
    if blob.get("identity") != json.dumps(identity, sort_keys=True):
        raise AmsrError(f"{path} is the state of another run (model, weights, settings, data or thread count "
                        "differ): delete it or choose another --out")
    with torch.no_grad():
        for k, v in blob["weights"].items():
            state[k].copy_(v)
    opt.load_state_dict(blob["optimizer"])
    sched.load_state_dict(blob["scheduler"])
    rng.set_state(blob["rng"])
    return int(blob["step"]), list(blob["losses"]), float(blob["elapsed"])


def save_finetuned(out: Path, result: FinetuneResult) -> tuple[Path, Path]:
    """Write the checkpoint (``torch.save`` of the state dict) and its provenance record, each atomically;
    the record gets the checkpoint's sha256. Returns (checkpoint, record)."""
    # Saved through memory: a zip written to a path takes the file's name as its root folder, so the atomic
    # write's random temp name changed the bytes (and the sha256 operating points bind to) of equal weights.
    buf = io.BytesIO()
    torch.save(result.state_dict, buf)
    save_bytes(out, buf.getvalue())
    record = {**result.record, "weights_sha256": sha256_of(out)}
    rec = record_path_for(out)
    save_bytes(rec, (json.dumps(record, indent=2) + "\n").encode())
    return out, rec


def remove_state(out: Path) -> None:
    """Delete the finished run's state file (it holds optimiser moments: 3× the weights)."""
    try:
        os.unlink(state_path_for(out))
    except FileNotFoundError:
        pass


__all__: Sequence[str] = ("FinetuneResult", "FinetuneSpec", "TrainingSet", "finetune", "record_path_for",
                          "remove_state", "save_finetuned", "state_path_for", "trainable")
