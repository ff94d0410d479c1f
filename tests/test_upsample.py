"""amsr.core.upsample: the blend's integer-factor upsampling equals torch's interpolate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from amsr.surgery import blend_output
from amsr.core.upsample import bicubic_upscale, nearest_upscale


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (7, 5), (33, 20)])
def test_bicubic_and_nearest_match_interpolate(scale: int, size: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(scale * 100 + size[0])
    x = torch.rand(2, 3, *size, generator=g)
    ref = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    assert (bicubic_upscale(x, scale) - ref).abs().max().item() <= 3e-6
    m = (torch.rand(2, 1, *size, generator=g) > 0.5).float()
    assert torch.equal(nearest_upscale(m, scale), F.interpolate(m, scale_factor=scale, mode="nearest"))


def test_blend_with_scale_equals_the_interpolate_blend() -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.rand(1, 3, 9, 11, generator=g)
    y = torch.rand(1, 3, 36, 44, generator=g)
    m = (torch.rand(1, 1, 9, 11, generator=g) > 0.5).float()
    assert (blend_output(x, y, m, scale=4) - blend_output(x, y, m)).abs().max().item() <= 3e-6


def test_eager_calls_after_an_export_trace_stay_real() -> None:
    """Nothing cached while an exporter traces (fake tensors) may leak into later eager calls."""
    from torch import nn

    from amsr.core.upsample import _phase_taps

    class Up(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return bicubic_upscale(x, 3)

    _phase_taps.cache_clear()
    torch.export.export(Up(), (torch.rand(1, 3, 4, 4),))
    x = torch.rand(1, 3, 2, 2)
    ref = F.interpolate(x, scale_factor=3, mode="bicubic", align_corners=False)
    assert float((bicubic_upscale(x, 3) - ref).abs().max()) <= 3e-6
