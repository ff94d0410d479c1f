"""What amsr needs to know about one architecture: one frozen descriptor per model family.

A descriptor says how to recognise a checkpoint (``detect``), how to build the network from it (``build``),
where the official files live (``weights``), what input sizes the network accepts (``size``) and which of
its layers the method may make sparse (``rules``). Everything else in amsr reads only these fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from amsr.core.window_adapter import WindowAdapter

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class SizeRequirements:
    """Input-size constraints of a network, applied by padding the LR input and cropping the output.

    Attributes:
        multiple_of: H and W are padded up to a multiple of this (window size × downsampling, e.g. 8, 16, 32, 64).
        minimum: H and W are padded up to at least this many pixels.
        pad_mode: ``"reflect"`` (what the authors use) or ``"replicate"``; reflect falls back to replicate
            when the image is smaller than the pad (reflect cannot pad more than size − 1).
    """

    multiple_of: int = 1
    minimum: int = 1
    pad_mode: str = "reflect"


@dataclass(frozen=True)
class WeightFile:
    """One official checkpoint file: its name on disk, public URL and sha256."""

    scale: int
    filename: str
    url: str
    sha256: str
    variant: str = ""


@dataclass(frozen=True)
class SparseRules:
    """Declarative per-architecture rules for model surgery.

    Attributes:
        convs: ``fnmatch`` patterns over qualified module names selecting the body 3×3 convolutions that
            become masked convs. Each match must be a stride-1, dilation-1, 3×3 ``Conv2d`` with equal in/out
            channels (so the identity is a valid output where the mask is 0); surgery checks this.
        windows: patterns selecting Swin-style transformer blocks for window-level token selection.
        window_adapters: (pattern, ``WindowAdapter``) pairs: window-local blocks amsr has no masked layer for
            (a user's transformer), selected by window through the adapter (``amsr.sparse.window_batch``).
        min_blend_margin: the smallest d_net − d_out of an output-blend setting calibration may pick for this
            architecture; ``None``: ``amsr.operating_point.MIN_BLEND_MARGIN``.
        min_output_dilation: the smallest output-mask dilation d_out calibration may pick; ``None``:
            ``amsr.operating_point.MIN_OUTPUT_DILATION``.
        unsafe_training_free: why no setting of the published weights may be a default or a calibrated
            point (measured on photos, which the textured calibration crops cannot stand for); ``None``:
            calibrate as usual. Fine-tuned weights are judged on their measured loss.
        tail: ``tail(scale)`` → the tail convs (upsampler, reconstruction) in execution order, each as
            (qualified name, resolution factor vs LR), which run only where the output blend keeps the
            network (``amsr.sparse.tail``); ``None``: the tail runs densely.
        window_export: the ONNX exporter has a twin for the ``windows`` blocks (SwinIR's
            ``SwinTransformerBlock``: swinir, imdtn). ``False`` (NGswin, HiT-SRF: their blocks pad, shift and
            mix windows in their own ways, never written as a twin): an accelerated export with window
            selection is refused by name; ``--dense`` exports. tests/zoo/test_registry.py checks that the
            exporter agrees.
        tile_break_even: the active-tile fraction above which ``amsr-bench --strategy auto`` runs the dense
            network instead of the tile network (onnxruntime CPU, measured with its profiler; negative:
            the tiles never paid). 0.5 where not measured.
    """

    convs: tuple[str, ...] = ()
    windows: tuple[str, ...] = ()
    window_adapters: tuple[tuple[str, WindowAdapter], ...] = ()
    min_blend_margin: int | None = None
    min_output_dilation: int | None = None
    unsafe_training_free: str | None = None
    tail: Callable[[int], list[tuple[str, int]]] | None = None
    window_export: bool = True
    tile_break_even: float = 0.5

    def prefixed(self, prefix: str) -> SparseRules:
        """The same rules for the network mounted at ``prefix`` inside another module (e.g. ``"net."``)."""
        if not prefix:
            return self
        tail = self.tail
        return replace(self, convs=tuple(prefix + p for p in self.convs),
                       windows=tuple(prefix + p for p in self.windows),
                       window_adapters=tuple((prefix + p, a) for p, a in self.window_adapters),
                       tail=None if tail is None else (lambda s: [(prefix + n, r) for n, r in tail(s)]))


@dataclass(frozen=True)
class Architecture:
    """Descriptor of one model family (spandrel-style), keyed by its command-line name.

    Attributes:
        id: the CLI name (checkpoint stem without the scale), e.g. ``"carn_m"``.
        description: one line: model, paper, official repository.
        scales: scales the official checkpoints exist for.
        weights: official files (one per scale and variant).
        detect: True when a canonical state dict has this architecture's key layout.
        build: ``build(state_dict, scale)`` → an ``nn.Module`` with weights loaded strictly whose
            ``forward(x)`` maps ``N×C×H×W`` float32 RGB in [0, 1] to ``N×C×sH×sW`` (no padding done there;
            raises ``CheckpointError`` when the dict does not fit, ``UnsupportedModelError`` for a bad scale).
        size: input-size constraints (see ``SizeRequirements``).
        rules: which layers the method may make sparse.
        supports_half: fp16 inference is numerically safe.
        variants: named variants (SwinIR: classical/lightweight/real); empty when there is one.
    """

    id: str
    description: str
    scales: tuple[int, ...]
    weights: tuple[WeightFile, ...]
    detect: Callable[[StateDict], bool]
    build: Callable[[StateDict, int], nn.Module]
    size: SizeRequirements = field(default_factory=SizeRequirements)
    rules: SparseRules = field(default_factory=SparseRules)
    supports_half: bool = True
    variants: tuple[str, ...] = ()

    def weight_file(self, scale: int, variant: str = "") -> WeightFile:
        """The official file for ``scale`` (and ``variant``); ``UnsupportedModelError`` if there is none."""
        from amsr.core.errors import UnsupportedModelError

        for w in self.weights:
            if w.scale == scale and (w.variant == variant or not variant):
                return w
        have = ", ".join(f"x{w.scale}" + (f"/{w.variant}" if w.variant else "") for w in self.weights)
        raise UnsupportedModelError(f"{self.id}: no official checkpoint for x{scale}"
                                    + (f" variant {variant!r}" if variant else "") + f" (available: {have})")


def has_all(*keys: str) -> Callable[[StateDict], bool]:
    """Detection predicate: every key is present."""
    return lambda sd: all(k in sd for k in keys)
