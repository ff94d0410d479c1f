"""Window selection for window blocks amsr has no masked layer for: the adapter protocol.

A block is *window-local* when its output on each window depends on that window's input alone: window
attention, a per-token MLP, convs zero-padded inside the window. The paper's window skip then applies to it
as to a Swin block (a window is computed when its mean mask is ≥ the threshold; the others pass through), and
amsr needs two facts from the block, which a ``WindowAdapter`` (``amsr.core.window_adapter``) states:

1. the partition: which pixels of the mask each window of the block's input covers (``window_means``);
2. the increment: how to take some windows out of the input, run the block on them alone, and put the results
   back (``gather``, ``run``, ``scatter``).

``BatchedWindows`` is the adapter for the common layout in which the windows are already the batch: a
module called on ``window_partition(x)`` — B·nW windows, image-major, row-major over the window grid —
either as N×C×ws×ws maps (DITN's stack of inner-patch transformer layers) or as N×ws²×C tokens (a timm or
SwinIR-style block stack applied after the partition). Its gather and scatter are a Gather and a ScatterND
on the batch axis, so the same layer exports to ONNX (``export.exportable.GatherScatterWindowBatch``).
SwinIR/IMDTN/NGswin and HiT-SRF blocks, which partition inside their forward, keep their own masked layers
(``amsr.sparse.window``, ``amsr.sparse.hit``).

A user's layout that is neither is one subclass of ``WindowAdapter`` away, e.g. a block on a whole
B×C×H×W map whose ``window_means`` partitions the mask like the block and whose ``gather``/``run`` call the
block's window function.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from amsr.core.errors import UnsupportedModelError
from amsr.sparse.pixel import ExecutionMode, MaskContext
from amsr.sparse.window import MaskedWindowLayer
from amsr.core.window_adapter import WindowAdapter
from amsr.core.tracing import is_tracing

WindowLayout = Literal["nchw", "tokens"]


class BatchedWindows(WindowAdapter):
    """Windows as the batch axis (``window_partition`` order), laid out as N×C×ws×ws (``"nchw"``) or
    N×ws²×C (``"tokens"``); the windows tile the mask's map without a shift."""

    def __init__(self, layout: WindowLayout = "nchw") -> None:
        if layout not in ("nchw", "tokens"):
            raise ValueError(f"layout must be 'nchw' or 'tokens', got {layout!r}")
        self.layout: WindowLayout = layout

    def window_size(self, x: Tensor) -> tuple[int, int]:
        if self.layout == "nchw":
            return int(x.shape[-2]), int(x.shape[-1])
        side = int(round(x.shape[1] ** 0.5))
        return side, side

    def window_means(self, mask: Tensor, x: Tensor) -> Tensor:
        wh, ww = self.window_size(x)
        n, _, h, w = mask.shape
        if not is_tracing():
            if (self.layout == "tokens" and wh * ww != x.shape[1]) or h % wh or w % ww \
                    or n * (h // wh) * (w // ww) != x.shape[0]:
                raise UnsupportedModelError(
                    f"a batch of {x.shape[0]} windows {wh}×{ww} does not tile the {n}×{h}×{w} mask (the input's "
                    "resolution): BatchedWindows needs windows of the whole map at the input's resolution")
            if (wh, ww) == (h, w):
                raise UnsupportedModelError(f"called on the whole {h}×{w} map, not on a batch of windows")
        cells = mask.reshape(n, h // wh, wh, w // ww, ww).to(torch.float64)
        return cells.mean(dim=(2, 4)).reshape(-1)

    def gather(self, x: Tensor, index: Tensor) -> Tensor:
        return x.index_select(0, index)

    def scatter(self, x: Tensor, index: Tensor, windows: Tensor) -> Tensor:
        return x.index_copy(0, index, windows)


class MaskedWindowBatch(MaskedWindowLayer):
    """A window-local block computed only on the windows the mask selects; its input on the others.

    Holds the original block as ``block`` (same parameters, no copy) and takes its arguments. Effective
    cost: the computed windows times the block's cost on one window, counted once per window shape with
    ``amsr.core.cost`` (so convs, linears and matmuls inside the user's block all count).

    Args:
        block: the window-local module.
        context: the model's mask.
        threshold: a window is computed when its mean mask is ≥ this.
        adapter: its layout (``BatchedWindows()`` by default).
        mode: ``"sparse"`` (gather the selected windows) or ``"dense"`` (reference: all windows, then select).
    """

    def __init__(self, block: nn.Module, context: MaskContext, threshold: float = 0.5,
                 mode: ExecutionMode = "sparse", name: str = "block", adapter: WindowAdapter | None = None) -> None:
        super().__init__(context, threshold, mode)
        self.block = block
        self.adapter = adapter if adapter is not None else BatchedWindows()
        self.name = name
        self._window: Tensor | None = None  # one window of the last call, for its cost
        self._window_macs: dict[tuple[int, ...], int] = {}

    def selected(self, x: Tensor) -> Tensor:
        """``(windows,)`` bool: the windows of ``x`` whose mean mask is ≥ the threshold."""
        if self.context.mask is None:
            raise RuntimeError(f"{self.name} called outside an accelerated model's forward (no mask set)")
        return self.adapter.window_means(self.context.mask, x) >= self.threshold

    def forward(self, x: Tensor) -> Tensor:
        selected = self.selected(x)
        index = selected.nonzero()[:, 0]
        self.last_total = selected.numel()
        self.last_selected = int(index.numel())
        self._window = self.adapter.gather(x, index[:1] if index.numel() else index.new_zeros(1)).detach()
        if self.mode == "dense":
            self.last_computed = self.last_total
            y = self.adapter.run(self.block, x)
            return self.adapter.scatter(x, index, self.adapter.gather(y, index))
        self.last_computed = self.last_selected
        if index.numel() == 0:
            return x
        return self.adapter.scatter(x, index, self.adapter.run(self.block, self.adapter.gather(x, index)))

    def window_macs(self) -> int:
        """Multiply-accumulates of the block on one window of the last call's shape (counted, then cached)."""
        if self._window is None:
            return 0
        key = tuple(self._window.shape[1:])
        if key not in self._window_macs:
            from amsr.core.cost import run_counting_macs  # cost sits above the layers it counts

            with torch.no_grad():
                _, macs = run_counting_macs(_Run(self.adapter, self.block), self._window)
            self._window_macs[key] = macs
        return self._window_macs[key]

    def effective_macs(self) -> int:
        """The computed windows' cost (all windows on the dense reference path)."""
        return self.last_computed * self.window_macs()


class _Run(nn.Module):
    """``adapter.run(block, ·)`` as a module, so ``run_counting_macs`` hooks the block's layers."""

    def __init__(self, adapter: WindowAdapter, block: nn.Module) -> None:
        super().__init__()
        self.adapter = adapter
        self.block = block

    def forward(self, windows: Tensor) -> Tensor:
        return self.adapter.run(self.block, windows)
