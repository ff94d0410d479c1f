"""PSNR and SSIM the standard SR way: Y channel (BT.601, 16–235), ``scale`` pixels shaved, uint8 inputs.

These match BasicSR's ``calculate_psnr/ssim(test_y_channel=True)`` and the MATLAB scripts most papers use.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """uint8 ``H×W×3`` RGB → float64 Y in [16, 235] (ITU-R BT.601, as MATLAB ``rgb2ycbcr``)."""
    x = img.astype(np.float64) / 255.0
    return 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]


def _shave(y: np.ndarray, border: int) -> np.ndarray:
    return y[border:-border, border:-border] if border > 0 else y


def psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """Y-channel PSNR in dB between two uint8 RGB images of equal size, ``shave`` pixels cut at each border."""
    if sr.shape != hr.shape:
        raise ValueError(f"size mismatch: SR {sr.shape} vs HR {hr.shape}")
    a, b = _shave(rgb_to_y(sr), shave), _shave(rgb_to_y(hr), shave)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g /= g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """Y-channel SSIM (Wang et al. 2004: 11×11 Gaussian σ=1.5, 'valid' window), ``shave`` pixels cut."""
    if sr.shape != hr.shape:
        raise ValueError(f"size mismatch: SR {sr.shape} vs HR {hr.shape}")
    a = torch.from_numpy(_shave(rgb_to_y(sr), shave))[None, None]
    b = torch.from_numpy(_shave(rgb_to_y(hr), shave))[None, None]
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"image too small for SSIM after shaving: {tuple(a.shape[-2:])}")
    w = _gaussian_window()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    var_a = F.conv2d(a * a, w) - mu_a**2
    var_b = F.conv2d(b * b, w) - mu_b**2
    cov = F.conv2d(a * b, w) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())
