"""One error root for everything a user can get wrong.

Library code raises these; the CLIs turn them into a one-line message and a non-zero exit (no traceback).
Anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


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


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to a mistyped ``word`` (``difflib``, case-insensitive), or ``None`` when none is close:
    error messages for unknown names end with "did you mean 'carn_m'?"."""
    import difflib

    by_lower = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(word.lower(), list(by_lower), n=1)
    return by_lower[match[0]] if match else None
