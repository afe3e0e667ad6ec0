"""Property-based fuzzing of the numerics chain: streaming histograms (any batching, sharding and
merge order), their files, threshold search on the histograms real data produces, and the INT8
scales and rounding that follow. Values include NaN, +/-Inf, zeros, denormals and outliers that
force the bins to coarsen.

Budget: fixed and derandomised in CI; QTOOL_FUZZ_LONG=1 (`make fuzz`) runs many more cases.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qtool.calib.histogram import AbsHistogram
from qtool.calib.thresholding import amax_from_histograms
from qtool.errors import QtoolError
from qtool.quantize.scales import MIN_SCALE, QMAX, quantize_int8, scale_from_amax
from qtool.thresholds import METHODS, compute_amax
from tests.helpers.fuzzing import fuzz_settings

SPECIAL = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-40, -1e-45, 3.0e38, -1.0], np.float32)


def make_batches(seed: int, count: int, scale_exp: int, special: float) -> list[np.ndarray]:
    """float32 batches from a seed: sizes 0..40, values around 10**scale_exp, some all-zero
    batches, and each value special (NaN, Inf, zero, denormal, huge) with probability `special`."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        size = int(rng.integers(0, 41))
        batch = (rng.standard_normal(size) * 10.0**scale_exp).astype(np.float32)
        if rng.random() < 0.15:
            batch[:] = 0
        mask = rng.random(size) < special
        batch[mask] = rng.choice(SPECIAL, int(mask.sum()))
        out.append(batch)
    return out


batches = st.builds(make_batches, st.integers(0, 2**63 - 1), st.integers(1, 6),
                    st.integers(-40, 35), st.sampled_from([0.0, 0.05, 0.3]))


def state(h: AbsHistogram):
    return (h.hist.tolist(), h.edges.tolist(), h.abs_max, h.count, h.nan_count, h.inf_count,
            h.shift)


def whole(batches_, bins, max_bins) -> AbsHistogram:
    h = AbsHistogram(bins, max_bins)
    for batch in batches_:
        h.update(batch)
    return h


def finite(batches_) -> np.ndarray:
    flat = np.concatenate([b.ravel() for b in batches_]).astype(np.float64)
    return flat[np.isfinite(flat)]


# -- histograms ------------------------------------------------------------------------------

@fuzz_settings(ci=150, long=5000)
@given(batches=batches, bins=st.integers(1, 64), factor=st.integers(1, 4))
def test_fuzz_histogram_counts_are_exact(batches, bins, factor):
    h = whole(batches, bins, bins * factor)
    values = finite(batches)
    flat = np.concatenate([b.ravel() for b in batches])
    assert h.count == values.size == int(h.hist.sum())
    assert h.nan_count == int(np.isnan(flat).sum())
    assert h.inf_count == int(np.isinf(flat).sum())
    assert h.abs_max == (float(np.abs(values).max()) if values.size else 0.0)
    assert len(h.hist) <= h.max_bins
    edges = h.edges
    assert edges[0] == 0 and np.all(np.diff(edges) > 0)
    if h.has_grid:
        # the largest value has a bin (bins * width may round to exactly abs_max: still its bin)
        assert h.abs_max <= edges[-1]
        factor = math.ldexp(1.0 / h.base_width, -h.shift)
        assert math.floor(h.abs_max * factor) == len(h.hist) - 1
        expected = np.bincount(np.floor(np.abs(values).astype(np.float64) * factor)
                               .astype(np.int64), minlength=len(h.hist))
        assert h.hist.tolist() == expected.tolist()


@fuzz_settings(ci=120, long=4000)
@given(batches=batches, shards=st.integers(1, 4), bins=st.integers(1, 48),
       factor=st.integers(1, 3), order=st.randoms(use_true_random=False))
def test_fuzz_shards_merge_to_one_run_in_any_order(batches, shards, bins, factor, order):
    """Calibration shards: every shard fixes the grid from batch 0, counts its own batches; the
    merged shards equal one collector that saw every batch, whatever the merge order."""
    one = whole(batches, bins, bins * factor)
    parts = []
    for k in range(shards):
        h = AbsHistogram(bins, bins * factor)
        for index, batch in enumerate(batches):
            if index % shards == k:
                h.update(batch)
            elif not h.has_grid:  # the runner's rule: others' batches only fix a missing grid
                finite_ = batch[np.isfinite(batch)]
                h.fix_grid(float(np.abs(finite_).max()) if finite_.size else 0.0)
        parts.append(h)
    order.shuffle(parts)
    merged = parts[0]
    for other in parts[1:]:
        merged.merge(other)
    assert state(merged) == state(one)


