"""Element types and float16 value limits shared by the FP16 conversion."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

FLOAT = TensorProto.FLOAT
HALF = TensorProto.FLOAT16
FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0 ** -14


def to_half(values: np.ndarray) -> np.ndarray:
    """float16 copy with finite values clamped to +-65504 (NaN and +-Inf kept)."""
    values = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(values)
    clamped = np.where(finite, np.clip(values, -FP16_MAX, FP16_MAX), values)
    return clamped.astype(np.float16)


def half_safe_scale(values: np.ndarray) -> bool:
    """True when every value is a normal float16 number (scales must stay exact and non-zero)."""
    magnitude = np.abs(np.asarray(values, dtype=np.float64))
    return bool(np.all(np.isfinite(magnitude)) and np.all(magnitude >= FP16_MIN_NORMAL)
                and np.all(magnitude <= FP16_MAX))
