"""mse: the amax with the least squared quantize-dequantize error over the histogram.

Model: symmetric INT8, scale s = amax / 127; each bin's values are represented
by its centre c; the error of a bin is count * (c - s * min(rint(c / s), 127))**2
(round half to even, as the Q/DQ nodes do). That covers both the rounding error
inside the range and the clipping error of |x| > amax. The histogram holds no
signs, so negative values are clipped at -127 * s like positive ones (the -128
code is ignored).

Candidates: amax = edges[k] for k = 1 .. L, L one past the last non-empty bin
(every bin edge up to the max; larger values clip nothing and only coarsen the
steps). Past MAX_CANDIDATES edges, every stride-th edge (stride = ceil(L /
MAX_CANDIDATES)) plus edges[L] is tried, which bounds the cost for histograms
that grew far beyond their first range. Errors within a relative
TIE_TOLERANCE of the minimum are ties; the smallest amax wins.
"""

from __future__ import annotations

import numpy as np

from qtool.thresholds.common import checked_histogram, empty_amax, occupied_end

MAX_CANDIDATES = 2048
TIE_TOLERANCE = 1e-9
_QMAX = 127.0
# Candidate rows evaluated per step (rows x non-empty bins temporaries).
_BLOCK_ELEMENTS = 1 << 16


def mse_candidates(end: int) -> np.ndarray:
    """Edge indices tried for a histogram whose last non-empty bin is end - 1."""
    stride = -(-end // MAX_CANDIDATES)
    picked = np.arange(stride, end + 1, stride, dtype=np.int64)
    if picked[-1] != end:
        picked = np.append(picked, end)
    return picked


def mse_amax(hist, edges) -> float:
    """amax minimising the squared-error model described in the module doc."""
    counts, edges = checked_histogram(hist, edges)
    end = occupied_end(counts)
    if end == 0:
        return empty_amax(edges)
    candidates = mse_candidates(end)
    errors = squared_errors(counts, edges, edges[candidates])
    best = int(np.flatnonzero(errors <= errors.min() * (1.0 + TIE_TOLERANCE))[0])
    return float(edges[candidates[best]])


def squared_errors(counts: np.ndarray, edges: np.ndarray, amaxes: np.ndarray) -> np.ndarray:
    """Total squared quantize-dequantize error of the histogram for each amax."""
    nonzero = np.flatnonzero(counts)
    weight = counts[nonzero].astype(np.float64)
    centre = (edges[nonzero] + edges[nonzero + 1]) / 2
    out = np.empty(len(amaxes))
    rows = max(1, _BLOCK_ELEMENTS // max(1, nonzero.size))
    for start in range(0, len(amaxes), rows):
        scale = (amaxes[start : start + rows] / _QMAX)[:, None]
        q = np.rint(centre[None, :] / scale)
        np.minimum(q, _QMAX, out=q)
        q *= scale
        np.subtract(centre[None, :], q, out=q)
        np.square(q, out=q)
        out[start : start + len(scale)] = q @ weight
    return out
