"""coverage: the two-pointer histogram-coverage range, on a histogram of |x|.

On a signed histogram the method keeps a window [left, right] of bins, starts
with the whole range and repeatedly moves inward the pointer whose end bin
holds fewer values, as long as the window still covers at least `coverage` of
all values. The clipping budget (1 - coverage) is thus spent on the thinner
tail first, and empty bins at either end cost nothing.

A histogram of |x| has a single tail. Its lower end is |x| = 0, and small
magnitudes are never clipped by a symmetric range, so the left pointer stays on
bin 0 and only the right pointer moves: it walks down, dropping bins, while the
mass left inside stays >= coverage * total. The result is the upper edge of the
smallest prefix of bins holding that mass. On |x| this is the rule of the
percentile method at p = 100 * coverage (the same value whenever
(100 * coverage) / 100 rounds back to coverage); it is kept under its own name
and parameter for configurations written for the two-sided method.
"""

from __future__ import annotations

from qtool.thresholds.common import check_fraction, mass_amax

DEFAULT_COVERAGE = 0.9999


def coverage_amax(hist, edges, *, coverage: float = DEFAULT_COVERAGE) -> float:
    """Upper edge of the smallest prefix of bins holding >= coverage of all values."""
    return mass_amax(hist, edges, check_fraction("coverage", coverage, low=0.0, high=1.0))
