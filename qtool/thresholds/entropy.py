"""entropy: the KL-divergence threshold of TensorRT's EntropyCalibrator2.

Bin 0 first takes the count of bin 1 when bin 1 is not empty. Bin 0 holds the exact zeros (the
dead half of a ReLU, padding), often most of the mass; zero is represented exactly at any scale,
so they say nothing about the threshold, yet left as they are they dominate the divergence and
drive the search to the smallest candidate (a ReLU6 output calibrated to amax 0.375 instead of
about 6). pytorch-quantization's reference calibrator makes the same substitution. When bin 1 is
empty the data is discrete near zero (e.g. pixels in steps of 1/16): the zeros then sit alone in
their chunk, distort nothing, and are kept, since without them a single occupied bin can hold all
the kept mass and score a divergence of zero at a threshold that clips nearly everything.

For a candidate i (bins kept), with h the counts and T = sum(h):

* P = h[:i], with the outlier mass sum(h[i:]) added to P[i-1];
* Q: h[:i] merged into `levels` (128) chunks; bin j belongs to chunk
  floor(levels * j / i), i.e. chunk c spans bins ceil(c*i/levels) ..
  ceil((c+1)*i/levels) - 1 (the partition linspace(0, i, levels + 1) describes,
  computed in integers; chunk sizes differ by at most one when levels does not
  divide i). Each chunk's mass is spread evenly over its non-empty bins of
  h[:i]; empty bins stay empty;
* KL(P || Q) on P / sum(P) and Q / sum(Q); terms with P = 0 add nothing. A bin
  with P > 0 and Q = 0 can only be the last one (outliers piled onto an empty
  bin); Q cannot represent that mass, so the candidate's divergence is +inf.

Candidates are i = levels .. L, L one past the last non-empty bin (larger i
clip nothing and only coarsen the chunks), so the search also covers the bins a
streaming histogram appended past its first range. amax = edges[i] of the
minimising i; divergences within TIE_TOLERANCE of the minimum count as equal
and the smallest such i wins (floating-point noise must not pick the
threshold). With L <= levels every bin can keep its own level: amax = edges[L],
the max method's value.

All candidates are evaluated together from prefix sums (no loop per
candidate): per chunk only its mass M, its non-empty bin count K and its
sum of h*log(h) are needed, and sum over the chunk of h*log(h / (M/K)) is the
part of T * KL that does not depend on the last bin.
"""

from __future__ import annotations

import numpy as np

from qtool.errors import QtoolError
from qtool.thresholds.common import checked_histogram, empty_amax, occupied_end

DEFAULT_LEVELS = 128
# Divergences (nats) this close to the minimum are ties; the computed values
# agree with a direct per-candidate evaluation to about 1e-14.
TIE_TOLERANCE = 1e-12
# Candidates evaluated per step: bounds the temporary arrays to a few MB.
_BLOCK = 512


def entropy_amax(hist, edges, *, levels: int = DEFAULT_LEVELS) -> float:
    """amax minimising KL(P || Q) over the candidates described in the module doc."""
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 2:
        raise QtoolError(f"entropy levels must be an integer >= 2, got {levels!r}")
    levels = int(levels)
    counts, edges = checked_histogram(hist, edges)
    counts = without_zero_spike(counts)
    end = occupied_end(counts)
    if end == 0:
        return empty_amax(edges)
    if end <= levels:
        return float(edges[end])
    divergence = kl_divergences(counts[:end], levels)
    best = int(np.flatnonzero(divergence <= divergence.min() + TIE_TOLERANCE)[0])
    return float(edges[levels + best])


def without_zero_spike(counts: np.ndarray) -> np.ndarray:
    """A copy of the counts with bin 0 given the count of a non-empty bin 1 (see the module doc)."""
    counts = counts.copy()
    if len(counts) > 1 and counts[1] > 0:
        counts[0] = counts[1]
    return counts


def kl_divergences(counts: np.ndarray, levels: int = DEFAULT_LEVELS) -> np.ndarray:
    """KL(P || Q) for every candidate i = levels .. len(counts), in that order.

    counts: int64, len(counts) >= levels, with a non-empty last bin.
    """
    n = len(counts)
    total = float(counts.sum())
    h = counts.astype(np.float64)
    mass = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=mass[1:])
    occupied = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts > 0, out=occupied[1:])
    hlogh = np.zeros(n + 1)
    safe = np.where(h > 0, h, 1.0)
    hlogh[1:] = _accurate_cumsum(h * np.log(safe))

    chunk = np.arange(levels + 1, dtype=np.int64)
    candidates = np.arange(levels, n + 1, dtype=np.int64)
    out = np.empty(candidates.size)
    for start in range(0, candidates.size, _BLOCK):
        i = candidates[start : start + _BLOCK]
        bounds = (i[:, None] * chunk[None, :] + (levels - 1)) // levels  # ceil(c*i/levels)
        m = np.diff(mass[bounds], axis=1)
        k = np.diff(occupied[bounds], axis=1)
        mf = m.astype(np.float64)
        spread = np.log(np.divide(mf, k, out=np.ones_like(mf), where=m > 0))
        # Per chunk: sum of h*log(h) - M*log(M/K) = sum of h*log(h / (M/K)).
        within = (np.diff(hlogh[bounds], axis=1) - mf * spread).sum(axis=1)

        kept = mass[i].astype(np.float64)  # sum(h[:i])
        last = h[i - 1]
        piled = last + (total - kept)  # P[i-1]
        m_last, k_last = mf[:, -1], k[:, -1]
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(kept > 0, np.log(kept / total), 0.0)
            tkl = within + (kept - last) * share
            has_last = last > 0
            own = np.where(has_last, last * np.log(last * k_last / m_last), 0.0)
            piled_term = np.where(
                has_last, piled * np.log(piled * k_last * kept / (total * m_last)), 0.0
            )
        tkl = tkl - own + piled_term
        tkl[~has_last & (piled > 0)] = np.inf
        out[start : start + i.size] = tkl / total
    return out


def _accurate_cumsum(values: np.ndarray) -> np.ndarray:
    """Running sums with the rounding error of each step added back (TwoSum).

    np.cumsum adds left to right, so each partial sum's exact error is known;
    the corrected sums keep the chunk differences accurate when the prefix
    grows large.
    """
    sums = np.cumsum(values)
    before = np.concatenate(([0.0], sums[:-1]))
    virtual = sums - before
    error = (before - (sums - virtual)) + (values - virtual)
    return sums + np.cumsum(error)
