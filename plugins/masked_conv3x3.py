"""``amsr::MaskedConv3x3``: a 3×3 convolution computed only where a mask is set (the reference twin).

Semantics (NCHW, float32 or float16)::

    out[n, o, y, x] = conv3x3(features, weight, bias, groups, pad=1)[n, o, y, x]   where mask[n, 0, y, x] > 0.5
                    = features[n, o, y, x]                                          elsewhere

Inputs: ``features`` N×C×H×W, ``mask`` N×1×H×W (1 = compute), ``weight`` O×(C/groups)×3×3 with O == C
(the output keeps the input where the mask is 0, so channel counts must agree), ``bias`` O.
Attribute: ``groups`` (int ≥ 1, divides C). This is what ``amsr.sparse.pixel.MaskedConv2d`` computes and
what ``export.exportable.GatherScatterConv2d`` spells with NonZero/GatherND/MatMul/ScatterND.

This module holds the NumPy and torch references and the ``onnx.reference`` ``OpRun`` so that
``ReferenceEvaluator(model, new_ops=[MaskedConv3x3])`` runs a plugin graph on CPU. The TensorRT definition is
in ``masked_conv3x3_trt.py`` and the Triton kernel in ``masked_conv3x3_triton.py`` (see plugins/README.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

PLUGIN_NAMESPACE = "amsr"
PLUGIN_NAME = "MaskedConv3x3"
PLUGIN_VERSION = "1"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"
#: ONNX node: domain and op_type the TensorRT ONNX parser maps to the plugin (its fallback plugin importer looks
#: the creator up by op_type, ``plugin_namespace`` and ``plugin_version`` attributes).
ONNX_DOMAIN = PLUGIN_NAMESPACE
ONNX_OP_TYPE = PLUGIN_NAME
MASK_THRESHOLD = 0.5


def check_shapes(x_shape: tuple[int, ...], mask_shape: tuple[int, ...], w_shape: tuple[int, ...],
                 b_shape: tuple[int, ...] | None, groups: int) -> None:
    """Raise ``ValueError`` naming the offending shape when the inputs do not fit the op's contract."""
    if len(x_shape) != 4:
        raise ValueError(f"{PLUGIN_ID}: features must be N×C×H×W, got {x_shape}")
    n, c, h, w = x_shape
    if tuple(mask_shape) != (n, 1, h, w):
        raise ValueError(f"{PLUGIN_ID}: mask must be {(n, 1, h, w)}, got {tuple(mask_shape)}")
    if groups < 1 or c % groups:
        raise ValueError(f"{PLUGIN_ID}: groups={groups} must be ≥ 1 and divide C={c}")
    if tuple(w_shape) != (c, c // groups, 3, 3):
        raise ValueError(f"{PLUGIN_ID}: weight must be {(c, c // groups, 3, 3)} (O == C), got {tuple(w_shape)}")
    if b_shape is not None and tuple(b_shape) != (c,):
        raise ValueError(f"{PLUGIN_ID}: bias must be ({c},), got {tuple(b_shape)}")


def masked_conv3x3_numpy(x: np.ndarray, mask: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                         groups: int = 1) -> np.ndarray:
    """NumPy reference (dense conv of every pixel, then select; computed in float64, returned in x's dtype)."""
    check_shapes(x.shape, mask.shape, weight.shape, None if bias is None else bias.shape, groups)
    n, c, h, w = x.shape
    cg = c // groups
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    # patches: N×C×9×H×W, tap-major in the weight's (ky, kx) order
    patches = np.stack([xp[:, :, ky:ky + h, kx:kx + w] for ky in range(3) for kx in range(3)], axis=2)
    patches = patches.reshape(n, groups, cg * 9, h, w)
    wg = weight.astype(np.float64).reshape(groups, c // groups, cg * 9)
    conv = np.einsum("gok,ngkhw->ngohw", wg, patches).reshape(n, c, h, w)
    if bias is not None:
        conv = conv + bias.astype(np.float64).reshape(1, c, 1, 1)
    return np.where(mask > MASK_THRESHOLD, conv, x).astype(x.dtype)


def masked_conv3x3_torch(x: Any, mask: Any, weight: Any, bias: Any | None, groups: int = 1) -> Any:
    """torch reference: ``F.conv2d`` everywhere, then ``where(mask)`` (same dtype and device as ``x``)."""
    import torch
    import torch.nn.functional as F

    check_shapes(tuple(x.shape), tuple(mask.shape), tuple(weight.shape),
                 None if bias is None else tuple(bias.shape), groups)
    conv = F.conv2d(x, weight, bias, padding=1, groups=groups)
    return torch.where(mask > MASK_THRESHOLD, conv, x)


def _op_run_base() -> type:
    from onnx.reference.op_run import OpRun

    return OpRun


class MaskedConv3x3(_op_run_base()):  # type: ignore[misc]  # base from a call (onnx OpRun): unchecked by mypy
    """``onnx.reference`` twin of the plugin: ``ReferenceEvaluator(model, new_ops=[MaskedConv3x3])``."""

    op_domain = ONNX_DOMAIN

    def _run(self, x: np.ndarray, mask: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
             groups: int | None = None, plugin_namespace: str | None = None,
             plugin_version: str | None = None) -> tuple[np.ndarray]:
        return (masked_conv3x3_numpy(x, mask, weight, bias, int(groups or 1)),)
