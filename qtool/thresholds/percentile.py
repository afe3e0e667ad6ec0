"""percentile: clip the top (100 - p) % of |x|."""

from __future__ import annotations

from qtool.thresholds.common import check_fraction, mass_amax

DEFAULT_PERCENTILE = 99.99


def percentile_amax(hist, edges, *, percentile: float = DEFAULT_PERCENTILE) -> float:
    """The upper edge of the first bin where the CDF of |x| reaches p / 100.

    No interpolation inside the bin: the returned amax clips at most (100 - p) %
    of the values. p = 100 gives the max method's histogram value. Monotone in p.
    """
    p = check_fraction("percentile", percentile, low=0.0, high=100.0)
    return mass_amax(hist, edges, p / 100.0)