@fuzz_settings(ci=120, long=4000)
@given(batches=batches, bins=st.integers(1, 64), factor=st.integers(1, 4))
def test_fuzz_histogram_file_round_trip_is_exact(batches, bins, factor):
    h = whole(batches, bins, bins * factor)
    back = AbsHistogram.from_arrays(h.to_arrays())
    assert state(back) == state(h)
    back.update(np.array([1.5, -2.5], np.float32))
    h.update(np.array([1.5, -2.5], np.float32))
    assert state(back) == state(h)  # the restored collector keeps streaming identically


# -- thresholds on real histograms ----------------------------------------------------------

@fuzz_settings(ci=60, long=3000)
@given(batches=batches, bins=st.integers(128, 300))
def test_fuzz_every_method_stays_within_the_data(batches, bins):
    h = whole(batches, bins, None)
    for method in METHODS:
        for amax in amax_from_histograms({"t": h}, method).values():
            assert isinstance(amax, float) and math.isfinite(amax) and amax > 0, method
            if h.abs_max > 0:
                assert amax <= h.abs_max, method  # never beyond the largest value seen
            else:
                assert amax <= h.edges[1]  # no data range: the tiny placeholder
    top = compute_amax("max", h.hist, h.edges, abs_max=h.abs_max)
    assert top == (h.abs_max or h.edges[1])
    for method in ("entropy", "mse", "percentile", "coverage"):
        assert compute_amax(method, h.hist, h.edges, abs_max=h.abs_max) <= top


@fuzz_settings(ci=100, long=3000)
@given(batches=batches, p=st.floats(0.001, 100.0), q=st.floats(0.001, 100.0))
def test_fuzz_percentile_and_coverage_are_monotone(batches, p, q):
    h = whole(batches, 256, None)
    low, high = sorted((p, q))
    a = compute_amax("percentile", h.hist, h.edges, abs_max=h.abs_max, percentile=low)
    b = compute_amax("percentile", h.hist, h.edges, abs_max=h.abs_max, percentile=high)
    assert a <= b
    c = compute_amax("coverage", h.hist, h.edges, abs_max=h.abs_max, coverage=low / 100)
    d = compute_amax("coverage", h.hist, h.edges, abs_max=h.abs_max, coverage=high / 100)
    assert c <= d


# -- scales and INT8 rounding -----------------------------------------------------------------

@fuzz_settings(ci=100, long=10000)
@given(amax=st.one_of(st.floats(0, 3.4e38), st.sampled_from([0.0, 1e-45, 1e-38, 2.0**-24])),
       x=hnp.arrays(np.float32, st.integers(1, 50), elements=st.floats(-1.0, 1.0, width=32)))
def test_fuzz_scales_are_positive_and_round_trip_within_half_a_step(amax, x):
    scale = scale_from_amax(amax, "t")
    assert isinstance(scale, np.float32) and np.isfinite(scale) and scale >= MIN_SCALE
    values = (x.astype(np.float64) * amax).astype(np.float32)  # |values| <= amax (as float32)
    q = quantize_int8(values, np.asarray(scale), None)
    assert q.dtype == np.int8 and q.min() >= -128 and q.max() <= 127
    back = q.astype(np.float64) * float(scale)
    inside = np.abs(values.astype(np.float64)) <= QMAX * float(scale)
    error = np.abs(back - values.astype(np.float64))[inside]
    # half a quantization step, plus float32 rounding of x / scale
    assert np.all(error <= 0.5 * float(scale) * (1 + 1e-6) + np.abs(values[inside]) * 2**-23)


@fuzz_settings(ci=100, long=5000)
@given(amax=st.one_of(st.floats(127 * 3.4028235e38, 1.7e308), st.just(math.inf), st.just(math.nan),
                      st.floats(-1e30, -1e-30)))
def test_fuzz_amax_without_a_float32_scale_is_refused(amax):
    with pytest.raises(QtoolError, match="amax of 't'"):
        scale_from_amax(amax, "t")
