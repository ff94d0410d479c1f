"""Model surgery: apply the method to a network by replacing the layers its rules name.

``accelerate(net, rules, config)`` returns an ``AcceleratedSR``: the same network with its body 3×3 convs
swapped for ``MaskedConv2d`` and its Swin blocks for ``MaskedSwinBlock`` (both sharing the pretrained
parameters), and a ``MaskGenerator`` in front that sets the mask for every forward. Works on zoo models
(rules from their descriptor) and on a user's own ``nn.Module`` (rules given as patterns or ``SparseRules``,
or found with ``find_identity_convs``).
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from amsr.core.errors import InputImageError, UnsupportedModelError
from amsr.masking.mask import MaskConfig, MaskGenerator, dilate, require_finite
from amsr.sparse.hit import MaskedHiTBlock
from amsr.sparse.pixel import (
    ExecutionMode,
    MaskContext,
    MaskedConv2d,
    check_maskable_conv,
)
from amsr.sparse.tail import TailContext, TailMaskedConv, tail_layers
from amsr.sparse.window import MaskedSwinBlock, MaskedWindowLayer
from amsr.core.window_adapter import WindowAdapter
from amsr.sparse.window_batch import MaskedWindowBatch
from amsr.core.tracing import is_tracing
from amsr.core.upsample import bicubic_upscale, nearest_upscale
from amsr.zoo.descriptor import SparseRules
from amsr.zoo.hit_srf_arch import HierarchicalTransformerBlock
from amsr.zoo.ngswin_arch import NSTB
from amsr.zoo.swinir_arch import SwinTransformerBlock


def match_modules(net: nn.Module, patterns: Iterable[str],
                  of_type: type[nn.Module] | tuple[type[nn.Module], ...] | None = None) -> list[str]:
    """Qualified names of ``net``'s modules matching any ``fnmatch`` pattern; each pattern must match.

    ``fnmatch``'s ``*`` also matches dots, so ``layers.*.blocks.*`` names the blocks' children too; ``of_type``
    keeps only modules of that type (e.g. the Swin blocks themselves).
    """
    if isinstance(patterns, str):  # one pattern, not its characters
        patterns = (patterns,)
    names = [n for n, m in net.named_modules() if n and (of_type is None or isinstance(m, of_type))]
    selected: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            kinds = of_type if isinstance(of_type, tuple) else (of_type,) if of_type else ()
            what = " or ".join(k.__name__ for k in kinds) or "module"
            raise UnsupportedModelError(f"rule pattern {pattern!r} matches no {what} of {type(net).__name__}")
        selected += [h for h in hits if h not in selected]
    return selected


def find_identity_convs(net: nn.Module) -> list[str]:
    """Every 3×3 stride-1 conv with in == out channels: candidate body convs of an unknown network.

    A starting point for a user's own model; review it (an upsampler conv with equal channels would match).
    """
    out = []
    for name, m in net.named_modules():
        try:
            check_maskable_conv(m, name)
        except UnsupportedModelError:
            continue
        out.append(name)
    return out


# Window blocks the method knows, and the masked layer that wraps each (same constructor signature).
WINDOW_LAYERS: dict[type[nn.Module], type[MaskedSwinBlock | MaskedHiTBlock]] = {
    SwinTransformerBlock: MaskedSwinBlock,  # SwinIR, IMDTN
    NSTB: MaskedSwinBlock,  # NGswin
    HierarchicalTransformerBlock: MaskedHiTBlock,  # HiT-SRF
}


def parameter_dtype(net: nn.Module) -> torch.dtype:
    """The dtype of ``net``'s first floating-point parameter (float32 for a network without any)."""
    return next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float32)


def check_sr_input(x: object, dtype: torch.dtype, channels: int | None = None, finite: bool = False) -> None:
    """Refuse an input the network would fail on with a raw torch error, naming expected vs got.

    Eager only (callers skip it under ``is_tracing()``, so exported graphs do not change): shape and dtype
    are host-side attribute reads; ``finite`` adds one reduction over the LR input (and on a GPU one host
    synchronisation, next to the one ``MaskedConv2d`` already makes for its indices). Another floating
    dtype than the model's is refused rather than cast: a float64 input silently coming back float32 is the
    kind of surprise the reference path must not have; the message says how to convert.

    Raises:
        InputImageError: not a tensor, not N×C×H×W, wrong channel count, dtype, empty, or (``finite``)
            NaN/Inf values.
    """
    c = "C" if channels is None else str(channels)
    if not isinstance(x, torch.Tensor):
        raise InputImageError(f"expected a torch.Tensor N×{c}×H×W, got {type(x).__name__}")
    if x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        hint = " (add the batch dimension: x[None])" if x.dim() == 3 else ""
        raise InputImageError(f"expected an N×{c}×H×W tensor, got shape {tuple(x.shape)}{hint}")
    if x.dtype != dtype:
        how = f"x.to({dtype})" + (" / 255" if x.dtype == torch.uint8 else "")
        raise InputImageError(f"expected {str(dtype).removeprefix('torch.')} pixels in [0, 1] (the model's "
                              f"dtype), got {str(x.dtype).removeprefix('torch.')}: pass {how}")
    if x.numel() == 0:
        raise InputImageError(f"expected a non-empty tensor, got shape {tuple(x.shape)}")
    if finite and not (x.is_cuda and torch.cuda.is_current_stream_capturing()):  # no sync inside a capture
        require_finite(x)


