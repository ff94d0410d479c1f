"""Named models: resolve the checkpoint, build the network, and make its dense and accelerated forms."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from amsr.checkpoint import load_checkpoint
from amsr.errors import CheckpointError, UnsupportedModelError
from amsr.mask import MaskConfig
from amsr.sparse_conv import ExecutionMode
from amsr.sparse_tail import TAIL_RULES
from amsr.surgery import AcceleratedSR, accelerate
from amsr.weights import resolve_weights
from amsr.zoo import Architecture, detect_architecture, get_architecture
from amsr.zoo.padding import PaddedSR


@dataclass
class LoadedModel:
    """A zoo network with its weights: ``dense()`` and ``accelerated(config)`` give ready modules.

    Both take N×3×H×W float32 RGB in [0, 1] of any H×W (padded to the architecture's requirements
    and cropped back) and return N×3×sH×sW, unclamped.
    """

    arch: Architecture
    scale: int
    net: nn.Module
    weights: Path
    variant: str = ""

    def dense(self) -> nn.Module:
        return PaddedSR(self.net, self.scale, self.arch.size).eval()

    def accelerated(self, config: MaskConfig | None = None, mode: ExecutionMode = "sparse",
                    sparse_tail: bool = True) -> PaddedSR:
        """The network with AMSR applied (a copy; ``self.net`` stays dense). With an output blend
        (``config.output_dilation``), the tail convs listed in ``amsr.sparse_tail.TAIL_RULES`` run sparsely;
        ``sparse_tail=False`` runs them densely (same output: the blend keeps only pixels the sparse tail
        computes exactly; faster wherever measured, results/bench/gpu/README.md; counted in full)."""
        tail = TAIL_RULES.get(self.arch.id) if sparse_tail else None
        acc = accelerate(self.net, self.arch.rules, config, mode=mode, tail=tail(self.scale) if tail else None)
        return PaddedSR(acc, self.scale, self.arch.size).eval()


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
    if scale not in arch.scales:
        raise UnsupportedModelError(f"{name} has no x{scale} model (scales: {', '.join(map(str, arch.scales))})")
    if weights is None:
        wf = arch.weight_file(scale, variant or (arch.variants[0] if arch.variants else ""))
        path = resolve_weights(wf, allow_download=allow_download)
    else:
        path = resolve_weights(arch.weights[0], weights)
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
