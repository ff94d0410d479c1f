"""Parity of an exported graph with its PyTorch reference, through Polygraphy's Comparator.

Golden outputs come from the PyTorch model (stored as Polygraphy ``RunResults``: Polygraphy's ``PytRunner``
moves every input to CUDA, so it cannot run on a CPU-only machine). The ONNX graph runs in ``OnnxrtRunner``
on the same inputs, with its ``mask`` tensor added as an output (``ModifyOutputs``) for accelerated models.
``Comparator.compare_accuracy`` with ``SimpleCompareFunc`` (what ``CompareFunc.simple`` builds; the
factory is deprecated in Polygraphy 0.53) checks ``sr`` elementwise within ``atol`` (rtol 0)
and ``mask`` exactly (atol 0). On real images with HR references the Y-PSNR of both outputs is also
compared (``psnr_tol`` dB).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from amsr.core.errors import BackendUnavailableError, InputImageError
from amsr.runtime.onnxrt import OrtSessionFromOnnx, import_onnxruntime

try:  # Polygraphy imports onnx and onnxruntime lazily, at first use
    from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs, OnnxFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.comparator import Comparator, RunResults, SimpleCompareFunc
    from polygraphy.logger import G_LOGGER
except ImportError as e:
    raise BackendUnavailableError("polygraphy is not installed: pip install polygraphy") from e

log = logging.getLogger(__name__)

SR, MASK = "sr", "mask"
GOLDEN_RUNNER = "pytorch-reference"


@dataclass
class ParityRow:
    """One input: its largest |ONNX − PyTorch| on ``sr``, differing mask pixels and Y-PSNRs (with an HR)."""

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    mask_mismatch_pixels: int
    psnr_torch: float | None = None
    psnr_onnx: float | None = None
    # Float64 arbitration (``compare_with_torch``): largest |PyTorch float32 − float64| and |ONNX − float64|.
    float32_error: float | None = None
    onnx_error: float | None = None

    @property
    def psnr_diff(self) -> float | None:
        if self.psnr_torch is None or self.psnr_onnx is None:
            return None
        return abs(self.psnr_onnx - self.psnr_torch)


@dataclass
class ParityResult:
    """Verdict over all inputs. ``passed``: Polygraphy's accuracy check passed (or, where ``sr`` missed
    ``atol``, the float64 arbitration of ``compare_with_torch`` did), no mask pixel differs and every PSNR
    difference is within ``psnr_tol``. ``psnr_diff`` is ``None`` when no HR image was given."""

    passed: bool
    max_abs_diff: float
    psnr_diff: float | None
    mask_mismatch_pixels: int
    rows: list[ParityRow] = field(default_factory=list)
    accuracy_passed: bool = True
    atol: float = 1e-4
    psnr_tol: float = 1e-3

    def summary(self) -> str:
        psnr = "n/a" if self.psnr_diff is None else f"{self.psnr_diff:.2e} dB (tol {self.psnr_tol:g})"
        text = (f"{'PASSED' if self.passed else 'FAILED'}: {len(self.rows)} inputs, max |diff| "
                f"{self.max_abs_diff:.2e} (atol {self.atol:g}), mask mismatches {self.mask_mismatch_pixels}, "
                f"PSNR diff {psnr}")
        judged = [r for r in self.rows if r.onnx_error is not None and r.float32_error is not None]
        if judged:
            text += (f"; float64 arbitration on {len(judged)} input(s): ONNX within "
                     f"{max(r.onnx_error or 0.0 for r in judged):.2e} of float64, PyTorch float32 within "
                     f"{max(r.float32_error or 0.0 for r in judged):.2e}")
        return text


def _reference_outputs(model: nn.Module, inputs: Sequence[np.ndarray]) -> tuple[list[dict[str, np.ndarray]], bool]:
    """PyTorch outputs per input (``sr``, and ``mask`` for accelerated models / ``mask`` alone for a generator)."""
    from amsr.export.exportable import mask_generator_of
    from amsr.masking.mask import MaskGenerator
    from amsr.surgery import AcceleratedSR

    model = model.eval()
    accelerated = next((m for m in model.modules() if isinstance(m, AcceleratedSR)), None)
    only_mask = isinstance(model, MaskGenerator)
    golden = []
    with torch.no_grad():
        for x in inputs:
            y = np.ascontiguousarray(model(torch.from_numpy(x)).numpy())  # Polygraphy needs contiguous arrays
            if only_mask:
                golden.append({MASK: y})
            elif accelerated is not None and accelerated.last_mask is not None:
                golden.append({SR: y, MASK: np.ascontiguousarray(accelerated.last_mask.numpy())})
            else:
                golden.append({SR: y})
    return golden, mask_generator_of(model) is not None


def _psnr(sr: np.ndarray, hr: np.ndarray, scale: int) -> float:
    from amsr.io.images import to_uint8
    from amsr.io.metrics import psnr_y

    return psnr_y(to_uint8(torch.from_numpy(sr[:1])), hr, shave=scale)


def compare_with_torch(model: nn.Module, onnx_path: str | os.PathLike[str], inputs: Sequence[np.ndarray],
                       names: Sequence[str] | None = None, hr: Sequence[np.ndarray | None] | None = None,
                       atol: float = 1e-4, psnr_tol: float = 1e-3,
                       providers: str | Sequence[str] | None = None) -> ParityResult:
    """Run ``model`` (PyTorch) and the graph at ``onnx_path`` (onnxruntime) on ``inputs`` and compare.

    Args:
        model: the PyTorch reference: dense, accelerated, or a ``MaskGenerator`` for a mask-only graph.
        onnx_path: the exported graph (input ``lr``; output ``sr`` and/or ``mask``).
        inputs: N×3×H×W float32 arrays in [0, 1], any sizes.
        names: a label per input (default ``input_<i>``).
        hr: per input, the uint8 H×W×3 HR image (or None) for the PSNR comparison; inputs must then be 1×3×H×W.
        atol: tolerance on ``sr`` (``mask`` must match exactly). An input that misses it still passes when
            the model run in float64 (same mask) shows the graph as close to the exact result as PyTorch's
            own float32 run (within ``FLOAT64_MARGIN`` × its error): float32 noise, not an export fault.
        psnr_tol: largest allowed |PSNR(ONNX) − PSNR(PyTorch)| in dB.
        providers: onnxruntime providers (``OrtUpscaler`` rules; default CPU).
    """
    import_onnxruntime()
    inputs = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]
    names = list(names) if names is not None else [f"input_{i}" for i in range(len(inputs))]
    golden, has_mask = _reference_outputs(model, inputs)
    outputs = list(golden[0].keys()) if golden else [SR]

    loader = OnnxFromPath(str(onnx_path))
    if has_mask:
        loader = ModifyOutputs(loader, outputs=outputs)
    runner = OnnxrtRunner(OrtSessionFromOnnx(BytesFromOnnx(loader), providers=providers), name="onnxruntime")
    # CRITICAL: Polygraphy's own "[E] FAILED" lines would contradict a float64-arbitrated PASS; the summary
    # and the per-input rows carry the figures.
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
        onnx_results = Comparator.run([runner], data_loader=[{"lr": x} for x in inputs])
        results = RunResults()
        results.add(golden, runner_name=GOLDEN_RUNNER)
        for runner_name, iterations in onnx_results.items():
            results[runner_name] = iterations
        accuracy = Comparator.compare_accuracy(
            results, compare_func=SimpleCompareFunc(atol={SR: atol, MASK: 0.0, "": atol}, rtol=0.0))

    rows = []
    onnx_iters = next(iter(onnx_results.values()))
    onnx_out = [dict(onnx_iters[i].items()) for i in range(len(inputs))]
    for i, (name, x, ref) in enumerate(zip(names, inputs, golden, strict=True)):
        got = onnx_out[i]
        main = SR if SR in ref else MASK
        if got[main].shape != ref[main].shape:
            raise InputImageError(f"{name}: ONNX output {got[main].shape} vs PyTorch {ref[main].shape}")
        row = ParityRow(name=name, shape=tuple(x.shape), max_abs_diff=float(np.abs(got[main] - ref[main]).max()),
                        mask_mismatch_pixels=int((got[MASK] != ref[MASK]).sum()) if MASK in ref else 0)
        target = None if hr is None else hr[i]
        if target is not None and SR in ref:
            scale = ref[SR].shape[-1] // x.shape[-1]
            row.psnr_torch, row.psnr_onnx = _psnr(ref[SR], target, scale), _psnr(got[SR], target, scale)
        rows.append(row)

    psnr_diffs = [r.psnr_diff for r in rows if r.psnr_diff is not None]
    psnr_diff = max(psnr_diffs) if psnr_diffs else None
    mismatches = sum(r.mask_mismatch_pixels for r in rows)
    values_ok = bool(accuracy)
    if not values_ok and mismatches == 0 and all(SR in ref for ref in golden):
        values_ok = _float64_arbitration(model, inputs, golden, onnx_out, rows, atol)
    passed = values_ok and mismatches == 0 and (psnr_diff is None or psnr_diff <= psnr_tol)
    result = ParityResult(passed=passed, max_abs_diff=max((r.max_abs_diff for r in rows), default=0.0),
                          psnr_diff=psnr_diff, mask_mismatch_pixels=mismatches, rows=rows,
                          accuracy_passed=bool(accuracy), atol=atol, psnr_tol=psnr_tol)
    log.info("parity %s: %s", onnx_path, result.summary())
    return result


# A graph passes where it misses ``atol`` if it is as close to the exact result as PyTorch's own float32 run:
# DITN_Real's raw skip differs from float64 by up to 1.45e-4 in PyTorch float32 and 1.59e-4 in onnxruntime on
# Set5 (issue #16: "fails the 1e-4 tolerance, masks identical"); a margin of 2× that float32 error.
FLOAT64_MARGIN = 2.0


def _float64_arbitration(model: nn.Module, inputs: Sequence[np.ndarray], golden: list[dict[str, np.ndarray]],
                         onnx_out: list[dict[str, np.ndarray]], rows: list[ParityRow], atol: float) -> bool:
    """For every input whose ``sr`` misses ``atol``: the model in float64 (its mask must equal the float32
    one) decides, passing the input when |ONNX − float64| ≤ max(atol, ``FLOAT64_MARGIN`` × |PyTorch float32 −
    float64|). False when any input fails, or when the model cannot run in float64."""
    import copy

    from amsr.surgery import AcceleratedSR

    failing = [i for i, r in enumerate(rows) if r.max_abs_diff > atol]
    if not failing:
        return False  # the comparator failed for another reason (e.g. NaN): not a float32 question
    try:
        exact = copy.deepcopy(model).double().eval()
        accelerated = next((m for m in exact.modules() if isinstance(m, AcceleratedSR)), None)
        with torch.no_grad():
            for i in failing:
                y = exact(torch.from_numpy(inputs[i]).double()).numpy()
                if MASK in golden[i] and (accelerated is None or accelerated.last_mask is None or not np.array_equal(
                        accelerated.last_mask.numpy().astype(np.float32), golden[i][MASK])):
                    log.info("float64 arbitration: the float64 mask of %s differs; no arbitration", rows[i].name)
                    return False
                rows[i].float32_error = float(np.abs(golden[i][SR] - y).max())
                rows[i].onnx_error = float(np.abs(onnx_out[i][SR] - y).max())
    except Exception as e:  # a model with float32-only parts (Triton, CUDA graphs): keep the plain verdict
        log.info("float64 arbitration not possible: %s: %s", type(e).__name__, e)
        return False
    return all((rows[i].onnx_error or 0.0) <= max(atol, FLOAT64_MARGIN * (rows[i].float32_error or 0.0))
               for i in failing)


def check_parity(model: nn.Module, onnx_path: str | os.PathLike[str], lr_images: Sequence[str | os.PathLike[str]],
                 hr_images: Sequence[str | os.PathLike[str]] | None = None, atol: float = 1e-4,
                 psnr_tol: float = 1e-3, providers: str | Sequence[str] | None = None) -> ParityResult:
    """``compare_with_torch`` on image files (8-bit RGB LR, optional HR of the same names for PSNR)."""
    from amsr.io.images import read_rgb8, to_tensor

    if hr_images is not None and len(hr_images) != len(lr_images):
        raise InputImageError(f"{len(lr_images)} LR images but {len(hr_images)} HR images")
    inputs = [to_tensor(read_rgb8(p)).numpy() for p in lr_images]
    hr = [read_rgb8(p) for p in hr_images] if hr_images is not None else None
    return compare_with_torch(model, onnx_path, inputs, names=[Path(p).name for p in lr_images], hr=hr,
                              atol=atol, psnr_tol=psnr_tol, providers=providers)


def parity_images(folder: str | os.PathLike[str]) -> tuple[list[Path], list[Path] | None]:
    """The LR images of a parity folder and their HR partners: ``LR/`` is required; without ``HR/`` the PSNR
    check is not made (``None``); with it, every LR image needs its HR partner (``find_pairs``' rule). One
    rule for the onnxruntime and the TensorRT check.

    Raises:
        InputImageError: no LR images, or an HR/ folder missing some partners.
    """
    from amsr.io.images import list_images
    from amsr.io.pairs import find_pairs

    folder = Path(folder)
    if (folder / "HR").is_dir():
        pairs = find_pairs(folder)
        return [p.lr for p in pairs], [p.hr for p in pairs]
    lr = list_images(folder / "LR") if (folder / "LR").is_dir() else []
    if not lr:
        raise InputImageError(f"no LR images in {folder / 'LR'}")
    return lr, None


def check_parity_on_set(model: nn.Module, onnx_path: str | os.PathLike[str], folder: str | os.PathLike[str],
                        atol: float = 1e-4, psnr_tol: float = 1e-3,
                        providers: str | Sequence[str] | None = None) -> ParityResult:
    """Parity on a folder with ``LR/`` (and ``HR/`` for the PSNR check: ``parity_images``)."""
    lr, hr = parity_images(folder)
    return check_parity(model, onnx_path, lr, hr, atol=atol, psnr_tol=psnr_tol, providers=providers)
