"""Symmetric INT8 scales and weight quantization, exactly as TensorRT expects them.

scale = amax / 127, computed in float64 and rounded once to float32; zero-point 0 (int8);
quantization rounds half to even (what QuantizeLinear does) and clamps to [-128, 127].
"""

from __future__ import annotations

import math

import numpy as np

from qtool.errors import QtoolError

QMAX = 127
QMIN = -128
# Smallest scale written. An all-zero tensor or channel (amax 0) would give scale 0, which
# QuantizeLinear divides by; any positive scale represents zero exactly, so the floor costs nothing
# there. It is a normal float32 far below any real amax / 127, and since it only ever enlarges a
# scale it never clips: values below 127 * MIN_SCALE stay within range.
MIN_SCALE = np.float32(1e-12)


def scale_from_amax(amax: float, tensor: str | None = None) -> np.float32:
    """Per-tensor scale for a calibrated amax; amax must be finite and non-negative, and small
    enough that amax / 127 is a finite float32 (a float64 tensor can exceed that)."""
    try:
        value = float(amax)
    except (TypeError, ValueError):
        value = math.nan
    what = f"amax of {tensor!r}" if tensor else "amax"
    if not math.isfinite(value) or value < 0:
        raise QtoolError(f"{what} must be a finite non-negative number, got {amax!r}")
    if value / QMAX > float(np.finfo(np.float32).max):
        raise QtoolError(f"{what} is {value!r}: its scale would overflow float32; leave the "
                         f"tensor's consumers unquantized (--exclude)")
    return max(np.float32(value / QMAX), MIN_SCALE)


def weight_scales(weight: np.ndarray, axis: int | None) -> np.ndarray:
    """max|w| / 127 per channel along `axis` (shape [C]), or per tensor (a 0-d array) for None."""
    # NaN/Inf weights are reported below as one error, not as numpy warnings on stderr first.
    with np.errstate(invalid="ignore", over="ignore"):
        magnitude = np.abs(np.asarray(weight, dtype=np.float32))
        if axis is None:
            amax = np.float64(magnitude.max()) if magnitude.size else 0.0
            scales = np.asarray(np.float32(amax / QMAX))
        else:
            reduce_axes = tuple(i for i in range(magnitude.ndim) if i != axis)
            amax = magnitude.max(axis=reduce_axes) if magnitude.size else np.zeros(weight.shape[axis])
            scales = (amax.astype(np.float64) / QMAX).astype(np.float32)
    if not np.all(np.isfinite(scales)):
        raise QtoolError("weight contains NaN or Inf values; it cannot be quantized")
    return np.maximum(scales, MIN_SCALE).astype(np.float32)


def broadcast_scale(scales: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    """Reshape per-channel scales so they broadcast against a tensor of rank `ndim`."""
    if axis is None:
        return np.asarray(scales, dtype=np.float32)
    shape = [1] * ndim
    shape[axis] = -1
    return np.asarray(scales, dtype=np.float32).reshape(shape)


def quantize_int8(values: np.ndarray, scales: np.ndarray, axis: int | None) -> np.ndarray:
    """INT8 values as QuantizeLinear computes them: float32 x / scale, half to even, clamped."""
    x = np.asarray(values, dtype=np.float32)
    q = x / broadcast_scale(scales, x.ndim, axis)
    # in place: one float32 temporary per weight, not three (a large model's weights are big)
    np.rint(q, out=q)
    np.clip(q, QMIN, QMAX, out=q)
    return q.astype(np.int8)
