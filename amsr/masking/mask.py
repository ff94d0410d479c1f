"""The high-frequency prior mask of AMSR (arXiv 2505.06975, Sec. 3): which LR pixels are worth computing.

    hf   = mean_c |x − G(x)|          (G: Gaussian blur, per channel, replicate border)
    mask = 2-means(hf) == high cluster  (per image)
    mask = maxpool_{2d+1}(mask)         (dilation d widens the computed area; d = 0: none)

Choices the paper leaves open, and why (numbers in README "Mask settings"):
- Blur 5×5, σ = 1.5: measured against 3×3/σ 0.8 and 7×7/σ 2.5 (``scripts/mask_settings_study.py``, CARN-M
  x4 Set5, blend d_net 4 / d_out 2): −0.108 dB at density 0.864, −0.118 at 0.850, −0.158 at 0.836. The
  three lie on one quality/density curve — the blur is a minor knob next to dilation — so the middle one
  (the setting of ../shared/FINDINGS.md) is kept.
- Channel mean of |x − G(x)|: colour edges of equal luminance still count (a reasoned choice, not measured
  against Y-only or max).
- Replicate border in the blur: reflect would need the image to be ≥ 3 px, and a zero border would mark the
  whole frame as "high frequency".
- 2-means: deterministic Lloyd iterations in 1-D, initialised at the minimum and maximum of the map. In 1-D
  with k = 2 the assignment is "above the midpoint of the two centroids", so each iteration is a threshold
  update; it is exportable to ONNX as a fixed number of unrolled steps (50: every Set5/Set14 LR image and
  a sample of the training images converge within 38). scikit-learn's ``KMeans`` with the same
  initialisation is the reference (``kmeans2_mask_sklearn``); the tests check both give the same mask on
  every Set5/Set14 image. Against scikit-learn's default k-means++ (best of 10) the min/max start lands on a
  neighbouring fixed point on a few images: ≤ 19 pixels differ (at most 0.12 % of an image), inertia within
  2e-6 relative.
- Flat image (max − min of the map ≤ ``flat_eps``, one cluster): the mask is all ones — with no evidence of
  where detail is, amsr computes everything rather than risk a silent quality loss.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from amsr.core.errors import InputImageError
from amsr.masking.cuda_graphs import CudaGraphed, can_replay
from amsr.core.tracing import is_tracing

# Upper bounds of the mask settings: sanity limits far above every useful value, so that a typo cannot make
# torch allocate gigabytes (``--blur-size 100001`` asked for an 80 GB kernel) or unroll a huge ONNX graph.
#: 31 taps cover ±3σ of σ = 5, over 3× the largest blur measured (7×7, σ 2.5: module docstring).
MAX_BLUR_SIZE = 31
#: At σ = 20 a 31-tap kernel's edge weight is already 0.75 of its centre (a box filter): more changes nothing.
MAX_BLUR_SIGMA = 20.0
#: d = 64 grows one pixel to 129×129 LR pixels, larger than a whole Set5 x4 LR image (≤ 128 px); calibrated
#: defaults use d ≤ 7 (amsr/zoo/operating_points.json).
MAX_DILATION = 64
#: Every Set5/Set14 image converges within 38 iterations; the ONNX graph unrolls each one (~10 nodes).
MAX_KMEANS_ITERS = 1000


@dataclass(frozen=True)
class MaskConfig:
    """Settings of the mask generator.

    Attributes:
        blur_size: Gaussian kernel size in LR pixels (odd).
        blur_sigma: Gaussian σ in LR pixels.
        dilation: radius d of the square max-pool (kernel 2d+1) applied to the binary mask; 0 = none.
        kmeans_iters: Lloyd iterations of the torch 2-means (fixed, so the ONNX graph is static).
        flat_eps: a high-frequency map whose range is at most this (on [0, 1] input) counts as flat.
        window_threshold: transformer blocks (``MaskedSwinBlock``) compute a window when the mean of the
            mask over its tokens is ≥ this fraction: 0 computes every window, 1 only fully masked-in ones,
            above 1 none. Ignored by models without window rules.
        output_dilation: ``None`` (default): no output blend, the network output is returned as is. An
            integer d_out: output blend (FINDINGS §2) — the SR pixels whose LR pixel lies in the mask dilated
            by d_out take the network's value, all others the bicubic upscale of the LR input (``torch``
            bicubic, ``align_corners=False``); the network's own mask keeps ``dilation`` (d_net). With the
            published weights d_out < d_net keeps the corrupted flat-region features ≥ d_net − d_out pixels
            away from kept ones (calibration admits only such pairs: ``operating_point.within_blend_floor``);
            d_out > d_net keeps skipped pixels, which only weights fine-tuned under that mask
            (``amsr-finetune``) are trained to tolerate.
        hf_floor: ``None`` (default): the paper's mask. A number τ: every pixel whose high-frequency value
            (``mean_c |x − G(x)|`` on [0, 1] input) is above τ is computed whatever the 2-means says (its
            threshold is capped at τ). The 2-means splits every image in two, so on one textured everywhere
            it skips the weaker half of the texture: on T91/t53 (hair beside a face, 71×69 LR) CARN-M x4 at
            d 6 / 3 loses 0.69 dB to its dense output, 0.05 dB with τ = 0.04, while Photos2K keeps its
            saving (51.3 → 51.0 %: its flat areas lie below 0.04; results §6).
    """

    blur_size: int = 5
    blur_sigma: float = 1.5
    dilation: int = 1
    kmeans_iters: int = 50
    flat_eps: float = 1e-6
    window_threshold: float = 0.5
    output_dilation: int | None = None
    hf_floor: float | None = None

    def to_json(self) -> dict[str, object]:
        """Every setting by name: the one form in which a ``MaskConfig`` is written (operating points, graph
        metadata, reports); ``from_json`` reads it back."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> MaskConfig:
        """The ``MaskConfig`` of a ``to_json`` object. ``ValueError`` (one line) for a non-object, unknown
        settings (all named, with the known ones) or a bad value (the checks of ``__post_init__``)."""
        if not isinstance(data, dict):
            raise ValueError(f"expected an object, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = [str(k) for k in data if k not in known]
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(map(repr, unknown))} (known: {', '.join(known)})")
        try:
            return cls(**data)
        except TypeError as e:  # a non-string key
            raise ValueError(str(e)) from None

    def digest(self) -> str:
        """8 hex digits over every setting: names cached exports, so other settings never reuse one."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:8]

    def __post_init__(self) -> None:
        # Settings come from Python, argparse and operating-point JSON: check types too, so that a JSON
        # "dilation": 2.7 or a NaN σ is one ValueError here, not a torch error (or a silently empty mask) later.
        # The CLIs (``mask_config_from``, ``config_from_json``) turn ValueError into a one-line AmsrError.
        self._set_int("blur_size", 1, MAX_BLUR_SIZE)
        if self.blur_size % 2 == 0:
            raise ValueError(f"blur_size must be a positive odd number, got {self.blur_size}")
        self._set_float("blur_sigma", 0.0, MAX_BLUR_SIGMA, low_open=True)
        self._set_int("dilation", 0, MAX_DILATION)
        self._set_int("kmeans_iters", 1, MAX_KMEANS_ITERS)
        # hf = mean_c |x − G(x)| ≤ 1 on [0, 1] input, so flat_eps ≥ 1 would call every image flat.
        self._set_float("flat_eps", 0.0, 1.0, high_open=True)
        # Above 1 is meaningful (no window computed), so only finiteness bounds it from above.
        self._set_float("window_threshold", 0.0, float("inf"), high_open=True)
        if self.output_dilation is not None:
            self._set_int("output_dilation", 0, MAX_DILATION)
        if self.hf_floor is not None:
            self._set_float("hf_floor", 0.0, 1.0)  # hf ≤ 1, so a floor of 1 leaves the paper's mask

    def _set_int(self, name: str, low: int, high: int) -> None:
        """Check ``name`` is an integer (not bool, not float) in [low, high]; store it as a Python int."""
        v = getattr(self, name)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise ValueError(f"{name} must be an integer, got {v!r} ({type(v).__name__})")
        n = int(v)  # np.int64 → int: digest() serialises the fields as JSON (and numbers.Integral has no <=)
        if not low <= n <= high:
            raise ValueError(f"{name} must be between {low} and {high}, got {v}")
        object.__setattr__(self, name, n)

    def _set_float(self, name: str, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
        """Check ``name`` is a finite real number in [low, high] (open ends as flagged); store it as float."""
        v = getattr(self, name)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise ValueError(f"{name} must be a number, got {v!r} ({type(v).__name__})")
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"{name} must be finite, got {v}")
        if f < low or (low_open and f == low) or f > high or (high_open and f == high):
            lo = f"> {low:g}" if low_open else f"≥ {low:g}"
            hi = "" if math.isinf(high) else f" and {'<' if high_open else '≤'} {high:g}"
            raise ValueError(f"{name} must be {lo}{hi}, got {v}")
        if type(v) not in (int, float):
            object.__setattr__(self, name, f)  # np.float32 → float (JSON-serialisable); int/float kept as given


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """Normalised 2-D Gaussian, shape ``size×size``, float32."""
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    return (k / k.sum()).float()


def high_frequency_map(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``mean_c |x − G(x)|`` for ``x`` N×C×H×W; returns N×1×H×W."""
    c = x.shape[1]
    r = kernel.shape[-1] // 2
    weight = kernel.to(x.dtype)[None, None].expand(c, 1, -1, -1)
    blurred = F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), weight, groups=c)
    return (x - blurred).abs().mean(dim=1, keepdim=True)


