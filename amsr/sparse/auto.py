"""``auto``: per image, the accelerated graph or the dense network, from the density of its whole-image mask.

One rule for every place that chooses (``amsr-bench --strategy auto``, the ``Upscaler``, ``amsr-upscale``,
the demo), keyed by how the accelerated graph executes (its ``amsr.execution`` metadata):

- ``rows`` (CARN / CARN-M with an output blend, ``amsr.rows``): runs where the mask density is at most
  0.40. Set from the block-diagonal row convs, whose 3×3 conv cost ~3.6× the dense conv per pixel: CARN-M x4
  (then d_net 4 / d_out 3) measured row/dense ≈ 2.3·density per Photos2K image, 0.94 at density 0.39, 1.02 at
  0.49. The row graph now (group-major convs, block exit taps, Gemm-chain fuses) costs 1.5–1.8·density on the
  eight Photos2K rows images (density 0.05–0.24), so its break-even is near 0.55 and 0.40 errs towards dense;
  no Photos2K image lies between 0.25 and 0.46 to place it better.
- ``windows`` (transformers with window selection only): runs where the density is at most 0.73. IMDTN x4 at
  its default (d_net 10 / d_out 6), onnxruntime CPU, 2 threads: the window graph's time ratio tracks its
  effective-GMACs ratio within −0.07…+0.09 on photos (0.39 at density 0.07 … 0.66 at 0.55) and paid on Set14
  img_011 (density 0.68: 0.86× dense at GMACs 0.82), but not where a small image has fixed costs to amortise
  (Set14 img_004, 90 ms dense: 1.45× dense at GMACs 0.90). Every image measured at density ≤ 0.68 had GMACs
  ≤ 0.82, every one at ≥ 0.78 had GMACs ≥ 0.85 (31 images: results/bench/photos/imdtn_*_auto.json); 0.73
  splits the two.
- ``stages`` (pixel or tile stages: GatherND/ScatterND per masked conv): never. They were slower than dense
  on every CNN measured (onnxruntime CPU: CARN-M, IMDN, PAN 1.0–2.95×, PAN's tiles 1.35–1.69× even at density
  0.03; PyTorch CUDA 1.7–15.6×), so ``auto`` runs the dense network without computing a mask at all.

The dense network is never the worse output: the accelerated one approximates it.
"""

from __future__ import annotations

# Mask density above which ``auto`` runs the dense network, per ``amsr.execution`` (module docstring);
# negative: always dense, no mask computed.
DENSE_ABOVE_DENSITY: dict[str, float] = {"rows": 0.40, "windows": 0.73, "stages": -1.0}


def dense_above(execution: str) -> float:
    """The density above which ``auto`` runs dense for a graph of this execution (unknown ones: always dense)."""
    return DENSE_ABOVE_DENSITY.get(execution, -1.0)


def needs_mask(execution: str) -> bool:
    """Whether ``auto`` must compute the mask to choose (``False``: it always runs the dense network)."""
    return dense_above(execution) >= 0.0


def runs_dense(execution: str, density: float) -> bool:
    """Whether ``auto`` runs the dense network for an image whose whole-image mask has this density."""
    return density > dense_above(execution)
