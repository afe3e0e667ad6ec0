"""Counting |x| into fixed-width bins: the one hot loop of calibration.

The bin of a finite value x on a grid with reciprocal bin width r is

    floor(|x| * r)        |x| taken exactly in float64, the product rounded once to float64

Both implementations below give exactly this, value by value:

- ``count_compiled``: a small C loop (``_binning.c``, built at install where a C compiler is
  available) that reads each value from memory once (two passes over blocks held in L1: a max,
  then the counts) and keeps four interleaved count arrays, so runs of equal values (a ReLU's
  zeros) do not wait on one memory location. It releases the GIL, so it overlaps with onnxruntime.
- ``count_numpy``: the same counts from whole-array numpy operations (abs, multiply, bincount),
  about 2.5 times slower; used where the C loop was not built, for dtypes other than float32,
  and for the rare stretch of values that is not finite or beyond the current range.

The compiled loop stops at the first value it cannot count (NaN, Inf, or a bin beyond the
counts): the caller grows the grid or sorts out the non-finite values with numpy, then resumes.
"""

from __future__ import annotations

import math

import numpy as np


def range_limit(reciprocal: float, nbins: int) -> float:
    """The smallest float64 a with floor(a * reciprocal) >= nbins: every value below it has a bin.

    The product is monotonic in a, so a < limit is the exact range test, and it is False for NaN.
    """
    limit = nbins / reciprocal
    while limit > 0 and math.floor(math.nextafter(limit, 0.0) * reciprocal) >= nbins:
        limit = math.nextafter(limit, 0.0)
    while math.isfinite(limit) and math.floor(limit * reciprocal) < nbins:
        limit = math.nextafter(limit, math.inf)
    return limit


def count_numpy(magnitudes: np.ndarray, reciprocal: float, counts: np.ndarray,
                index_buffer: np.ndarray) -> None:
    """Add the bins of `magnitudes` (|x|, finite, all within counts) to `counts`."""
    index = index_buffer[: magnitudes.size]
    # float64 product (a float32 array times a float64 scalar), truncated to an index on the way out
    np.multiply(magnitudes, np.float64(reciprocal), out=index, casting="unsafe")
    found = np.bincount(index)
    counts[: found.size] += found


# What to tell a user whose install could not build the C loop.
NOT_BUILT = ("the C extension was not built; numpy counts the same bins, about 2.5x slower "
             "(reinstall where a C compiler exists)")


def compiled_kernel():
    """The compiled float32 loop (qtool/calib/_binning.c), or None where it was not built."""
    try:
        from qtool.calib import _binning
    except ImportError:  # built without a C compiler: numpy counts the same bins
        return None
    return _binning.count_float32


def count_compiled(flat: np.ndarray, start: int, reciprocal: float, limit: float,
                   counts: np.ndarray) -> tuple[int, float]:
    """Count flat[start:stop] (contiguous float32) into counts (int64) with the compiled loop.

    Returns (stop, largest |x| counted): stop is len(flat), or the index of the first value that
    is not below `limit` (NaN, Inf, or beyond the counts), which the caller deals with before
    calling again.
    """
    kernel = compiled_kernel()
    if kernel is None:
        raise RuntimeError("the compiled counting loop was not built")
    stop, top = kernel(flat, start, float(reciprocal), float(limit), counts)
    return int(stop), float(top)