def kmeans2_threshold(values: torch.Tensor, iters: int) -> torch.Tensor:
    """Per-row 1-D 2-means by Lloyd iterations from (min, max); returns the final midpoint, shape N×1.

    ``values`` is N×P. A row whose two centroids coincide keeps them equal (no division by zero).
    """
    lo = values.amin(dim=1, keepdim=True)
    hi = values.amax(dim=1, keepdim=True)
    for _ in range(iters):
        thr = (lo + hi) * 0.5
        upper = (values > thr).to(values.dtype)
        n_up = upper.sum(dim=1, keepdim=True)
        n_low = values.shape[1] - n_up
        s_up = (values * upper).sum(dim=1, keepdim=True)
        s_all = values.sum(dim=1, keepdim=True)
        # An empty cluster keeps its old centroid (as scikit-learn's Lloyd does for k=2 in 1-D).
        hi = torch.where(n_up > 0, s_up / n_up.clamp(min=1), hi)
        lo = torch.where(n_low > 0, (s_all - s_up) / n_low.clamp(min=1), lo)
    return (lo + hi) * 0.5


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation by a (2·radius+1)² square: stride-1 max-pool, same size."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask, kernel_size=2 * radius + 1, stride=1, padding=radius)


# The Triton 2-means streams an image's values with one program (one SM), 50 times: on an H200 it took the
# whole mask from 1.8 to 0.34 ms per Set14 image (~15–40 k LR pixels) but from 2.4 to 3.6 ms on a 481×321
# image (154 k), where the CUDA-graph replay of the torch ops is faster (results/bench/gpu/README.md). Above
# this many pixels per image the torch ops run (crossover estimated from those two sizes).
TRITON_KMEANS_MAX_VALUES = 65536


