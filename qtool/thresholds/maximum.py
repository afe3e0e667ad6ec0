"""max: the largest |x|, nothing clipped."""

from __future__ import annotations

import math

from qtool.errors import QtoolError
from qtool.thresholds.common import checked_histogram, empty_amax, occupied_end


def max_amax(hist, edges, *, abs_max: float | None = None) -> float:
    """The exact abs_max when given and positive, else the upper edge of the last
    non-empty bin (the smallest grid value that clips nothing)."""
    counts, edges = checked_histogram(hist, edges)
    if abs_max is not None:
        abs_max = float(abs_max)
        if not math.isfinite(abs_max) or abs_max < 0 or abs_max > edges[-1]:
            raise QtoolError(f"abs_max {abs_max!r} lies outside the histogram [0, {edges[-1]!r}]")
        if abs_max > 0:
            return abs_max
    end = occupied_end(counts)
    return float(edges[end]) if end else empty_amax(edges)
