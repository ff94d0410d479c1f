"""Parity of a TensorRT engine with the PyTorch reference (the ``--trt`` counterpart of ``parity.py``).

The same golden outputs as ``parity.compare_with_torch`` (PyTorch, stored as Polygraphy ``RunResults``)
are compared with a ``TrtRunner`` on the engine through ``Comparator.compare_accuracy`` and
``SimpleCompareFunc`` on ``sr`` (the engine's only output; the mask is compared through the output).

Tolerances (``trt_tolerances``), on ``sr`` in [0, 1]:

- fp32 engines: atol 5e-4. TensorRT picks its own conv algorithms (Winograd, different summation order)
  and Polygraphy's ``CreateConfig`` leaves TF32 off, so per-pixel differences stay ~1e-5; 5e-4 leaves a
  margin for the long CARN/IMDN cascades while staying 8× below one 8-bit level (1/255 ≈ 3.9e-3).
- fp16 engines: atol 3e-2 per element (fp16 has 11 significant bits: ~5e-4 relative per op, and a ~50-conv
  cascade accumulates it; an occasional sparse-mask flip at a 2-means boundary changes a few pixels by up
  to a few 1e-2) plus a mean-|diff| bound of 2e-3 and |ΔPSNR| ≤ 0.05 dB when HR images are given: the
  image-level checks are what matter for fp16, not the worst pixel.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from torch import nn

from amsr.runtime.parity import GOLDEN_RUNNER, SR, ParityResult, ParityRow, _psnr, _reference_outputs

FP32_ATOL = 5e-4
FP16_ATOL = 3e-2
FP16_MEAN_ATOL = 2e-3
FP16_PSNR_TOL = 0.05
FP32_PSNR_TOL = 1e-3


def trt_tolerances(fp16: bool) -> tuple[float, float | None, float]:
    """``(atol, mean_atol or None, psnr_tol)`` for an fp16 or fp32 engine (module docstring)."""
    return (FP16_ATOL, FP16_MEAN_ATOL, FP16_PSNR_TOL) if fp16 else (FP32_ATOL, None, FP32_PSNR_TOL)


def compare_engine_with_torch(model: nn.Module, engine_path: str | os.PathLike[str], inputs: Sequence[np.ndarray],
                              names: Sequence[str] | None = None, hr: Sequence[np.ndarray | None] | None = None,
                              onnx_path: str | os.PathLike[str] | None = None) -> ParityResult:
    """Run ``model`` (PyTorch, CPU) and the engine (``TrtRunner``) on ``inputs`` and compare (fp16-aware)."""
    from polygraphy.comparator import Comparator, RunResults, SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    from amsr.runtime.trt import TrtUpscaler

    upscaler = TrtUpscaler(engine_path, onnx_path)
    fp16 = upscaler.sidecar.get("precision") == "fp16"
    atol, mean_atol, psnr_tol = trt_tolerances(fp16)
    inputs = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]
    names = list(names) if names is not None else [f"input_{i}" for i in range(len(inputs))]
    golden, _ = _reference_outputs(model, inputs)
    golden = [{SR: g[SR]} for g in golden]
    try:
        with G_LOGGER.verbosity(G_LOGGER.ERROR):
            trt_results = Comparator.run([upscaler._runner], data_loader=[{"lr": x} for x in inputs])
            results = RunResults()
            results.add(golden, runner_name=GOLDEN_RUNNER)
            for runner_name, iterations in trt_results.items():
                results[runner_name] = iterations
            accuracy = Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(atol={SR: atol}, rtol=0.0))
    finally:
        upscaler.close()
    rows, mean_ok = [], True
    iters = next(iter(trt_results.values()))
    for i, (name, x, ref) in enumerate(zip(names, inputs, golden, strict=True)):
        got = np.asarray(dict(iters[i].items())[SR])
        diff = np.abs(got - ref[SR])
        mean_ok &= mean_atol is None or float(diff.mean()) <= mean_atol
        row = ParityRow(name=name, shape=tuple(x.shape), max_abs_diff=float(diff.max()), mask_mismatch_pixels=0)
        target = None if hr is None else hr[i]
        if target is not None:
            scale = ref[SR].shape[-1] // x.shape[-1]
            row.psnr_torch, row.psnr_onnx = _psnr(ref[SR], target, scale), _psnr(got, target, scale)
        rows.append(row)
    psnr_diffs = [r.psnr_diff for r in rows if r.psnr_diff is not None]
    psnr_diff = max(psnr_diffs) if psnr_diffs else None
    passed = bool(accuracy) and mean_ok and (psnr_diff is None or psnr_diff <= psnr_tol)
    return ParityResult(passed=passed, max_abs_diff=max((r.max_abs_diff for r in rows), default=0.0),
                        psnr_diff=psnr_diff, mask_mismatch_pixels=0, rows=rows, accuracy_passed=bool(accuracy),
                        atol=atol, psnr_tol=psnr_tol)