def require_finite(x: torch.Tensor) -> None:
    """Refuse NaN/Inf input: one such LR pixel makes the 2-means' min/max NaN, every comparison false and
    so the WHOLE image's mask 0 (nothing computed: a silent quality loss everywhere), not only near it.

    Refused at the eager API boundary (``compute_mask``, ``AcceleratedSR.forward``) rather than repaired in
    the mask, whose ops are the traced ONNX graph: repairing would add ops to it, and a data-dependent raise
    cannot be traced. The ONNX runtime's image path already refuses non-finite float images.

    Raises:
        InputImageError: ``x`` holds a NaN or ±Inf (the message counts them).
    """
    # The sum is NaN/Inf iff some value is (or huge finite values overflow it: then counted exactly below):
    # 33 µs on a 480×320 RGB image on a 2-core CPU, against 2–10 ms for isfinite(x).all(). Half precision
    # sums in float32 (an fp16 sum overflows past 65504, i.e. any image over ~256×256 px).
    total = x.sum(dtype=torch.float32) if x.is_floating_point() and x.element_size() < 4 else x.sum()
    if bool(total.isfinite()):
        return
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise InputImageError(f"input has {bad} NaN/Inf value(s) of {x.numel()}: the mask needs finite pixels "
                              "(replace them, e.g. torch.nan_to_num(x))")


