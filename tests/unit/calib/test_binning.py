"""The compiled counting loop and the numpy path give exactly the documented bins."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qtool.calib.histogram as histogram_module
from qtool.calib import binning
from qtool.calib.histogram import AbsHistogram

needs_numba = pytest.mark.skipif(binning.compiled_kernel() is None, reason="numba not installed")


def reference_bins(values, reciprocal: float) -> list[int]:
    return [math.floor(abs(float(v)) * reciprocal) for v in np.asarray(values).ravel()]


def edge_values(reciprocal: float, nbins: int) -> np.ndarray:
    """float32 values on, just below and just above the edges k / reciprocal."""
    edges = np.arange(nbins, dtype=np.float64) / reciprocal
    around = [np.float32(edges), np.nextafter(np.float32(edges), np.float32(0)),
              np.nextafter(np.float32(edges), np.float32(np.inf))]
    return np.concatenate(around).astype(np.float32)


def test_range_limit_is_the_exact_boundary():
    for reciprocal, nbins in [(1.0, 8), (1 / 3, 5), (2048 / 6.0001, 2048), (1e30, 7), (3.7, 1)]:
        limit = binning.range_limit(reciprocal, nbins)
        assert math.floor(limit * reciprocal) >= nbins
        assert math.floor(math.nextafter(limit, 0) * reciprocal) < nbins


def test_numpy_path_counts_the_documented_bins():
    reciprocal = 2048 / 5.9
    values = np.abs(edge_values(reciprocal, 2048))
    values = values[values < binning.range_limit(reciprocal, 2048)]
    counts = np.zeros(2048, np.int64)
    binning.count_numpy(values, reciprocal, counts, np.empty(values.size, np.intp))
    assert counts.tolist() == np.bincount(reference_bins(values, reciprocal),
                                          minlength=2048).tolist()


@needs_numba
@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 4099])
def test_compiled_loop_counts_the_documented_bins(size):
    rng = np.random.default_rng(size)
    reciprocal = 64 / 3.0
    values = (rng.standard_normal(size) * 1.5).astype(np.float32)
    values = values[np.abs(values) < binning.range_limit(reciprocal, 64)]
    counts = np.zeros(64, np.int64)
    stop, top = binning.count_compiled(values, 0, reciprocal, binning.range_limit(reciprocal, 64),
                                       counts)
    assert stop == values.size
    assert top == (float(np.abs(values).max()) if values.size else 0.0)
    assert counts.tolist() == np.bincount(reference_bins(values, reciprocal),
                                          minlength=64).tolist()


@needs_numba
def test_compiled_loop_on_bin_edges_and_the_zero_spike():
    reciprocal = 2048 / 5.9
    limit = binning.range_limit(reciprocal, 2048)
    values = edge_values(reciprocal, 2048)
    values = np.concatenate([values[np.abs(values) < limit], np.zeros(1001, np.float32),
                             -values[:50]])
    counts = np.zeros(2048, np.int64)
    assert binning.count_compiled(values, 0, reciprocal, limit, counts)[0] == values.size
    assert counts.tolist() == np.bincount(reference_bins(values, reciprocal),
                                          minlength=2048).tolist()


@needs_numba
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 10.0])
@pytest.mark.parametrize("where", [0, 5, 2047, 2048, 4999])
def test_compiled_loop_stops_at_the_first_value_it_cannot_count(bad, where):
    values = np.full(5000, 0.5, np.float32)
    values[::7] = 1.5
    values[where] = bad
    counts = np.zeros(4, np.int64)
    limit = binning.range_limit(1.0, 4)
    stop, top = binning.count_compiled(values, 0, 1.0, limit, counts)
    assert stop == where and counts.sum() == where
    assert top == (float(np.abs(values[:where]).max()) if where else 0.0)
    # resuming after the bad value counts the rest
    more = np.zeros(4, np.int64)
    assert binning.count_compiled(values, where + 1, 1.0, limit, more)[0] == values.size
    assert more.sum() == values.size - 1 - where


@needs_numba
@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32),
                                 max_size=40), min_size=1, max_size=5),
       bins=st.integers(1, 40))
def test_histogram_with_and_without_the_compiled_loop_is_identical(batches, bins):
    arrays = [np.asarray(b, dtype=np.float32) for b in batches]
    compiled = AbsHistogram(bins, max_bins=4 * bins)
    for a in arrays:
        compiled.update(a)
    original = histogram_module.compiled_kernel
    histogram_module.compiled_kernel = lambda: None
    try:
        plain = AbsHistogram(bins, max_bins=4 * bins)
        for a in arrays:
            plain.update(a)
    finally:
        histogram_module.compiled_kernel = original
    for key, value in plain.to_arrays().items():
        assert np.array_equal(compiled.to_arrays()[key], value, equal_nan=True), key


@needs_numba
def test_histogram_growth_in_the_middle_of_a_batch(monkeypatch):
    """The compiled loop hands an outlier's chunk to numpy, which widens the grid, then resumes."""
    monkeypatch.setattr(histogram_module, "_CHUNK", 16)
    rng = np.random.default_rng(0)
    first = rng.normal(size=64).astype(np.float32)
    second = rng.normal(size=100).astype(np.float32) * 3
    second[37] = np.nan
    second[70] = 1e6
    h = AbsHistogram(32, max_bins=256)
    h.update(first)
    h.update(second)
    factor = math.ldexp(1.0 / h.base_width, -h.shift)
    finite = np.concatenate([first, second[np.isfinite(second)]])
    assert h.shift > 0 and h.nan_count == 1 and h.count == finite.size
    assert h.abs_max == 1e6
    assert h.hist.tolist() == np.bincount(reference_bins(finite, factor),
                                          minlength=len(h.hist)).tolist()
