"""Whether code runs under a tracer (the ONNX exporter, ``torch.compile``, ``torch.jit.trace``)."""

from __future__ import annotations

import torch


def is_tracing() -> bool:
    """True while torch.export/dynamo, ``torch.compile`` or ``torch.jit.trace`` records the graph: eager-only
    work (host-side counters, CUDA graphs, Triton launches) must step aside then."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()
