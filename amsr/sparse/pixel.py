"""The paper's masked 3×3 convolution (Sec. 3.2): unfold + 1×1 conv with the pretrained weights reshaped.

    y = W' · unfold₃ₓ₃(x) + b     where the mask is 1      (W' = W reshaped to out × (in/g·9))
    y = x                          where the mask is 0      (identity: needs in == out channels)

Two execution paths compute the same values:
- ``"sparse"`` (inference): gather the 3×3 neighbourhoods of the masked-in pixels only, one matmul,
  scatter the results into a copy of the input. Work is proportional to the number of masked-in pixels.
- ``"dense"`` (reference): unfold everywhere, 1×1 conv, then select; used to test the sparse path.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Literal, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from amsr.core.errors import UnsupportedModelError
from amsr.core.tracing import is_tracing

T = TypeVar("T")

ExecutionMode = Literal["sparse", "dense"]

_CHUNK = 16384  # pixels per gather of ``conv_at_pixels``


class MaskIndexCache:
    """Indices derived from one mask, computed once and shared by every layer that reads that mask: the one
    validity rule of amsr's three index users (``MaskContext`` pixels, ``sparse.tiles.TileIndices``,
    ``export.exportable.SparseIndices``).

    An entry holds while the same tensor object comes back unmodified (its version counter: an in-place edit
    of the mask invalidates it) with the same ``key``; under a tracer the version counter is not read (the
    exported graph computes the indices once per forward anyway).
    """

    def __init__(self) -> None:
        self._entry: tuple[torch.Tensor, int | None, Hashable, Any] | None = None

    def get(self, mask: torch.Tensor, key: Hashable, compute: Callable[[torch.Tensor], T]) -> T:
        version = None if is_tracing() else mask._version
        entry = self._entry
        if entry is None or entry[0] is not mask or entry[1] != version or entry[2] != key:
            entry = self._entry = (mask, version, key, compute(mask))
        return cast(T, entry[3])


class MaskContext:
    """The mask of the image being processed, shared by every masked layer of one model.

    The accelerated model sets it once per forward. Masked convs read it at the input's resolution only
    (``mask_for`` refuses another size: a conv on a downsampled branch or at HR resolution would get a
    resized mask that follows no pixel of its own, which cost a user's network 17–18 dB, issue #16); token
    layers read it at their own size (``mask_at``: a nearest-neighbour resize).
    """

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None
        self._indices = MaskIndexCache()

    def pixel_indices(self, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(n, i, j) of the masked-in pixels of ``mask`` (N×1×h×w), computed once per mask tensor: every
        layer at the mask's size shares one ``nonzero`` (on a GPU, one host synchronisation per forward)."""
        return self._indices.get(mask, "pixels", lambda m: (m[:, 0] > 0.5).nonzero(as_tuple=True))

    def mask_for(self, feature: torch.Tensor, name: str = "a masked conv") -> torch.Tensor:
        """The mask as N×1×h×w float (0/1) for a masked conv's input ``feature``, which must be at the mask's
        size (checked in eager mode; a traced graph has the sizes the eager run checked).

        Raises:
            UnsupportedModelError: ``feature`` is at another resolution than the mask (the input's).
        """
        size = (feature.shape[-2], feature.shape[-1])
        if self.mask is not None and not is_tracing() and tuple(self.mask.shape[-2:]) != size:
            h, w = self.mask.shape[-2:]
            raise UnsupportedModelError(
                f"{name} runs at {size[0]}×{size[1]} but the mask is {h}×{w} (the input's resolution): only convs "
                "at the input's resolution can be masked; leave it out of the conv patterns")
        return self.mask_at(size)

    def mask_at(self, size: tuple[int, int]) -> torch.Tensor:
        """The mask as N×1×h×w float (0/1) for an ``h×w`` feature map (token layers have no NCHW tensor)."""
        if self.mask is None:
            raise RuntimeError("masked layer called outside an accelerated model's forward (no mask set)")
        m = self.mask
        if tuple(m.shape[-2:]) != tuple(size):
            m = F.interpolate(m, size=size, mode="nearest")
        return m


def check_maskable_conv(conv: nn.Module, name: str) -> nn.Conv2d:
    """Return ``conv`` if it is a 3×3, stride-1, padding-1, in==out ``Conv2d``; raise otherwise."""
    if not isinstance(conv, nn.Conv2d):
        raise UnsupportedModelError(f"{name}: expected nn.Conv2d, found {type(conv).__name__}")
    problems = []
    if conv.kernel_size != (3, 3):
        problems.append(f"kernel {conv.kernel_size}")
    if conv.stride != (1, 1) or conv.dilation != (1, 1):
        problems.append(f"stride {conv.stride}, dilation {conv.dilation}")
    if conv.padding != (1, 1) or conv.padding_mode != "zeros":
        problems.append(f"padding {conv.padding} ({conv.padding_mode})")
    if conv.in_channels != conv.out_channels:
        problems.append(f"{conv.in_channels}→{conv.out_channels} channels (identity skip needs in == out)")
    if problems:
        raise UnsupportedModelError(f"{name} cannot be masked: {'; '.join(problems)}")
    return conv


def conv_at_pixels(conv: nn.Conv2d, x: torch.Tensor, n_idx: torch.Tensor, i_idx: torch.Tensor,
                   j_idx: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` at the pixels (n, i, j) only, as P×C_out rows: odd square kernel k, stride 1, 'same' zero
    padding, any groups; the one gather + matmul of the masked and the tail convs. In chunks of ``_CHUNK``
    pixels, which bounds the k²-tap patches (16384 px × 9 taps × 64 ch: 38 MB) on any image.

    Flat NHWC rows: one ``index_select`` of the k²·P tap rows of the zero-padded map (tap-major, so the
    weights are permuted to match instead of the patches) and one matmul (einsum per group). About 2.5× faster
    than k² advanced-index gathers on the NCHW tensor (64 ch, 128², 60 % density, 2 threads); same values.
    """
    n, c, h, w = x.shape
    k = conv.kernel_size[0]
    r = k // 2
    g, o = conv.groups, conv.out_channels
    wp = w + 2 * r
    xp = F.pad(x, (r, r, r, r)).permute(0, 2, 3, 1).reshape(-1, c)  # rows of the padded NHWC map
    base = (n_idx * (h + 2 * r) + i_idx) * wp + j_idx
    offs = torch.tensor([dy * wp + dx for dy in range(k) for dx in range(k)], device=x.device)
    wt = conv.weight.view(g, o // g, c // g, k * k)
    w_rows = wt[0].permute(2, 1, 0).reshape(k * k * c, o) if g == 1 else None
    chunks = []
    for s in range(0, int(n_idx.numel()), _CHUNK):
        b = base[s:s + _CHUNK]
        patches = xp.index_select(0, (b[:, None] + offs).reshape(-1)).view(b.shape[0], k * k, g, c // g)
        if w_rows is not None:
            chunks.append(patches.view(b.shape[0], k * k * c) @ w_rows)
        else:
            chunks.append(torch.einsum("ptgk,gokt->pgo", patches, wt).reshape(-1, o))
    y = chunks[0] if len(chunks) == 1 else torch.cat(chunks) if chunks else x.new_zeros(0, o)
    return y if conv.bias is None else y + conv.bias


class MaskedConv2d(nn.Module):
    """A pretrained 3×3 conv made sparse: conv where the mask is 1, input passed through where it is 0.

    Holds the original ``nn.Conv2d`` as ``conv`` (same parameters, no copy). Input/output: N×C×H×W float.
    """

    def __init__(self, conv: nn.Module, context: MaskContext, mode: ExecutionMode = "sparse",
                 name: str = "conv") -> None:
        super().__init__()
        self.conv = check_maskable_conv(conv, name)  # raises unless it is a maskable nn.Conv2d
        self.context = context
        self.mode: ExecutionMode = mode
        self.name = name
        self.last_active: int = 0  # masked-in pixels of the last call (for effective-MAC counting)
        self.last_total: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.context.mask_for(x, self.name)
        self.last_total = x.shape[0] * x.shape[2] * x.shape[3]
        if self.mode == "dense":
            self.last_active = self.last_total
            return self.forward_dense(x, mask)
        return self.forward_sparse(x, mask)

    def forward_dense(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Reference path: the conv at every pixel (unfold + 1×1 with the same weights is the same sum, in
        another order), then the input kept where the mask is 0. Also the training path (``amsr.tools.finetune``):
        a CARN-M x4 step (batch 8 of 48² LR patches, 2 CPU cores) takes ~1.5 s so, ~4.2 s with unfold + einsum."""
        return torch.where(mask > 0.5, self.conv(x), x)

    def forward_sparse(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Inference path: the conv at the masked-in pixels (``conv_at_pixels``), then one ``index_copy`` of
        the P result rows into the NHWC copy of x (faster than ``index_put`` on the NCHW tensor)."""
        n_idx, i_idx, j_idx = self.context.pixel_indices(mask)
        p = int(n_idx.numel())
        self.last_active = p
        if p == 0:
            return x
        n, c, h, w = x.shape
        y = conv_at_pixels(self.conv, x, n_idx, i_idx, j_idx)
        out = x.permute(0, 2, 3, 1).reshape(-1, c).index_copy(0, (n_idx * h + i_idx) * w + j_idx, y)
        return out.view(n, h, w, c).permute(0, 3, 1, 2)

    def effective_macs(self) -> int:
        """Multiply-accumulates of the last call: only masked-in pixels are computed."""
        per_pixel = self.conv.out_channels * (self.conv.in_channels // self.conv.groups) * 9
        return self.last_active * per_pixel

    def extra_repr(self) -> str:
        return f"mode={self.mode}"
