"""The window-adapter protocol: what amsr needs to know of a window block it has no masked layer for
(``amsr.sparse.window_batch`` has the masked layer and the adapter for windows batched on the first axis).

Its own module, importing nothing of amsr, so that the descriptors (``SparseRules.window_adapters``) can name
the type without importing the layers.
"""

from __future__ import annotations

from torch import Tensor, nn


class WindowAdapter:
    """How a window block lays out its windows and computes some of them (see the module docstring).

    Subclass it for a new layout; every method must be written in tensor ops (no Python branch on values) for
    the layer to export.
    """

    def window_means(self, mask: Tensor, x: Tensor) -> Tensor:
        """``(windows,)`` float64: the mean of ``mask`` (N×1×H×W, 0/1, at the input's resolution) over each
        window of the block's input ``x``, in the order ``gather`` indexes them."""
        raise NotImplementedError

    def gather(self, x: Tensor, index: Tensor) -> Tensor:
        """The windows ``index`` (int64, unique) of ``x``, as the block takes them."""
        raise NotImplementedError

    def run(self, block: nn.Module, windows: Tensor) -> Tensor:
        """The block's output on gathered ``windows`` (each computed alone)."""
        return block(windows)

    def scatter(self, x: Tensor, index: Tensor, windows: Tensor) -> Tensor:
        """A copy of ``x`` with the windows ``index`` replaced by ``windows``."""
        raise NotImplementedError
