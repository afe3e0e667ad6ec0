"""Histogram views for the report: bins merged for plotting. The cost of a threshold (clipped
mass, estimated SQNR) lives in qtool.thresholds.cost, beside the methods that pick thresholds."""

from __future__ import annotations

import numpy as np

from qtool.thresholds.common import checked_histogram


def display_bins(hist, edges, max_bins: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges for a plot: bins up to the last non-empty one, merged in equal groups so
    that at most max_bins remain (sums are exact; the last group may be narrower)."""
    counts, edges = checked_histogram(hist, edges)
    nonzero = np.flatnonzero(counts)
    end = int(nonzero[-1]) + 1 if nonzero.size else 1
    group = -(-end // max_bins)
    starts = np.arange(0, end, group)
    merged = np.add.reduceat(counts[:end], starts)
    merged_edges = np.append(edges[starts], edges[end])
    return merged, merged_edges
