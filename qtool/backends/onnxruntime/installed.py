"""Whether onnxruntime is installed, for the callers that must work without it: `qtool doctor`
reports why it is missing, and the Q/DQ check skips the verdict it would add."""

from __future__ import annotations

import importlib


def import_onnxruntime():
    """The onnxruntime module; whatever importing it raises propagates."""
    return importlib.import_module("onnxruntime")


def onnxruntime_installed() -> bool:
    """Whether onnxruntime imports here."""
    try:
        import_onnxruntime()
    except ImportError:
        return False
    return True
