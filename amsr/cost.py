"""Effective cost: multiply-accumulates actually performed for one forward pass with a realised mask.

Dense layers count in full (Conv2d, ConvTranspose2d, Linear); sparse layers report their own work through
``effective_macs()`` after each call, so a layer applied several times (CARN-M reuses its blocks) counts
every call. Element-wise ops, normalisation, activations and pixel-shuffle are not counted (the usual SR
convention: they are a few percent of the total).

Two hooks let a module report work the layer types above cannot see:
- ``effective_macs()``: the module's whole cost of its last call; it owns its children (they are not counted
  again). Sparse layers (``MaskedConv2d``, ``MaskedSwinBlock``) use it.
- ``extra_macs(inputs, output)``: the cost of the module's own tensor ops, added to what its children count.
  Attention layers use it for the q·kᵀ and attn·v matmuls (``WindowAttention``); their Linear children count
  the projections.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import nn


def _layer_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    if hasattr(module, "effective_macs"):  # a method, which Module.__getattr__'s type (Tensor | Module) hides
        return int(cast("Callable[[], int]", module.effective_macs)())
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return output.numel() * (module.in_channels // module.groups) * k
    if isinstance(module, nn.ConvTranspose2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return inputs[0].numel() * (module.out_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def _counts(module: nn.Module) -> bool:
    return hasattr(module, "effective_macs") or isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))


def _inside_counted(name: str, counted: set[str]) -> bool:
    return any(name.startswith(p + ".") for p in counted)


@torch.no_grad()
def run_counting_macs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Run ``model(x)`` and return (output, multiply-accumulates performed)."""
    total = 0
    counted: set[str] = set()

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, inputs, output)

    def extra_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += int(cast("Callable[..., int]", module.extra_macs)(inputs, output))  # a method, as above

    handles = []
    for name, m in model.named_modules():
        if _inside_counted(name, counted):
            continue
        # A layer that reports its own effective cost owns its children (e.g. MaskedConv2d.conv).
        if _counts(m):
            counted.add(name)
            handles.append(m.register_forward_hook(hook))
        elif hasattr(m, "extra_macs"):  # its children are counted too
            handles.append(m.register_forward_hook(extra_hook))
    try:
        y = model(x)
    finally:
        for h in handles:
            h.remove()
    return y, total