class MaskGenerator(nn.Module):
    """LR image (N×C×H×W, [0, 1]) → binary float mask N×1×H×W (1 = compute). Exportable to ONNX.

    The input must be finite; this module does not check it (it is the traced mask stage): callers at the
    API boundary do (``require_finite``).
    """

    kernel: torch.Tensor

    def __init__(self, config: MaskConfig | None = None, cuda_graphs: bool = True,
                 triton_kmeans: bool = True) -> None:
        super().__init__()
        self.config = config or MaskConfig()
        self.register_buffer("kernel", gaussian_kernel(self.config.blur_size, self.config.blur_sigma),
                             persistent=False)
        # On CUDA the mask's small kernels are replayed from one graph per input shape (same values; see
        # amsr.masking.cuda_graphs) and the 2-means runs as one Triton kernel when Triton is installed
        # (amsr.masking.kmeans_triton); either can be switched off. CPU and ONNX export always run the torch ops.
        self.graphed = CudaGraphed(self.eager) if cuda_graphs else None
        self.graphed_pairs: dict[int, CudaGraphed] = {}  # per output dilation (the blend's two masks)
        self.triton_kmeans = triton_kmeans

    def forward(self, x: torch.Tensor, output_dilation: int | None = None) -> Any:
        """The network mask; with ``output_dilation`` (the output blend) the pair (network mask, output mask),
        both from one 2-means (one module call, so an exported graph keeps both in the mask stage)."""
        if output_dilation is not None:
            if self.graphed is not None and can_replay(x):
                if output_dilation not in self.graphed_pairs:
                    self.graphed_pairs[output_dilation] = CudaGraphed(partial(self.eager_pair, output_dilation))
                return self.graphed_pairs[output_dilation](x)
            return self.eager_pair(output_dilation, x)
        if self.graphed is not None and can_replay(x):
            return self.graphed(x)
        return self.eager(x)

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        """The mask computed op by op (CPU, export, and the reference of the CUDA-graph replay)."""
        return dilate(self.base_mask(x), self.config.dilation)

    def eager_pair(self, output_dilation: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask dilated by ``config.dilation``, mask dilated by ``output_dilation``), op by op."""
        base = self.base_mask(x)
        return dilate(base, self.config.dilation), dilate(base, output_dilation)

    def base_mask(self, x: torch.Tensor) -> torch.Tensor:
        """The 2-means mask before dilation (N×1×H×W, 0/1)."""
        hf = high_frequency_map(x, self.kernel)
        flat = hf.flatten(1)
        thr = self._threshold(flat)
        if self.config.hf_floor is not None:
            thr = thr.clamp(max=self.config.hf_floor)
        is_flat = (flat.amax(dim=1, keepdim=True) - flat.amin(dim=1, keepdim=True)) <= self.config.flat_eps
        return ((flat > thr) | is_flat).to(x.dtype).view_as(hf)

    def _threshold(self, flat: torch.Tensor) -> torch.Tensor:
        if (self.triton_kmeans and flat.is_cuda and flat.dtype == torch.float32
                and flat.shape[1] <= TRITON_KMEANS_MAX_VALUES and not is_tracing()):
            from amsr.masking import kmeans_triton  # imported on a GPU only (importing Triton takes time)

            if kmeans_triton.available():
                return kmeans_triton.kmeans2_threshold_triton(flat, self.config.kmeans_iters)
        return kmeans2_threshold(flat, self.config.kmeans_iters)


def compute_mask(x: torch.Tensor, config: MaskConfig | None = None) -> torch.Tensor:
    """Convenience: the binary mask of ``x`` under ``config``.

    Raises:
        InputImageError: ``x`` holds NaN/Inf values (they would zero the whole mask: ``require_finite``).
    """
    require_finite(x)
    with torch.no_grad():
        return MaskGenerator(config).to(x.device)(x)


def kmeans2_mask_sklearn(hf: np.ndarray, config: MaskConfig | None = None, init: str = "minmax") -> np.ndarray:
    """Reference mask of one high-frequency map (H×W, before dilation) with scikit-learn's ``KMeans``.

    ``init="minmax"`` runs scikit-learn's Lloyd from the same start and for the same number of iterations
    as the torch implementation (the parity reference); ``init="k-means++"`` is scikit-learn's default
    (best of 10 seeded starts), used to measure how far the deterministic start is from it.
    Returns a bool H×W mask of the cluster with the larger centre (and of the values above ``hf_floor``); all
    True for a flat map (one cluster).
    """
    from sklearn.cluster import KMeans

    config = config or MaskConfig()
    # float64: scikit-learn's float32 Lloyd sums in chunks its thread count sets, and at 1 thread it settled on
    # another fixed point for Set14 x3 img_004 (6 pixels); in float64 it gives the torch mask on all 57
    # Set5/Set14 LR images at 1 and 2 threads.
    v = hf.reshape(-1, 1).astype(np.float64)
    if float(v.max() - v.min()) <= config.flat_eps:
        return np.ones(hf.shape, dtype=bool)
    if init == "minmax":
        km = KMeans(n_clusters=2, init=np.array([[v.min()], [v.max()]]), n_init=1, tol=0.0,
                    max_iter=config.kmeans_iters, algorithm="lloyd").fit(v)
    else:
        km = KMeans(n_clusters=2, init=init, n_init=10, random_state=0, tol=0.0, max_iter=1000).fit(v)
    high = int(np.argmax(km.cluster_centers_[:, 0]))
    keep = km.labels_ == high
    if config.hf_floor is not None:
        keep |= v[:, 0] > config.hf_floor
    return keep.reshape(hf.shape)


def estimate_noise_sigma(x: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian noise σ of ``x`` (N×C×H×W, [0, 1]) on the 0–255 scale, Immerkær's fast estimator
    (1996) on the channel mean: σ = √(π/2) / (6(H−2)(W−2)) · Σ|x ∗ L|, L = [[1,−2,1],[−2,4,−2],[1,−2,1]].
    Returns N×1×1×1. Edges inflate it a little (a few units on 8-bit textured images)."""
    g = x.mean(dim=1, keepdim=True) * 255.0
    lap = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], dtype=x.dtype)[None, None]
    r = F.conv2d(g, lap).abs()
    h, w = g.shape[-2:]
    return r.sum(dim=(1, 2, 3), keepdim=True) * (np.pi / 2) ** 0.5 / (6 * (h - 2) * (w - 2))


def noise_aware_base_mask(x: torch.Tensor, config: MaskConfig | None = None, sigma_noise_min: float = 4.0,
                          sigma_per_noise: float = 0.1) -> torch.Tensor:
    """Experimental (scripts/robustness.py): the 2-means mask before dilation, computed on a Gaussian-smoothed
    copy of ``x`` when the estimated noise σ (0–255) exceeds ``sigma_noise_min``; the pre-smoothing σ is
    ``sigma_per_noise · σ_noise`` LR px. Noise-free images get the plain mask (same as ``MaskGenerator``)."""
    config = config or MaskConfig()
    gen = MaskGenerator(config).to(x.device)
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        s = float(estimate_noise_sigma(xi))
        if s > sigma_noise_min:
            sp = sigma_per_noise * s
            size = 2 * int(np.ceil(2 * sp)) + 1
            xi = F.conv2d(F.pad(xi, [size // 2] * 4, mode="replicate"),
                          gaussian_kernel(size, sp)[None, None].expand(xi.shape[1], 1, -1, -1), groups=xi.shape[1])
        out.append(gen.base_mask(xi))
    return torch.cat(out)
