"""Integer-factor upsampling for the output blend, written as a conv + pixel shuffle and a broadcast.

``F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)`` and ``mode="nearest"`` export to
ONNX ``Resize``, which onnxruntime's CPU provider runs slowly: in the exported default operating points the
blend's two Resize nodes took 43 ms per Set14 image, 23–30 % of the whole dense CARN-M / IMDTN forward
(results/bench/*_default_*.json profiles). For an integer factor both are fixed linear maps:

- bicubic: output pixel ``q·s + p`` reads LR pixels ``q−2 … q+2`` (clamped at the border, as torch does)
  with the cubic-convolution weights (a = −0.75) of phase ``p`` — one depthwise 5×5 conv with s² outputs
  per channel on the replicate-padded input, then ``pixel_shuffle``;
- nearest: each LR pixel repeated s×s — a broadcast and a reshape.

Same values as ``F.interpolate`` (bicubic up to float rounding: ≤ 3e-6 on [0, 1] inputs, x2–x4; nearest
exactly). Used by the exported graphs (``export.exportable.prepare_for_export``); PyTorch keeps ``F.interpolate``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

_A = -0.75  # torch's (and Keys') cubic convolution coefficient


def _cubic(d: float) -> float:
    d = abs(d)
    if d <= 1:
        return ((_A + 2) * d - (_A + 3)) * d * d + 1
    if d < 2:
        return ((_A * d - 5 * _A) * d + 8 * _A) * d - 4 * _A
    return 0.0


@functools.lru_cache(maxsize=None)
def _phase_taps(scale: int) -> tuple[tuple[float, ...], ...]:
    """scale × 5: the weights of LR offsets −2…2 for each output phase. Python floats, not a tensor: a
    tensor cached while an exporter traces would be a fake one, poisoning later eager calls."""
    rows = []
    for p in range(scale):
        src = (p + 0.5) / scale - 0.5  # position of output phase p relative to its LR pixel
        rows.append(tuple(_cubic(src - off) for off in range(-2, 3)))
    return tuple(rows)


def bicubic_kernel(scale: int, channels: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Depthwise conv weights (channels·scale², 1, 5, 5), ordered for ``pixel_shuffle``."""
    t = torch.tensor(_phase_taps(scale), dtype=torch.float64)
    k = torch.einsum("pi,qj->pqij", t, t).reshape(scale * scale, 1, 5, 5)  # phase (py, px) → 5×5
    return k.repeat(channels, 1, 1, 1).to(dtype)


def bicubic_upscale(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)`` for an integer factor."""
    c = x.shape[1]
    weight = bicubic_kernel(scale, c, x.dtype).to(x.device)
    y = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), weight, groups=c)
    return F.pixel_shuffle(y, scale)


def nearest_upscale(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=scale, mode="nearest")`` for an integer factor."""
    n, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(n, c, h, scale, w, scale).reshape(n, c, h * scale, w * scale)
