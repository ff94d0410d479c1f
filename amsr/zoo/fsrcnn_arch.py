"""FSRCNN(d, s, m) (Dong et al., "Accelerating the Super-Resolution Convolutional Neural Network", ECCV 2016)
as trained on the Y channel by github.com/yjn870/FSRCNN-pytorch (``models.py``), plus the RGB wrapper amsr needs.

Attribute names follow that repository: ``first_part`` (5×5 conv, PReLU), ``mid_part`` (1×1 shrink, ``m``× 3×3
map, 1×1 expand, each followed by a PReLU), ``last_part`` (9×9 transposed conv, stride = scale).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ITU-R BT.601 studio swing on [0, 1] values (MATLAB rgb2ycbcr / amsr.io.metrics.rgb_to_y divided by 255).
_RGB_TO_YCBCR = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
_YCBCR_OFFSET = (16.0, 128.0, 128.0)


class FSRCNN(nn.Module):
    """FSRCNN on one channel: ``N×C×H×W`` → ``N×C×sH×sW`` (C = 1 for the Y-channel checkpoints)."""

    def __init__(self, scale: int, channels: int = 1, d: int = 56, s: int = 12, m: int = 4) -> None:
        super().__init__()
        self.first_part = nn.Sequential(nn.Conv2d(channels, d, 5, padding=2), nn.PReLU(d))
        mid: list[nn.Module] = [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            mid += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        mid += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*mid)
        # padding 4 and output_padding s−1 make the output exactly s·H × s·W.
        self.last_part = nn.ConvTranspose2d(d, channels, 9, stride=scale, padding=4, output_padding=scale - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_part(self.mid_part(self.first_part(x)))


class LumaSR(nn.Module):
    """Runs a Y-channel network on RGB: RGB → YCbCr (BT.601), network on Y, bicubic on Cb/Cr, back to RGB.

    ``forward`` maps float RGB in [0, 1], ``N×3×H×W``, to ``N×3×sH×sW`` (not clamped). Y is fed to the network
    in [16/255, 235/255], the range it was trained on.
    """

    rgb2ycbcr_w: torch.Tensor
    rgb2ycbcr_b: torch.Tensor
    ycbcr2rgb_w: torch.Tensor
    ycbcr2rgb_b: torch.Tensor

    def __init__(self, net: nn.Module, scale: int) -> None:
        super().__init__()
        self.net = net
        self.scale = scale
        fwd = torch.tensor(_RGB_TO_YCBCR, dtype=torch.float64) / 255.0
        off = torch.tensor(_YCBCR_OFFSET, dtype=torch.float64) / 255.0
        inv = torch.linalg.inv(fwd)
        # Both colour transforms as 1×1 convs (exports to plain ONNX Conv). Not persistent: derived constants,
        # so the state dict stays the network's own.
        self.register_buffer("rgb2ycbcr_w", fwd.float().view(3, 3, 1, 1), persistent=False)
        self.register_buffer("rgb2ycbcr_b", off.float(), persistent=False)
        self.register_buffer("ycbcr2rgb_w", inv.float().view(3, 3, 1, 1), persistent=False)
        self.register_buffer("ycbcr2rgb_b", (-inv @ off).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ycbcr = F.conv2d(x, self.rgb2ycbcr_w, self.rgb2ycbcr_b)
        y = self.net(ycbcr[:, :1])
        cbcr = F.interpolate(ycbcr[:, 1:], scale_factor=self.scale, mode="bicubic", align_corners=False)
        return F.conv2d(torch.cat([y, cbcr], dim=1), self.ycbcr2rgb_w, self.ycbcr2rgb_b)
