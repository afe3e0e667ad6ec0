"""A streaming histogram of |x| for one tensor, exact under any batching.

The collector only counts; choosing a threshold from the counts is the job of
the pure functions in qtool.thresholds.

Grid
    Bins are ``[k*w, (k+1)*w)`` for k = 0, 1, ...: left-closed, so a value
    exactly on an edge belongs to the bin above it. The bin of a finite |x| is
    ``floor(|x| * r)`` with ``r = 1 / w`` (both float64, the product rounded
    once to float64; qtool.calib.binning), so an edge is exact to a float64
    rounding. It depends only on the value, never on the batch it came in or on
    what was seen before, which is what makes streaming, sharding and merging
    exact. (A product, not a quotient: a division costs several times more per
    value, and calibration spends most of its time here.)

    The width w is fixed by the first batch whose largest finite |x| (m) is not
    zero: ``w = m / bins``, widened by the smallest float64 steps needed so that
    m itself falls into the last bin (index bins - 1); the histogram then spans
    about ``[0, bins*w)`` with ``bins*w`` a hair above m. ``fix_grid(amax)`` applies the
    same rule from outside without counting, so shards of one data set can share
    the grid of its first batch. Zeros seen before the grid exists are counted
    at once: zero is in bin 0 on every grid.

Growth
    A later value beyond the range appends bins of the same width: nothing is
    re-binned. To bound memory against huge outliers the histogram never holds
    more than ``max_bins`` bins (default 64 * bins): past that, bins are merged
    in groups of 2**s, s the smallest shift that makes the largest value fit.
    A merged bin k holds exactly the values whose base index floor(|x|*r) lies
    in ``[k*2**s, (k+1)*2**s)``: it is computed as ``floor(|x| * (r*2**-s))``,
    and scaling by a power of two is exact in floating point, so summing 2**d
    adjacent bins is the same thing and the result is still independent of
    batch order (for products below 2**53, far past any realistic range).
    Memory is O(max_bins) per tensor, never O(samples).

Non-finite values
    NaN and +/-Inf are left out of the histogram, of ``abs_max`` and of
    ``count``; they are counted in ``nan_count`` and ``inf_count`` so that the
    calibrate command can warn about them.

Histogram without a grid
    When no non-zero finite value was ever seen (an all-zero tensor, or nothing
    at all), ``hist`` has ``bins`` bins with every zero in bin 0 and ``edges``
    use the placeholder width EMPTY_BIN_WIDTH, so every threshold method returns
    a tiny positive amax instead of 0 or NaN.
"""

from __future__ import annotations

import math

import numpy as np

from qtool.calib.binning import compiled_kernel, count_compiled, count_numpy, range_limit
from qtool.calib.grid import bin_factor, bin_index, coarsen, grid_width
from qtool.calib.histogram_arrays import (
    MAX_COUNT,
    histogram_from_arrays,
    histogram_to_arrays,
)
from qtool.errors import QtoolError

DEFAULT_BINS = 2048
# Bin cap as a multiple of the base bin count (see "Growth" above).
DEFAULT_MAX_BINS_FACTOR = 64
# Placeholder bin width for a histogram that never saw a non-zero value: an
# all-zero tensor then gets amax = 2**-24 (about 6e-8) from the max method.
EMPTY_BIN_WIDTH = 2.0**-24
# Elements handled per step: the float/index buffers (under 1 MB) stay in the
# L2 cache, which makes update() about 3x faster than whole-array operations.
_CHUNK = 1 << 16


def _work_dtype(dtype: np.dtype) -> type:
    """Float type that holds every value of `dtype` exactly (or as float64 does)."""
    if dtype.kind not in "biuf":
        raise QtoolError(f"cannot histogram a tensor of type {dtype}: expected real numbers")
    if dtype == np.float32 or dtype == np.float16 or (dtype.kind in "biu" and dtype.itemsize <= 2):
        return np.float32
    return np.float64


