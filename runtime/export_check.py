"""The check an export gets before it is kept: the written graph run in onnxruntime against its PyTorch
model (Polygraphy, ``amsr.runtime.parity``). The exporter takes it as a parameter
(``export_onnx(..., verify=onnxruntime_check)``) instead of importing the runtime, so export sits below
runtime in the layers. Its own module because ``amsr.runtime.parity`` needs Polygraphy at import: here it is
imported at the first check, and a missing Polygraphy or onnxruntime is a ``BackendUnavailableError`` the
exporter turns into a warning (written, not verified)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from amsr.export.onnx_export import Verdict


def onnxruntime_check(model: nn.Module, path: Path, inputs: list[np.ndarray]) -> Verdict:
    """``compare_with_torch`` of ``model`` and the graph at ``path`` on ``inputs`` (atol 1e-4, masks equal)."""
    from amsr.runtime.parity import compare_with_torch

    return compare_with_torch(model, path, inputs)
