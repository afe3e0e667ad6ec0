"""The grid of an |x| histogram: bin widths, bin indices and merged bins (see qtool.calib.histogram's
"Grid" and "Growth"), shared by counting and by reading a histogram back from its arrays."""

from __future__ import annotations

import math

import numpy as np


def grid_width(amax: float, bins: int) -> float:
    """The bin width for a first batch whose largest |x| is amax (> 0, finite).

    amax / bins rounded up until floor(amax * (1 / width)) == bins - 1, so amax
    lands in the last of `bins` left-closed bins. At least the smallest normal
    float64, so that 1 / width is finite.
    """
    width = max(amax / bins, np.finfo(np.float64).tiny)
    while bin_index(amax, width) >= bins:
        width = math.nextafter(width, math.inf)
    return width


def bin_factor(width: float, shift: int = 0) -> float:
    """(1 / width) * 2**-shift: the factor that turns |x| into its bin index (see module doc)."""
    return math.ldexp(1.0 / width, -shift)


def bin_index(value: float, width: float, shift: int = 0) -> int:
    """The bin of one |x| on the grid of base width `width` merged by 2**shift."""
    return math.floor(value * bin_factor(width, shift))


def coarsen(counts: np.ndarray, by: int) -> np.ndarray:
    """Sum groups of 2**by adjacent bins (bin k -> k >> by), exactly."""
    if by == 0:
        return counts.copy()
    if by >= len(counts).bit_length():  # every bin collapses into bin 0
        return np.array([counts.sum()], dtype=np.int64)
    group = 1 << by
    padded = np.zeros(-(-len(counts) // group) * group, dtype=np.int64)
    padded[: len(counts)] = counts
    return padded.reshape(-1, group).sum(axis=1)
