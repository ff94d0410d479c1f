"""Named models: resolve the checkpoint, build the network, and make its dense and accelerated forms."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from amsr.core.checkpoint import load_checkpoint
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.masking.mask import MaskConfig
from amsr.sparse.pixel import ExecutionMode
from amsr.surgery import AcceleratedSR, accelerate, check_sr_input, parameter_dtype
from amsr.core.tracing import is_tracing
from amsr.weights import check_official_scale, resolve_weights
from amsr.zoo import Architecture, architecture_at, detect_architecture, get_architecture
from amsr.zoo.padding import PaddedSR

#: Every zoo network takes RGB (its head conv has 3 input channels).
ZOO_CHANNELS = 3


class CheckedSR(PaddedSR):
    """``PaddedSR`` whose forward first checks its input (``check_sr_input``): N×3×H×W in the model's dtype,
    and, for an accelerated model, finite values (NaN/Inf would zero its mask). One ``InputImageError``
    naming expected vs got instead of a torch error deep inside the network. Skipped while tracing, and
    the exporter swaps ``PaddedSR`` for its own twin anyway, so exported graphs are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_tracing():
            check_sr_input(x, parameter_dtype(self.net), ZOO_CHANNELS, finite=isinstance(self.net, AcceleratedSR))
        return super().forward(x)


@dataclass
class LoadedModel:
    """A zoo network with its weights: ``dense()`` and ``accelerated(config)`` give ready modules.

    Both take N×3×H×W float32 RGB in [0, 1] of any H×W (padded to the architecture's requirements
    and cropped back) and return N×3×sH×sW, unclamped. Other input (3-D, 1 or 4 channels, float64/float16/
    uint8, and NaN/Inf for the accelerated one) is an ``InputImageError`` saying what was expected; float64
    is refused, not cast (``x.float()``), so the output dtype is always the input's.
    """

    arch: Architecture
    scale: int
    net: nn.Module
    weights: Path
    variant: str = ""

    def dense(self) -> nn.Module:
        # NaN input is not refused here: the dense network only spreads it over its receptive field (visible).
        return CheckedSR(self.net, self.scale, self.arch.size).eval()

    def accelerated(self, config: MaskConfig | None = None, mode: ExecutionMode = "sparse",
                    sparse_tail: bool = True) -> PaddedSR:
        """The network with AMSR applied (a copy; ``self.net`` stays dense). With an output blend
        (``config.output_dilation``), the tail convs its descriptor lists (``SparseRules.tail``) run sparsely;
        ``sparse_tail=False`` runs them densely (same output: the blend keeps only pixels the sparse tail
        computes exactly; faster wherever measured, results/bench/gpu/README.md; counted in full)."""
        tail = self.arch.rules.tail if sparse_tail else None
        acc = accelerate(self.net, self.arch.rules, config, mode=mode, tail=tail(self.scale) if tail else None)
        acc.check_inputs = False  # CheckedSR checks the unpadded input once, at the outermost forward
        return CheckedSR(acc, self.scale, self.arch.size).eval()


def unwrap_accelerated(model: nn.Module) -> AcceleratedSR:
    """The ``AcceleratedSR`` inside a module returned by ``LoadedModel.accelerated``."""
    inner = model.net if isinstance(model, PaddedSR) else model
    if not isinstance(inner, AcceleratedSR):
        raise TypeError(f"not an accelerated model: {type(model).__name__}")
    return inner


def load_model(name: str, scale: int, weights: str | os.PathLike[str] | None = None, variant: str = "",
               allow_download: bool = True) -> LoadedModel:
    """Build the zoo model ``name`` at ``scale`` with its official (or the given) checkpoint.

    Raises:
        UnsupportedModelError: unknown name, variant or scale.
        CheckpointError: checkpoint missing/corrupt, of another architecture, or not matching its keys.
    """
    arch = get_architecture(name)
    if arch.variants and variant and variant not in arch.variants:
        raise UnsupportedModelError(f"{name}: unknown variant {variant!r} (choose from {', '.join(arch.variants)})")
    architecture_at(name, scale)
    if weights is None:
        wf = arch.weight_file(scale, variant or (arch.variants[0] if arch.variants else ""))
        path = resolve_weights(wf, allow_download=allow_download)
    else:
        path = resolve_weights(arch.weights[0], weights)
        check_official_scale(arch, path, scale)  # a file of another scale the weights cannot reveal
    sd = load_checkpoint(path)
    if not arch.detect(sd):
        try:
            other = f" (it looks like a {detect_architecture(sd).id} checkpoint)"
        except UnsupportedModelError:
            other = ""
        raise CheckpointError(f"{path} is not a {name} checkpoint{other}")
    net = arch.build(sd, scale).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return LoadedModel(arch=arch, scale=scale, net=net, weights=path, variant=variant)


def copy_model(model: LoadedModel) -> LoadedModel:
    """An independent copy (its own parameters)."""
    return LoadedModel(model.arch, model.scale, copy.deepcopy(model.net), model.weights, model.variant)
