"""The mask's 1-D 2-means (``amsr.masking.mask.kmeans2_threshold``) as one Triton kernel, for CUDA.

Why: eagerly, the 50 Lloyd iterations are ~650 tiny kernels; replayed from a CUDA graph they still cost
~2.4 ms on a 481×321 image on an H200 — a fifth of the dense CARN-M forward (results/bench/gpu). Here one
program per image keeps the centroids in registers and streams its row (L2-resident) once per iteration.

Same iteration as the torch version (start at (min, max), midpoint split, an empty cluster keeps its
centroid, fixed iteration count); the sums are float32 in another order, so a threshold can differ in
the last bits and, rarely, a pixel lying exactly on it flips. Checked on CPU with ``TRITON_INTERPRET=1``
against the torch version (tests/test_kmeans_triton.py) and on a GPU by ``scripts/bench_kernel_gpu.py``.
"""

from __future__ import annotations

import torch

try:  # Triton is optional: without it (or without CUDA) the torch version runs
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None

BLOCK = 1024


def available() -> bool:
    return triton is not None


if triton is not None:

    @triton.jit
    def _kmeans2_kernel(v_ptr, out_ptr, P, ITERS: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        base = v_ptr + row.to(tl.int64) * P
        lo = tl.full((), float("inf"), tl.float32)
        hi = tl.full((), float("-inf"), tl.float32)
        s_all = tl.zeros((), tl.float32)
        for start in range(0, P, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            ok = offs < P
            v = tl.load(base + offs, mask=ok, other=0.0).to(tl.float32)
            lo = tl.minimum(lo, tl.min(tl.where(ok, v, float("inf")), axis=0))
            hi = tl.maximum(hi, tl.max(tl.where(ok, v, float("-inf")), axis=0))
            s_all += tl.sum(v, axis=0)
        for _ in range(ITERS):
            thr = (lo + hi) * 0.5
            n_up = tl.zeros((), tl.float32)
            s_up = tl.zeros((), tl.float32)
            for start in range(0, P, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                ok = offs < P
                v = tl.load(base + offs, mask=ok, other=0.0).to(tl.float32)
                up = ok & (v > thr)
                n_up += tl.sum(up.to(tl.float32), axis=0)
                s_up += tl.sum(tl.where(up, v, 0.0), axis=0)
            n_low = P - n_up
            hi = tl.where(n_up > 0, s_up / tl.maximum(n_up, 1.0), hi)
            lo = tl.where(n_low > 0, (s_all - s_up) / tl.maximum(n_low, 1.0), lo)
        tl.store(out_ptr + row, (lo + hi) * 0.5)


def kmeans2_threshold_triton(values: torch.Tensor, iters: int) -> torch.Tensor:
    """``kmeans2_threshold`` of an N×P float32 tensor (CUDA, or CPU under ``TRITON_INTERPRET=1``); N×1."""
    if triton is None:
        raise RuntimeError("the Triton 2-means needs triton (pip install triton)")
    if values.dim() != 2 or values.shape[1] < 1:
        raise ValueError(f"expected N×P values with P ≥ 1, got {tuple(values.shape)}")
    values = values.contiguous().float()
    n, p = values.shape
    out = torch.empty(n, 1, dtype=torch.float32, device=values.device)
    _kmeans2_kernel[(n,)](values, out, p, ITERS=int(iters), BLOCK=BLOCK)
    return out
