"""Input checks and conventions shared by every threshold method.

A histogram here is (hist, edges): counts of |x| per bin and the bin edges,
edges[0] == 0, strictly increasing, len(edges) == len(hist) + 1. Every method
returns a strictly positive finite amax no larger than edges[-1]:

* an empty histogram (no counts at all) gives edges[1], the smallest threshold
  the grid offers (AbsHistogram without a grid uses a tiny placeholder width,
  so an all-zero tensor gets a tiny positive amax rather than 0 or NaN);
* no method proposes a threshold above the upper edge of the last non-empty
  bin: beyond it nothing is clipped, so a larger amax only coarsens the levels.
"""

from __future__ import annotations

import numpy as np

from qtool.errors import QtoolError


def checked_histogram(hist, edges) -> tuple[np.ndarray, np.ndarray]:
    """(counts as int64, edges as float64), or a QtoolError naming what is wrong."""
    counts = np.asarray(hist)
    edges = np.asarray(edges)
    if counts.ndim != 1 or counts.size == 0:
        raise QtoolError(f"histogram must be a non-empty 1-D array, got shape {counts.shape}")
    if counts.dtype.kind == "f":
        if not np.all(np.isfinite(counts)) or np.any(counts != np.floor(counts)):
            raise QtoolError("histogram counts must be whole numbers")
    elif counts.dtype.kind not in "iu":
        raise QtoolError(f"histogram counts must be numbers, got {counts.dtype}")
    if np.any(counts < 0):
        raise QtoolError("histogram counts must not be negative")
    if counts.sum(dtype=np.float64) > 2.0**53:  # int64 sums would overflow, float64 ones round
        raise QtoolError("histogram counts add up to more than 2**53 values")
    if edges.shape != (counts.size + 1,) or edges.dtype.kind not in "iuf":
        raise QtoolError(
            f"histogram edges must be {counts.size + 1} numbers for {counts.size} bins, "
            f"got shape {edges.shape}"
        )
    edges = edges.astype(np.float64)
    if edges[0] != 0 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise QtoolError("histogram edges must start at 0 and increase strictly")
    return counts.astype(np.int64), edges


def occupied_end(counts: np.ndarray) -> int:
    """Index one past the last non-empty bin (0 for an empty histogram)."""
    nonzero = np.flatnonzero(counts)
    return int(nonzero[-1]) + 1 if nonzero.size else 0


def empty_amax(edges: np.ndarray) -> float:
    """The amax of a histogram without counts: the first bin's upper edge."""
    return float(edges[1])


def first_index_at_mass(counts: np.ndarray, fraction: float) -> int:
    """Smallest bin index r with sum(counts[:r + 1]) >= fraction * sum(counts).

    The target fraction * total is one float64 product; the comparison with the
    integer running sum is exact (against its ceiling).
    """
    total = int(counts.sum())
    need = min(max(int(np.ceil(fraction * float(total))), 1), total)
    return int(np.searchsorted(np.cumsum(counts), need, side="left"))


def mass_amax(hist, edges, fraction: float) -> float:
    """Upper edge of the smallest prefix of bins holding >= fraction of all values (no
    interpolation inside the bin); the empty-histogram amax when there are no values."""
    counts, edges = checked_histogram(hist, edges)
    if not counts.any():
        return empty_amax(edges)
    return float(edges[first_index_at_mass(counts, fraction) + 1])


def check_fraction(name: str, value, *, low: float, high: float) -> float:
    """A float in (low, high], or a QtoolError."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise QtoolError(f"{name} must be a number, got {value!r}") from None
    if not (low < value <= high):
        raise QtoolError(f"{name} must be in ({low:g}, {high:g}], got {value!r}")
    return value