class AbsHistogram:
    """Streaming histogram of |x| on a fixed-width grid starting at 0 (see module doc)."""

    def __init__(self, bins: int = DEFAULT_BINS, max_bins: int | None = None):
        if int(bins) != bins or bins < 1:
            raise QtoolError(f"histogram bins must be a positive integer, got {bins!r}")
        bins = int(bins)
        max_bins = DEFAULT_MAX_BINS_FACTOR * bins if max_bins is None else max_bins
        if int(max_bins) != max_bins or max_bins < bins:
            raise QtoolError(f"max_bins must be an integer >= bins ({bins}), got {max_bins!r}")
        self._bins = bins
        self._max_bins = int(max_bins)
        self.reset()

    def reset(self) -> None:
        """Forget everything, the grid included."""
        self._width: float | None = None
        self._shift = 0
        self._counts = np.zeros(self._bins, dtype=np.int64)
        self._abs_max = 0.0
        self._count = 0
        self._nan_count = 0
        self._inf_count = 0

    # ----------------------------------------------------------------- state
    @property
    def bins(self) -> int:
        """The number of base bins the grid is fitted to."""
        return self._bins

    @property
    def max_bins(self) -> int:
        return self._max_bins

    @property
    def has_grid(self) -> bool:
        return self._width is not None

    @property
    def base_width(self) -> float | None:
        """The grid's base bin width w, or None before any non-zero value."""
        return self._width

    @property
    def shift(self) -> int:
        """Bins are groups of 2**shift base bins (0 unless the range outgrew max_bins)."""
        return self._shift

    @property
    def bin_width(self) -> float:
        """Width of the current bins (the placeholder width when there is no grid)."""
        if self._width is None:
            return EMPTY_BIN_WIDTH
        return math.ldexp(self._width, self._shift)

    @property
    def hist(self) -> np.ndarray:
        """Counts per bin (int64, a copy)."""
        return self._counts.copy()

    @property
    def edges(self) -> np.ndarray:
        """Bin edges (float64, len(hist) + 1, edges[0] == 0)."""
        return np.arange(len(self._counts) + 1, dtype=np.float64) * self.bin_width

    @property
    def abs_max(self) -> float:
        """The exact largest finite |x| seen (0.0 when none)."""
        return self._abs_max

    @property
    def count(self) -> int:
        """Finite values counted (the sum of hist)."""
        return self._count

    @property
    def nan_count(self) -> int:
        return self._nan_count

    @property
    def inf_count(self) -> int:
        return self._inf_count

    def __repr__(self) -> str:
        return (
            f"AbsHistogram(bins={len(self._counts)}, bin_width={self.bin_width!r}, "
            f"count={self._count}, abs_max={self._abs_max!r}, nan={self._nan_count}, "
            f"inf={self._inf_count})"
        )

    # ---------------------------------------------------------------- update
    def fix_grid(self, amax: float) -> None:
        """Set the grid as if the first batch's largest |x| were amax, counting nothing.

        amax == 0 leaves the grid unset (an all-zero batch defines no range either).
        A grid that is already set must be the same one.
        """
        amax = float(amax)
        if not math.isfinite(amax) or amax < 0:
            raise QtoolError(f"histogram range must be finite and >= 0, got {amax!r}")
        if amax == 0:
            return
        width = grid_width(amax, self._bins)
        if self._width is None:
            self._width = width
            self._fit_range()
        elif self._width != width:
            raise QtoolError(
                f"histogram grid already set (bin width {self._width!r}); "
                f"range {amax!r} implies bin width {width!r}"
            )

    def update(self, x) -> None:
        """Count the finite |x| of one batch (any shape, any real dtype)."""
        arr = np.asarray(x)
        work = _work_dtype(arr.dtype)
        flat = arr.reshape(-1)
        if flat.size == 0:
            return
        size = min(_CHUNK, flat.size)
        abuf = np.empty(size, dtype=work)
        ibuf = np.empty(size, dtype=np.intp)
        if self._width is None:
            batch_max = self._finite_abs_max(flat, abuf)
            if batch_max > 0:
                self._width = grid_width(batch_max, self._bins)
        compiled = flat.dtype == np.float32 and compiled_kernel() is not None
        start = 0
        while start < flat.size:
            if compiled and self._width is not None:
                start = self._count_compiled(flat, start)
                if start == flat.size:
                    break
            # numpy takes the next chunk: all of them without the compiled loop, else the stretch
            # where that loop met a value that is not finite or needs a wider grid
            self._count_chunk(flat[start : start + _CHUNK], abuf, ibuf)
            start += _CHUNK

    def _count_compiled(self, flat: np.ndarray, start: int) -> int:
        """Count flat[start:stop] with the compiled loop; returns stop (see binning)."""
        reciprocal = self._reciprocal()
        limit = range_limit(reciprocal, len(self._counts))
        stop, top = count_compiled(flat, start, reciprocal, limit, self._counts)
        self._count += stop - start
        # every counted value is below limit, so it already has a bin: no growth needed
        self._abs_max = max(self._abs_max, top)
        return stop

    def _reciprocal(self) -> float:
        return bin_factor(self._width, self._shift)

    def fix_grid_from(self, x) -> None:
        """Set the grid from one batch exactly as update() would, counting nothing (a shard takes
        its grid from batches other shards count). A grid already set is left as it is."""
        if self._width is not None:
            return
        arr = np.asarray(x)
        flat = arr.reshape(-1)
        if flat.size:
            abuf = np.empty(min(_CHUNK, flat.size), dtype=_work_dtype(arr.dtype))
            self.fix_grid(self._finite_abs_max(flat, abuf))

    @staticmethod
    def _finite_abs_max(flat: np.ndarray, abuf: np.ndarray) -> float:
        best = 0.0
        for start in range(0, flat.size, _CHUNK):
            chunk = flat[start : start + _CHUNK]
            a = abuf[: chunk.size]
            np.abs(chunk, out=a, dtype=abuf.dtype)
            m = a.max()
            if not np.isfinite(m):
                a = a[np.isfinite(a)]
                m = a.max() if a.size else 0.0
            best = max(best, float(m))
        return best

    def _count_chunk(self, chunk: np.ndarray, abuf: np.ndarray, ibuf: np.ndarray) -> None:
        a = abuf[: chunk.size]
        np.abs(chunk, out=a, dtype=abuf.dtype)
        m = a.max()  # NaN if any NaN: one cheap check keeps the finite path fast
        if not np.isfinite(m):
            finite = np.isfinite(a)
            nans = int(np.count_nonzero(np.isnan(a)))
            self._nan_count += nans
            self._inf_count += a.size - int(np.count_nonzero(finite)) - nans
            a = a[finite]
            if a.size == 0:
                return
            m = a.max()
        self._count += a.size
        if self._width is None:
            # No grid yet means every finite value so far is zero: bin 0 on any grid.
            self._counts[0] += a.size
            return
        if m > self._abs_max:
            self._abs_max = float(m)
            self._fit_range()
        count_numpy(a, self._reciprocal(), self._counts, ibuf)

    def _fit_range(self) -> None:
        """Coarsen and/or extend the bins so that abs_max has a bin (exactly)."""
        width = self._width
        shift = self._shift
        # Start just below the answer (log2 of abs_max / width from the float
        # exponents, which cannot overflow) and step up.
        if self._abs_max > 0:
            exponent = math.frexp(self._abs_max)[1] - math.frexp(width)[1]
            shift = max(shift, exponent - self._max_bins.bit_length() - 1)
        while bin_index(self._abs_max, width, shift) + 1 > self._max_bins:
            shift += 1
        if shift > self._shift:
            self._counts = coarsen(self._counts, shift - self._shift)
            self._shift = shift
        needed = max(
            -(-self._bins >> shift),  # ceil(bins / 2**shift)
            bin_index(self._abs_max, width, shift) + 1,
        )
        if needed > len(self._counts):
            grown = np.zeros(needed, dtype=np.int64)
            grown[: len(self._counts)] = self._counts
            self._counts = grown

    # ----------------------------------------------------------------- merge
    def merge(self, other: AbsHistogram) -> None:
        """Add another collector's counts: the result equals one collector that saw both.

        Both must be on the same grid (same bins, max_bins and base width); a
        collector that only ever saw zeros fits any grid.
        """
        if not isinstance(other, AbsHistogram):
            raise TypeError(f"cannot merge {type(other).__name__} into AbsHistogram")
        if (self._bins, self._max_bins) != (other._bins, other._max_bins):
            raise QtoolError(
                f"cannot merge histograms with different bin counts "
                f"({self._bins}/{self._max_bins} vs {other._bins}/{other._max_bins})"
            )
        if self._width is not None and other._width is not None and self._width != other._width:
            raise QtoolError(
                f"cannot merge histograms on different grids (bin width {self._width!r} vs "
                f"{other._width!r}); collect every shard on the grid of the first batch"
            )
        if self._count + other._count > MAX_COUNT:
            raise QtoolError(f"merged histograms would count {self._count + other._count} values, "
                             f"more than 2**53")
        self._count += other._count
        self._nan_count += other._nan_count
        self._inf_count += other._inf_count
        if other._width is None:
            self._counts[0] += other._counts[0]  # only zeros
            return
        if self._width is None:
            zeros = self._counts[0]
            self._width = other._width
            self._shift = other._shift
            self._counts = other._counts.copy()
            self._counts[0] += zeros
            self._abs_max = other._abs_max
            return
        self._abs_max = max(self._abs_max, other._abs_max)
        if other._shift > self._shift:
            self._counts = coarsen(self._counts, other._shift - self._shift)
            self._shift = other._shift
        self._fit_range()
        theirs = coarsen(other._counts, self._shift - other._shift)
        self._counts[: len(theirs)] += theirs

    def copy(self) -> AbsHistogram:
        return AbsHistogram.from_arrays(self.to_arrays())

    # ----------------------------------------------------------- persistence
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays (for an .npz, no pickle) that from_arrays restores exactly."""
        return histogram_to_arrays(self)

    @classmethod
    def from_arrays(cls, arrays) -> AbsHistogram:
        """Rebuild a collector from to_arrays() output; a QtoolError if it is inconsistent."""
        return histogram_from_arrays(cls, arrays)

    def restore(self, width: float | None, shift: int, abs_max: float, counts: np.ndarray,
                nan_count: int, inf_count: int) -> None:
        """Take a state read back by histogram_from_arrays, which has checked it."""
        self._width, self._shift, self._abs_max = width, shift, abs_max
        self._counts = counts.astype(np.int64)
        self._count = int(counts.sum())
        self._nan_count, self._inf_count = int(nan_count), int(inf_count)
