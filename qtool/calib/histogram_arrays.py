"""An AbsHistogram as plain numpy arrays (the members of a calibration's .npz, no pickle), and
back, with every field of a file that may be forged checked before anything is built."""

from __future__ import annotations

import math

import numpy as np

from qtool.calib.grid import bin_index
from qtool.errors import QtoolError

# Largest base bin count a histogram file may declare (8 bytes each are allocated on reading).
MAX_FILE_BINS = 1 << 24
# Most values one histogram may count: totals stay exact in float64 (the threshold searches) and
# far from int64 overflow when shards are merged.
MAX_COUNT = 1 << 53
FORMAT_KEYS = ("counts", "bin_width", "shift", "bins", "max_bins", "abs_max", "nan_count",
               "inf_count")


def histogram_to_arrays(hist) -> dict[str, np.ndarray]:
    """Plain numpy arrays that histogram_from_arrays restores exactly."""
    width = hist.base_width
    return {
        "counts": hist.hist,
        "bin_width": np.float64(np.nan if width is None else width),
        "shift": np.int64(hist.shift),
        "bins": np.int64(hist.bins),
        "max_bins": np.int64(hist.max_bins),
        "abs_max": np.float64(hist.abs_max),
        "nan_count": np.int64(hist.nan_count),
        "inf_count": np.int64(hist.inf_count),
    }


def _scalar(arrays, key: str, kind: str):
    value = np.asarray(arrays[key])
    if value.shape != () or value.dtype.kind not in kind:
        raise QtoolError(f"histogram field {key!r} must be a scalar, got a {value.dtype} "
                         f"array of shape {value.shape}")
    return value.item()


def histogram_from_arrays(histogram_class, arrays):
    """A `histogram_class` (AbsHistogram) rebuilt from histogram_to_arrays() output; a
    QtoolError if the arrays are inconsistent."""
    missing = [key for key in FORMAT_KEYS if key not in arrays]
    if missing:
        raise QtoolError(f"histogram data lacks {', '.join(missing)}")
    bins, max_bins = _scalar(arrays, "bins", "iu"), _scalar(arrays, "max_bins", "iu")
    shift = _scalar(arrays, "shift", "iu")
    width = float(_scalar(arrays, "bin_width", "f"))
    abs_max = float(_scalar(arrays, "abs_max", "f"))
    nan_count, inf_count = _scalar(arrays, "nan_count", "iu"), _scalar(arrays, "inf_count", "iu")
    counts = np.asarray(arrays["counts"])
    if counts.ndim != 1 or counts.dtype.kind not in "iu" or (counts < 0).any():
        raise QtoolError("histogram counts must be a 1-D array of non-negative integers")
    if counts.sum(dtype=np.float64) > MAX_COUNT:
        raise QtoolError("histogram counts add up to more than 2**53 values")
    # A forged file must not ask for terabytes (the base bins are allocated) or overflow the
    # bin width: sizes and shift are bounded before anything is built.
    if not 1 <= bins <= MAX_FILE_BINS or not 0 <= shift <= 2100:
        raise QtoolError(f"histogram sizes are out of range (bins {bins}, shift {shift})")
    hist = histogram_class(bins, max_bins)
    if min(shift, nan_count, inf_count) < 0 or not (math.isfinite(abs_max) and abs_max >= 0):
        raise QtoolError("histogram data has negative counts or an invalid abs_max")
    if math.isnan(width):
        if shift != 0 or abs_max != 0 or len(counts) != bins or counts[1:].any():
            raise QtoolError("histogram without a grid must hold zeros only")
        hist.restore(None, 0, 0.0, counts, nan_count, inf_count)
        return hist
    if not (math.isfinite(width) and width > 0):
        raise QtoolError(f"histogram bin width must be positive, got {width!r}")
    try:
        coarse = math.ldexp(width, shift)  # the bin width
    except OverflowError:
        coarse = math.inf
    if not math.isfinite(coarse):
        raise QtoolError(f"histogram bin width {width!r} x 2**{shift} is not finite")
    expected = max(-(-bins >> shift), bin_index(abs_max, width, shift) + 1)
    if len(counts) != expected or len(counts) > max_bins:
        raise QtoolError(f"histogram has {len(counts)} bins where its range implies {expected}")
    hist.restore(width, shift, abs_max, counts, nan_count, inf_count)
    return hist
