"""Threshold search: pure functions over (hist, edges) -> amax, one per method.

Each method takes a histogram of |x| (counts per bin and the bin edges, see
qtool.thresholds.common) and returns a strictly positive finite amax (python
float) no larger than the histogram range. compute_amax() picks a method by
name, checks its parameters and clamps the result to the exact largest |x|
when that is known; a histogram with a single occupied bin (a constant
tensor) gets that largest |x| from every method.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import numpy as np

from qtool.errors import QtoolError
from qtool.thresholds.common import checked_histogram
from qtool.thresholds.coverage import DEFAULT_COVERAGE, coverage_amax
from qtool.thresholds.entropy import DEFAULT_LEVELS, entropy_amax
from qtool.thresholds.maximum import max_amax
from qtool.thresholds.mse import mse_amax
from qtool.thresholds.percentile import DEFAULT_PERCENTILE, percentile_amax

METHODS: dict[str, Callable[..., float]] = {
    "entropy": entropy_amax,
    "max": max_amax,
    "percentile": percentile_amax,
    "mse": mse_amax,
    "coverage": coverage_amax,
}

# The tunable parameters of each method and their defaults (abs_max, a fact
# about the data rather than a setting, is passed by compute_amax).
DEFAULT_PARAMS: dict[str, dict[str, float | int]] = {
    "entropy": {"levels": DEFAULT_LEVELS},
    "max": {},
    "percentile": {"percentile": DEFAULT_PERCENTILE},
    "mse": {},
    "coverage": {"coverage": DEFAULT_COVERAGE},
}


def compute_amax(method: str, hist, edges, *, abs_max: float | None = None, **params) -> float:
    """amax of `method` for the histogram (hist, edges).

    abs_max, the exact largest finite |x| (AbsHistogram.abs_max), is optional:
    the max method returns it as is, and every other method's result is
    clamped to it (a threshold above the largest value only wastes range).
    0 or None means unknown. Unknown methods or parameters raise QtoolError.
    """
    function = METHODS.get(method)
    if function is None:
        raise QtoolError(f"unknown threshold method {method!r}; choose one of {', '.join(METHODS)}")
    accepted = set(DEFAULT_PARAMS[method])
    unknown = sorted(set(params) - accepted)
    if unknown:
        allowed = ", ".join(sorted(accepted)) or "none"
        raise QtoolError(
            f"threshold method {method!r} takes no parameter {', '.join(unknown)} "
            f"(parameters: {allowed})"
        )
    if abs_max is not None:
        abs_max = float(abs_max)
        _, checked_edges = checked_histogram(hist, edges)
        if not math.isfinite(abs_max) or abs_max < 0 or abs_max > checked_edges[-1]:
            raise QtoolError(
                f"abs_max {abs_max!r} lies outside the histogram [0, {checked_edges[-1]!r}]"
            )
    if abs_max and np.count_nonzero(hist) == 1:
        # every value lies within one bin of abs_max (a constant tensor, say): abs_max itself
        # represents the largest exactly, where a method working on bin centres or edges
        # would round it away
        return abs_max
    if "abs_max" in inspect.signature(function).parameters:
        params["abs_max"] = abs_max
    amax = function(hist, edges, **params)
    if abs_max:
        amax = min(amax, abs_max)
    return amax


__all__ = [
    "DEFAULT_PARAMS",
    "METHODS",
    "compute_amax",
    "coverage_amax",
    "entropy_amax",
    "max_amax",
    "mse_amax",
    "percentile_amax",
]
