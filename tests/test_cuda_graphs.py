"""The capture policy of amsr.masking.cuda_graphs (which calls capture, replay, drop, give up). The CUDA graph itself
is the GPU boundary: here a fake graph replays ``fn`` into the static output; the real replay is checked on
a GPU by tests/test_mask.py::test_cuda_graph_mask_equals_the_eager_mask_bit_for_bit."""

from __future__ import annotations

import time

import torch

from amsr.masking.cuda_graphs import CudaGraphed


class _FakeGraph:
    def __init__(self, fn, static_in: torch.Tensor, static_out: torch.Tensor) -> None:  # type: ignore[no-untyped-def]
        self.fn, self.static_in, self.static_out = fn, static_in, static_out

    def replay(self) -> None:
        y = self.fn(self.static_in)
        time.sleep(0.001)  # a GPU replay takes time too: lets unsynchronised callers overwrite the buffers
        self.static_out.copy_(y)


class _Recorded(CudaGraphed):
    def __init__(self, *a, **k) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*a, **k)
        self.captures: list[tuple[int, ...]] = []

    def _capture(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
        self.captures.append(tuple(x.shape))
        static_in = x.clone()
        static_out = self.fn(static_in)
        return _FakeGraph(self.fn, static_in, static_out), static_in, static_out


def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def test_a_shape_is_captured_on_its_second_call_and_replayed_with_fresh_outputs() -> None:
    g = _Recorded(_double)
    a, b = torch.ones(1, 2), torch.full((1, 2), 3.0)
    assert torch.equal(g(a), a * 2) and g.captures == []  # first call: eager
    out1 = g(b)
    assert g.captures == [(1, 2)] and torch.equal(out1, b * 2)
    out2 = g(a)  # replay with new input values
    assert g.captures == [(1, 2)] and torch.equal(out2, a * 2) and torch.equal(out1, b * 2)  # out1 not overwritten


def test_least_recently_used_graphs_are_dropped_and_cycling_sizes_give_up() -> None:
    g = _Recorded(_double, max_shapes=2, capture_after=1)
    for n in (1, 2, 1, 3):  # 3 evicts 2 (1 was used more recently)
        g(torch.zeros(n, 1))
    assert list(k[0] for k in g._graphs) == [(1, 1), (3, 1)] and g.dropped == 1
    for n in range(4, 12):  # more distinct sizes than 2 · max_shapes drops: graphs off for good
        g(torch.zeros(n, 1))
    assert g.disabled and not g._graphs
    before = len(g.captures)
    assert torch.equal(g(torch.ones(1, 1)), torch.full((1, 1), 2.0)) and len(g.captures) == before


def test_concurrent_calls_do_not_share_static_buffers() -> None:
    from concurrent.futures import ThreadPoolExecutor

    g = _Recorded(_double, capture_after=1)
    xs = [torch.full((1, 64), float(i)) for i in range(64)]
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(g, xs))
    assert all(torch.equal(o, x * 2) for o, x in zip(outs, xs)) and g.captures == [(1, 64)]
