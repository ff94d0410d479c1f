"""One error root for everything a user can get wrong.

Library code raises these; the CLIs turn them into a one-line message and a non-zero exit (no traceback).
Anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations


class AmsrError(Exception):
    """Base class of every error amsr raises for bad input or a missing capability."""


class UnsupportedModelError(AmsrError):
    """Unknown model name, variant or scale, or a state dict no architecture recognises."""


class CheckpointError(AmsrError):
    """Missing, corrupt or mismatched checkpoint file."""


class InputImageError(AmsrError):
    """An image amsr cannot process as given (mode, bit depth, size, missing pair)."""


class BackendUnavailableError(AmsrError):
    """An optional backend (onnxruntime, TensorRT, a GPU) is not installed or not usable here."""


class ExportError(AmsrError):
    """The exporter could not produce a valid graph for the requested options."""
