"""The one module-swap mechanism: replace modules by their twins in a tree, keeping shared modules shared.

CARN-M calls one block three times, so a swap that replaced each *reference* would give three copies and
break the weight sharing its checkpoint relies on; here a module is swapped once and the same replacement
sits wherever the original did. Used by ``sparse.tiles.to_tiles`` and ``export.exportable.prepare_for_export``
(surgery replaces by qualified name, which names each module once).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def swap_modules(root: nn.Module, twin: Callable[[nn.Module], nn.Module | None],
                 final: Callable[[nn.Module], bool] = lambda new: True) -> nn.Module:
    """``root`` (in place) with every module for which ``twin`` returns a replacement replaced, ``root`` itself
    included: the returned module is the new root. Depth first; a module met again is given the same
    replacement; the children of a replacement are visited unless ``final(replacement)``."""
    swapped: dict[int, nn.Module] = {}

    def swap(m: nn.Module) -> nn.Module | None:
        if id(m) not in swapped:
            new = twin(m)
            if new is None:
                return None
            swapped[id(m)] = new
        return swapped[id(m)]

    def visit(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            new = swap(child)
            if new is not None:
                setattr(parent, name, new)
            if new is None or not final(new):
                visit(new if new is not None else child)

    new_root = swap(root)
    top = new_root if new_root is not None else root
    if new_root is None or not final(new_root):
        visit(top)
    return top
