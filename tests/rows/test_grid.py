"""Index tables of ``amsr.rows.grid``: the per-block exit taps equal the per-pixel ones they replace."""

from __future__ import annotations

import pytest
import torch

from amsr.rows.grid import block_pixels_flat, block_taps, grid_of, pixels_of, taps
from amsr.core.upsample import nearest_upscale


@pytest.mark.parametrize(("block", "factor"), [(4, 2), (2, 2), (3, 3), (2, 1)])
def test_block_taps_equal_taps_of_the_blocks_pixels(block: int, factor: int) -> None:
    torch.manual_seed(0)
    n, h, w = 2, 7, 9
    coarse_mask = (torch.rand(n, 1, h, w) > 0.6).float()
    coarse_mask[0, 0, 0, 0] = coarse_mask[1, 0, h - 1, w - 1] = 1  # image corners: padding taps
    # The source grid is ``block // factor``× finer than the coarse one; a random subset of it holds rows.
    m = block // factor
    source_mask = (torch.rand(n, 1, h * m, w * m) > 0.3).float()
    source = grid_of(pixels_of(source_mask), n, h * m, w * m)

    coarse = pixels_of(coarse_mask)
    fine_pixels = pixels_of(nearest_upscale(coarse_mask, block))  # the same pixels, row-major
    per_pixel = taps(fine_pixels, source, factor)

    flat = block_pixels_flat(coarse, block, h, w)
    hb, wb = h * block, w * block
    as_pixels = torch.stack([flat // (hb * wb), flat // wb % hb, flat % wb], dim=1)
    order = torch.argsort((as_pixels[:, 0] * hb + as_pixels[:, 1]) * wb + as_pixels[:, 2])
    assert torch.equal(as_pixels[order], fine_pixels)
    assert torch.equal(block_taps(coarse, source, block, factor).reshape(-1, 9)[order], per_pixel)


def test_block_taps_refuse_a_block_the_factor_does_not_divide() -> None:
    g = grid_of(torch.zeros(0, 3, dtype=torch.int64), 1, 4, 4)
    with pytest.raises(ValueError, match="multiple"):
        block_taps(torch.zeros(0, 3, dtype=torch.int64), g, 3, 2)
