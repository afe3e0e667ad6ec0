"""Clipped mass, estimated SQNR and display bins of the report against slow reference loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtool.report.histstats import display_bins
from qtool.thresholds.cost import (
    clipped_fraction,
    estimated_sqnr_db,
    poor_thresholds,
    signal_power,
)


def ref_clipped(hist, edges, amax, abs_max=None):
    """Values in bins whose lower edge is at or above amax, one bin at a time."""
    total = sum(int(c) for c in hist)
    if total == 0 or (abs_max is not None and amax >= abs_max):
        return 0.0
    clipped = 0
    for j, count in enumerate(hist):
        if edges[j] >= amax:
            clipped += int(count)
    return clipped / total


def round_half_even(x: float) -> float:
    lower = math.floor(x)
    diff = x - lower
    if diff > 0.5:
        return lower + 1.0
    if diff < 0.5:
        return float(lower)
    return float(lower) if lower % 2 == 0 else lower + 1.0


def ref_sqnr_db(hist, edges, amax):
    """Every value at its bin centre, quantized one at a time with scale amax / 127."""
    scale = amax / 127.0
    signal = noise = 0.0
    for j, count in enumerate(hist):
        centre = (edges[j] + edges[j + 1]) / 2
        q = min(round_half_even(centre / scale), 127.0)
        signal += int(count) * centre * centre
        noise += int(count) * (centre - q * scale) ** 2
    if signal == 0:
        return math.nan
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise)


def test_clipped_fraction_counts_bins_at_and_above_the_threshold():
    hist = np.array([5, 3, 0, 2], dtype=np.int64)
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    assert clipped_fraction(hist, edges, 1.0) == 5 / 10   # bins 1.. (lower edges 1, 2, 3)
    assert clipped_fraction(hist, edges, 3.0) == 2 / 10
    assert clipped_fraction(hist, edges, 2.5) == 2 / 10   # inside bin 2: a lower bound
    assert clipped_fraction(hist, edges, 4.0) == 0.0
    # At or above the exact largest |x| nothing is clipped, wherever that falls in a bin.
    assert clipped_fraction(hist, edges, 3.2, abs_max=3.2) == 0.0
    assert clipped_fraction(hist, edges, 3.0, abs_max=3.2) == 2 / 10
    assert clipped_fraction(np.zeros(4, dtype=np.int64), edges, 1.0) == 0.0


def test_sqnr_of_a_hand_computed_histogram():
    # One bin [0, 2) with centre 1 and amax 127: scale 1, centre exact -> no noise.
    assert estimated_sqnr_db(np.array([4]), np.array([0.0, 2.0]), 127.0) == math.inf
    # Centre 1, amax 0.5 clips to 0.5: noise 0.25 per value, signal 1 -> 10 log10(4).
    assert estimated_sqnr_db(np.array([4]), np.array([0.0, 2.0]), 0.5) == pytest.approx(
        10 * math.log10(4), rel=1e-12)
    assert math.isnan(estimated_sqnr_db(np.array([0, 0]), np.array([0.0, 1.0, 2.0]), 1.0))
    assert signal_power(np.array([1, 2]), np.array([0.0, 2.0, 4.0])) == 1 + 2 * 9


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=2, max_size=300),
       st.floats(0.001, 10.0), st.floats(0.01, 1.5))
def test_stats_match_reference_loops(counts, width, amax_fraction):
    hist = np.array(counts, dtype=np.int64)
    edges = np.arange(len(hist) + 1, dtype=np.float64) * width
    amax = float(edges[-1]) * amax_fraction
    assert clipped_fraction(hist, edges, amax) == ref_clipped(hist, edges, amax)
    got = estimated_sqnr_db(hist, edges, amax)
    want = ref_sqnr_db(hist, edges, amax)
    if math.isnan(want) or math.isinf(want):
        assert got == want or (math.isnan(got) and math.isnan(want))
    else:
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_sqnr_is_highest_near_the_mse_threshold_and_falls_when_clipping():
    rng = np.random.default_rng(0)
    values = np.abs(rng.normal(size=200_000))
    hist, edges = np.histogram(values, bins=2048, range=(0, values.max() * 1.0001))
    wide = estimated_sqnr_db(hist, edges, float(edges[-1]))
    tight = estimated_sqnr_db(hist, edges, 0.5)
    assert tight < wide
    assert clipped_fraction(hist, edges, 0.5) > 0.5


def test_display_bins_merge_exactly_up_to_the_last_nonempty_bin():
    hist = np.zeros(2048, dtype=np.int64)
    hist[[0, 10, 700, 1000]] = [7, 1, 2, 3]
    edges = np.arange(2049, dtype=np.float64) * 0.5
    counts, merged_edges = display_bins(hist, edges, max_bins=256)
    assert counts.sum() == hist.sum()
    assert len(counts) <= 256 and len(merged_edges) == len(counts) + 1
    assert merged_edges[0] == 0 and merged_edges[-1] == edges[1001]
    group = 4  # ceil(1001 / 256)
    for k, count in enumerate(counts):
        assert count == hist[k * group:min((k + 1) * group, 1001)].sum()
    # An empty histogram keeps its first bin.
    counts, merged_edges = display_bins(np.zeros(8, dtype=np.int64), np.arange(9.0))
    assert counts.tolist() == [0] and merged_edges.tolist() == [0.0, 1.0]


def test_poor_thresholds_name_the_costly_tensors_worst_first():
    from qtool.calib.histogram import AbsHistogram

    values = np.linspace(-10, 10, 20001, dtype=np.float32)
    hists = {}
    for name in ("fine", "clipped", "coarse"):
        hists[name] = AbsHistogram(2048)
        hists[name].update(values)
    # 5 clips half the values and 10 none; 1000 clips none either, but its steps (7.9) are
    # coarse against values of at most 10: a poor SQNR
    amax = {"fine": 10.0, "clipped": 5.0, "coarse": 1000.0}
    poor = poor_thresholds(hists, amax)
    assert [item.tensor for item in poor] == ["coarse", "clipped"]
    assert poor[1].clipped == pytest.approx(0.5, abs=0.01)
    assert poor[0].sqnr_db < 15
    assert poor_thresholds(hists, {"fine": 10.0}) == []