def _replace(net: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, new)


class AcceleratedSR(nn.Module):
    """A network with AMSR applied: ``forward(x)`` computes the mask of ``x``, then runs the sparse net.

    Input/output as the wrapped network (N×3×H×W float RGB in [0, 1] → N×3×sH×sW). ``last_mask`` keeps the
    mask of the last call (N×1×H×W, 0/1) so that callers can report its density.

    With ``config.output_dilation`` set (output blend, FINDINGS §2), the network runs with the mask dilated
    by ``config.dilation`` and the result is ``where(m_out↑, net(x), bicubic(x))``: ``m_out`` is the
    2-means mask dilated by ``output_dilation``, nearest-upsampled to SR size; ``bicubic`` is
    ``F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)`` (torch's bicubic, a = −0.75,
    not MATLAB's imresize). ``last_output_mask`` keeps ``m_out`` (LR size; ``None`` without a blend).
    Tail convs wrapped as ``TailMaskedConv`` (``tail`` of ``accelerate``) then run only where they can reach
    a kept SR pixel; an unwrapped tail runs densely and is counted in full by ``amsr.core.cost``.

    ``forward`` refuses (``InputImageError``, eager only) a non-4-D input, another dtype than the network's
    parameters, and NaN/Inf values, which would otherwise zero the whole image's mask (``require_finite``).
    ``check_inputs = False`` leaves that to an outer wrapper that already checked (``LoadedModel.accelerated``).
    """

    check_inputs: bool = True  # class default: also for instances pickled before the attribute existed

    def __init__(self, net: nn.Module, config: MaskConfig, context: MaskContext,
                 tail_context: TailContext | None = None) -> None:
        super().__init__()
        self.net = net
        self.mask_generator = MaskGenerator(config)
        self.context = context
        self.tail_context = tail_context
        self.last_mask: torch.Tensor | None = None
        self.last_output_mask: torch.Tensor | None = None
        self.blend_scale: int | None = None  # set for export: the blend's integer-factor upsampling ops

    @property
    def config(self) -> MaskConfig:
        return self.mask_generator.config

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                output_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` (N×1×H×W, 0/1) replaces the generated network mask, ``output_mask`` the blend's mask
        (only used with ``config.output_dilation`` set): for tests and for callers with their own."""
        if self.check_inputs and not is_tracing():
            check_sr_input(x, parameter_dtype(self.net), finite=True)
        d_out = self.config.output_dilation
        if d_out is None:
            self.last_output_mask = None
            if mask is None:
                mask = self.mask_generator(x)
        elif mask is None and output_mask is None:
            mask, output_mask = self.mask_generator(x, output_dilation=d_out)
        elif mask is None or output_mask is None:
            base = self.mask_generator.base_mask(x)
            mask = dilate(base, self.config.dilation) if mask is None else mask
            output_mask = dilate(base, d_out) if output_mask is None else output_mask
        self.last_mask = mask
        self.context.mask = mask
        if self.tail_context is not None:
            self.tail_context.output_mask = output_mask  # None without a blend: the tail runs densely
        try:
            y = self.net(x)
        finally:
            self.context.mask = None
            if self.tail_context is not None:
                self.tail_context.output_mask = None
        if d_out is None:
            return y
        assert output_mask is not None
        self.last_output_mask = output_mask
        return blend_output(x, y, output_mask, self.blend_scale)

    def set_mode(self, mode: ExecutionMode) -> None:
        """Switch every masked layer between the sparse inference path and the dense reference path."""
        for m in self.modules():
            if isinstance(m, (MaskedConv2d, MaskedWindowLayer)):
                m.mode = mode

    def window_fraction(self) -> float | None:
        """Selected / all windows over every masked Swin block in the last forward; ``None`` without any."""
        blocks = [m for m in self.modules() if isinstance(m, MaskedWindowLayer)]
        total = sum(m.last_total for m in blocks)
        return sum(m.last_selected for m in blocks) / total if total else None


def blend_output(x: torch.Tensor, y: torch.Tensor, output_mask: torch.Tensor,
                 scale: int | None = None) -> torch.Tensor:
    """``where(output_mask↑, y, bicubic(x))``: the network's SR ``y`` where the (nearest-upsampled) LR mask
    is 1, torch bicubic (``align_corners=False``) of the LR input ``x`` elsewhere. With ``scale`` (y is
    exactly ``scale``× x) the upsampling runs as conv + pixel shuffle and a broadcast (``amsr.core.upsample``:
    same values, much faster than ONNX Resize in onnxruntime)."""
    if scale is not None:
        return torch.where(nearest_upscale(output_mask, scale) > 0.5, y, bicubic_upscale(x, scale))
    size = (y.shape[-2], y.shape[-1])
    up = F.interpolate(output_mask, size=size, mode="nearest")
    bic = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    return torch.where(up > 0.5, y, bic)


def accelerate(net: nn.Module, rules: SparseRules | Iterable[str], config: MaskConfig | None = None,
               mode: ExecutionMode = "sparse", inplace: bool = False,
               tail: Iterable[tuple[str, int]] | None = None) -> AcceleratedSR:
    """Apply AMSR to ``net``.

    Args:
        net: the network (forward: N×3×H×W RGB [0, 1] → SR). Copied unless ``inplace``.
        rules: the architecture's ``SparseRules`` (``convs``: body 3×3 convs; ``windows``: Swin blocks), or
            ``fnmatch`` patterns naming the body 3×3 convs (a list, or one pattern as a string).
        config: mask settings (blur, dilation, window threshold, …); defaults to ``MaskConfig()``.
        mode: ``"sparse"`` computes only masked-in pixels / selected windows; ``"dense"`` is the reference path.
        tail: (conv name, resolution factor vs LR) of the tail convs in execution order (the descriptor's
            ``SparseRules.tail``); used only with ``config.output_dilation`` set: they become ``TailMaskedConv``
            computed where the blend keeps the network output. ``None``: the tail runs densely.

    Raises:
        UnsupportedModelError: a pattern matches nothing, or names a layer that cannot be masked.
    """
    adapters: tuple[tuple[str, WindowAdapter], ...] = ()
    if isinstance(rules, SparseRules):
        conv_patterns, window_patterns, adapters = rules.convs, rules.windows, rules.window_adapters
    elif isinstance(rules, str):  # one pattern: iterating it would give one pattern per character
        conv_patterns, window_patterns = (rules,), ()
    else:
        conv_patterns, window_patterns = tuple(rules), ()
    if not conv_patterns and not window_patterns and not adapters:
        raise UnsupportedModelError(f"no sparse rules for {type(net).__name__}: name its body 3×3 convs")
    config = config or MaskConfig()
    net = net if inplace else copy.deepcopy(net)
    context = MaskContext()
    # Build (and so check) every replacement before swapping any, so that names refer to the original tree.
    new: dict[str, nn.Module] = {
        name: MaskedConv2d(net.get_submodule(name), context, mode=mode, name=name)
        for name in (match_modules(net, conv_patterns) if conv_patterns else [])}
    blocks = match_modules(net, window_patterns, tuple(WINDOW_LAYERS)) if window_patterns else []
    adapted = {name: adapter for pattern, adapter in adapters for name in match_modules(net, pattern)}
    blocks += [n for n in adapted if n not in blocks]
    inside = [n for n in new if any(n.startswith(b + ".") for b in blocks)]
    if inside:
        raise UnsupportedModelError(f"conv rules name {len(inside)} layer(s) inside masked window blocks "
                                    f"(e.g. {inside[0]}): a block is masked as a whole")
    for name in blocks:
        block = net.get_submodule(name)
        if name in adapted:
            new[name] = MaskedWindowBatch(block, context, config.window_threshold, mode=mode, name=name,
                                          adapter=adapted[name])
        else:
            new[name] = WINDOW_LAYERS[type(block)](block, context, config.window_threshold, mode=mode, name=name)
    tail_context = None
    if tail is not None and config.output_dilation is not None:
        tail_context = TailContext()
        for name, radius in tail_layers(net, list(tail)):
            if name in new or any(name.startswith(b + ".") for b in blocks):
                raise UnsupportedModelError(f"tail conv {name} is also a masked body layer")
            conv = cast(nn.Conv2d, net.get_submodule(name))  # TailMaskedConv checks that it is one
            new[name] = TailMaskedConv(conv, tail_context, radius, name=name)
    for name, module in new.items():
        _replace(net, name, module)
    return AcceleratedSR(net, config, context, tail_context)
