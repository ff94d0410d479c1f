"""Triton kernel of ``amsr::MaskedConv3x3`` (see masked_conv3x3.py for the semantics).

Argument order is TensorRT's AOT-plugin convention: input pointers, then the scalar arguments
(``extra_args``), then the output pointer. One program computes a block of ``BLOCK_P`` pixels (row-major within one image) × ``BLOCK_O`` output
channels. A block with no masked-in pixel copies its input and returns without touching the weights: that
is where the sparsity pays. Otherwise the 3×3 taps are accumulated in float32 over the C/groups input
channels of each output channel's group (zero padding by masked loads), the bias is added, and masked-out
pixels keep their input value.

``launch(...)`` runs the kernel through Triton's launcher (GPU, or CPU with ``TRITON_INTERPRET=1``, which is
how the tests check it); ``masked_conv3x3_trt.py`` compiles the same ``masked_conv3x3_kernel`` ahead of time
for TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import triton
import triton.language as tl

BLOCK_P = 64
BLOCK_O = 16


@triton.jit
def masked_conv3x3_kernel(x_ptr, m_ptr, w_ptr, b_ptr, C, H, W, CG, y_ptr,
                          BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_o = tl.program_id(1)
    n = tl.program_id(2)
    hw = H * W
    pix = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    och = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    pix_ok = pix < hw
    och_ok = och < C
    ok2 = pix_ok[:, None] & och_ok[None, :]
    x_img = x_ptr + n * C * hw
    io_off = och[None, :] * hw + pix[:, None]  # BLOCK_P × BLOCK_O offsets inside one image
    m = tl.load(m_ptr + n * hw + pix, mask=pix_ok, other=0.0)
    on = m > 0.5
    x_in = tl.load(x_img + io_off, mask=ok2, other=0.0)
    if tl.sum(on.to(tl.int32), axis=0) > 0:
        py = pix // W
        px = pix % W
        first_in = (och // CG) * CG  # first input channel of each output channel's group
        acc = tl.zeros((BLOCK_P, BLOCK_O), dtype=tl.float32)
        for ci in range(CG):
            for t in tl.static_range(9):
                yy = py + (t // 3 - 1)
                xx = px + (t % 3 - 1)
                inb = on & pix_ok & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
                xv = tl.load(x_img + (first_in + ci)[None, :] * hw + (yy * W + xx)[:, None],
                             mask=inb[:, None] & och_ok[None, :], other=0.0).to(tl.float32)
                wv = tl.load(w_ptr + och * (CG * 9) + ci * 9 + t, mask=och_ok, other=0.0).to(tl.float32)
                acc += xv * wv[None, :]
        acc += tl.load(b_ptr + och, mask=och_ok, other=0.0).to(tl.float32)[None, :]
        out = tl.where(on[:, None], acc.to(x_in.dtype), x_in)
        tl.store(y_ptr + n * C * hw + io_off, out, mask=ok2)
    else:
        tl.store(y_ptr + n * C * hw + io_off, x_in, mask=ok2)


def aot_signature(ty: str = "fp32") -> dict[str, str]:
    """The kernel signature for ``triton.compiler.ASTSource`` (``ty``: ``"fp32"`` or ``"fp16"``)."""
    ptr = f"*{ty}"
    return {"x_ptr": ptr, "m_ptr": ptr, "w_ptr": ptr, "b_ptr": ptr, "C": "i32", "H": "i32", "W": "i32", "CG": "i32",
            "y_ptr": ptr, "BLOCK_P": "constexpr", "BLOCK_O": "constexpr"}


@dataclass(frozen=True)
class CompiledKernel:
    """An ahead-of-time compiled kernel: what TensorRT's ``aot_impl`` needs to launch it."""

    name: str
    ptx: str
    num_warps: int
    shared: int


def compile_ptx(ty: str = "fp32", target: Any = None) -> CompiledKernel:
    """Compile the kernel to PTX without launching it (``target``: a ``triton.backends.compiler.GPUTarget``,
    default the current GPU). Refuses a kernel that needs Triton's global/profile scratch buffers: TensorRT's
    AOT launcher passes only inputs, scalar arguments and outputs (plugins/README.md, known issues)."""
    src = triton.compiler.ASTSource(fn=masked_conv3x3_kernel, signature=aot_signature(ty),
                                    constexprs={"BLOCK_P": BLOCK_P, "BLOCK_O": BLOCK_O})
    compiled = triton.compile(src, target=target) if target is not None else triton.compile(src)
    md = compiled.metadata
    if getattr(md, "global_scratch_size", 0) or getattr(md, "profile_scratch_size", 0):
        raise RuntimeError(f"{md.name} needs Triton scratch memory, which a TensorRT AOT plugin cannot provide")
    return CompiledKernel(name=md.name, ptx=compiled.asm["ptx"], num_warps=md.num_warps, shared=md.shared)


def grid(n: int, c: int, h: int, w: int) -> tuple[int, int, int]:
    """Launch grid for an N×C×H×W input: (pixel blocks, channel blocks, N)."""
    return (triton.cdiv(h * w, BLOCK_P), triton.cdiv(c, BLOCK_O), n)


def launch(x: Any, mask: Any, weight: Any, bias: Any, groups: int = 1) -> Any:
    """Run the kernel on torch tensors (contiguous NCHW); returns a new tensor like ``x``."""
    import torch

    from amsr.plugins.masked_conv3x3 import check_shapes

    check_shapes(tuple(x.shape), tuple(mask.shape), tuple(weight.shape), tuple(bias.shape), groups)
    n, c, h, w = x.shape
    x, mask, weight, bias = (t.contiguous() for t in (x, mask.to(x.dtype), weight.to(x.dtype), bias.to(x.dtype)))
    y = torch.empty_like(x)
    masked_conv3x3_kernel[grid(n, c, h, w)](x, mask, weight, bias, c, h, w, c // groups, y,
                                            BLOCK_P=BLOCK_P, BLOCK_O=BLOCK_O)
    return y
