"""Replay a fixed-shape function from a CUDA graph: one capture per input shape, then one launch per call.

Why: the mask generator is ~650 tiny kernels (50 Lloyd iterations of the 2-means); eagerly on a GPU each is a
separate launch, so on an H200 the mask cost 1.7–2.7× the whole dense CARN-M/IMDN forward of a Set14 image
(results/bench/gpu). A captured graph replays the same kernels in the same order — the same values, bit for
bit — without the per-launch host overhead. Only for functions whose shapes depend on the input shape
alone (no ``nonzero``, no host synchronisation inside).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from amsr.core.tracing import is_tracing

log = logging.getLogger(__name__)

Key = tuple[tuple[int, ...], torch.dtype, torch.device]


class CudaGraphed:
    """``fn(x)`` on CUDA tensors, replayed from a graph captured for ``x``'s shape. ``fn`` returns a tensor or
    a tuple of tensors; the result is fresh (copies of the graph's outputs).

    Capture costs ~15 eager calls (measured on an H200 for the mask), so a shape is captured on its
    ``capture_after``-th call only (one-off sizes run eagerly), at most ``max_shapes`` graphs are kept (least
    recently used dropped), and after ``2 · max_shapes`` drops (sizes cycling through more shapes than that)
    graphs are given up for good: every call then runs eagerly.
    """

    def __init__(self, fn: Callable[[torch.Tensor], Any], max_shapes: int = 32,
                 capture_after: int = 2) -> None:
        self.fn = fn
        self.max_shapes = max_shapes
        self.capture_after = capture_after
        self._graphs: OrderedDict[Key, tuple[torch.cuda.CUDAGraph, torch.Tensor, Any]] = OrderedDict()
        self._calls: dict[Key, int] = {}
        self.dropped = 0
        self.disabled = False
        self._lock = threading.Lock()  # a graph's static buffers serve one call at a time

    def __call__(self, x: torch.Tensor) -> Any:
        with self._lock:
            return self._call(x)

    def _call(self, x: torch.Tensor) -> Any:
        key: Key = (tuple(x.shape), x.dtype, x.device)
        entry = self._graphs.get(key)
        if entry is None:
            if self.disabled:
                return self.fn(x)
            if len(self._calls) > 64 * self.max_shapes:
                self._calls.clear()
            self._calls[key] = self._calls.get(key, 0) + 1
            if self._calls[key] < self.capture_after:
                return self.fn(x)
            entry = self._capture(x)
            self._graphs[key] = entry
            while len(self._graphs) > self.max_shapes:
                self._graphs.popitem(last=False)
                self.dropped += 1
            if self.dropped > 2 * self.max_shapes:
                self.disabled = True
                self._graphs.clear()
                log.info("CUDA graphs given up: input sizes cycle through more than %d shapes", self.max_shapes)
        else:
            self._graphs.move_to_end(key)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        if isinstance(static_out, tuple):
            return tuple(t.clone() for t in static_out)
        return static_out.clone()

    def _capture(self, x: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, Any]:
        static_in = x.detach().clone()
        # Warm up on a side stream first (lazy initialisation, cuDNN algorithm choice), as capture requires.
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(2):
                self.fn(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            static_out = self.fn(static_in)
        return graph, static_in, static_out

    def __deepcopy__(self, memo: dict[int, Any]) -> CudaGraphed:
        # Graphs belong to the module they were captured for: a copy (whose bound ``fn`` deep-copies to the
        # copied module) captures its own.
        return CudaGraphed(copy.deepcopy(self.fn, memo), self.max_shapes, self.capture_after)

    def __getstate__(self) -> dict[str, Any]:
        # graphs are not picklable: an unpickled copy captures its own
        return {"fn": self.fn, "max_shapes": self.max_shapes, "capture_after": self.capture_after}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # self.__init__(...), spelled through the type: mypy refuses __init__ on an instance
        type(self).__init__(self, state["fn"], state["max_shapes"], state["capture_after"])



def can_replay(x: torch.Tensor) -> bool:
    """Whether a call on ``x`` may be replayed from a graph: CUDA, no autograd, not traced/exported/compiled,
    and not inside another capture."""
    if not x.is_cuda or (torch.is_grad_enabled() and x.requires_grad):
        return False
    if is_tracing():
        return False
    return not torch.cuda.is_current_stream_capturing()
