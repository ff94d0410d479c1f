"""The Triton 2-means of the mask (amsr.masking.kmeans_triton) against the torch version, run on the CPU by Triton's
interpreter (TRITON_INTERPRET=1, read when the kernel is decorated: a fresh interpreter per check)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_CHECK = """
import sys
import torch
from amsr.io.images import read_rgb8, to_tensor
from amsr.masking.mask import gaussian_kernel, high_frequency_map, kmeans2_threshold
from amsr.masking.kmeans_triton import kmeans2_threshold_triton

g = torch.Generator().manual_seed(0)
rows = torch.rand(4, 3001, generator=g) ** 3  # P not a multiple of the block
rows[1] = 0.25                                # flat row: both centroids stay equal
rows[2, :] = 0.0
rows[2, 7] = 1.0                              # one outlier: the upper cluster has one value
worst = (kmeans2_threshold(rows, 50) - kmeans2_threshold_triton(rows, 50)).abs().max().item()
flips = 0
for path in sys.argv[1:]:
    hf = high_frequency_map(to_tensor(read_rgb8(path)), gaussian_kernel(5, 1.5)).flatten(1)
    a, b = kmeans2_threshold(hf, 50), kmeans2_threshold_triton(hf, 50)
    worst = max(worst, (a - b).abs().max().item())
    flips += int(((hf > a) != (hf > b)).sum())
print(worst, flips)
"""


def test_triton_kmeans_matches_the_torch_iteration(data_dir: Path) -> None:
    pytest.importorskip("triton", reason="the Triton 2-means test needs triton (pip install triton)")
    images = sorted((data_dir / "Set5" / "x4" / "LR").glob("*.png"))[:3]
    if not images:
        pytest.skip(f"no Set5 x4 LR images under {data_dir}")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHECK, *map(str, images)], env=env, capture_output=True,
                          text=True, check=False, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    worst, flips = proc.stdout.split()
    assert float(worst) < 1e-6 and int(flips) == 0


def test_bad_shapes_are_refused() -> None:
    pytest.importorskip("triton", reason="needs triton")
    import torch

    from amsr.masking.kmeans_triton import kmeans2_threshold_triton

    with pytest.raises(ValueError, match="N×P"):
        kmeans2_threshold_triton(torch.zeros(3), 5)
