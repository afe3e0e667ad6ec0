"""AbsHistogram: streaming equals one histogram of all data on the same grid."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qtool.calib.histogram as histogram_module
from qtool.calib.histogram import EMPTY_BIN_WIDTH, AbsHistogram, grid_width
from qtool.errors import QtoolError
from qtool.thresholds import METHODS, compute_amax


def reference(values, width: float, shift: int = 0, length: int | None = None) -> np.ndarray:
    """Counts of floor(|v| * (1/width) * 2**-shift), one value at a time, finite values only."""
    factor = math.ldexp(1.0 / width, -shift)
    counts: dict[int, int] = {}
    for v in np.asarray(values).ravel().tolist():
        a = abs(float(v))
        if math.isfinite(a):
            k = math.floor(a * factor)
            counts[k] = counts.get(k, 0) + 1
    size = max([length or 0] + [k + 1 for k in counts])
    out = np.zeros(size, dtype=np.int64)
    for k, c in counts.items():
        out[k] = c
    return out


def streamed(batches, bins=64, max_bins=None) -> AbsHistogram:
    h = AbsHistogram(bins, max_bins)
    for b in batches:
        h.update(b)
    return h


def state(h: AbsHistogram):
    return (
        h.hist.tolist(),
        h.edges.tolist(),
        h.abs_max,
        h.count,
        h.nan_count,
        h.inf_count,
        h.shift,
    )


@pytest.fixture
def small_chunks(monkeypatch):
    """Force several chunks per batch so chunk boundaries are exercised."""
    monkeypatch.setattr(histogram_module, "_CHUNK", 7)


# ---------------------------------------------------------------- the grid
def test_first_batch_sets_grid_and_its_max_lands_in_last_bin():
    x = np.array([0.5, -3.0, 1.25, 0.0], dtype=np.float32)
    h = streamed([x], bins=16)
    assert h.has_grid and h.base_width == grid_width(3.0, 16)
    assert math.floor(3.0 * (1.0 / h.base_width)) == 15
    assert len(h.hist) == 16 and h.hist[15] == 1
    assert h.edges[0] == 0 and h.edges[-1] > 3.0
    assert h.hist.tolist() == reference(x, h.base_width, length=16).tolist()
    assert h.abs_max == 3.0 and h.count == 4


def test_grid_width_is_the_smallest_widening_that_fits():
    for amax, bins in [(3.0, 16), (1.0, 2048), (0.1, 7), (5.0, 5), (1e-30, 2048), (3e38, 2048)]:
        w = grid_width(amax, bins)
        assert math.floor(amax * (1.0 / w)) == bins - 1
        assert math.floor(amax * (1.0 / math.nextafter(w, 0))) >= bins or w == amax / bins


def test_value_on_an_edge_belongs_to_the_bin_above():
    h = AbsHistogram(bins=5)
    h.fix_grid(5.0)  # 5/5 = 1 exactly, widened by one ulp: w = 1 + 2**-52
    w = h.base_width
    assert w == 1.0 + 2.0**-52
    on_edges = np.array([1 * w, 2 * w, 4 * w])  # exact multiples in float64
    below = np.nextafter(on_edges, 0)
    h.update(on_edges)
    h.update(below)
    assert h.hist.tolist() == [1, 2, 1, 1, 1]  # 1w->1, 2w->2, 4w->4; just below -> 0, 1, 3
    assert h.hist.tolist() == reference(np.r_[on_edges, below], w, length=5).tolist()


def test_grid_comes_from_the_whole_first_batch_not_its_first_chunk(small_chunks):
    x = np.arange(40, dtype=np.float32) / 4  # max 9.75 sits in the last chunk
    h = streamed([x], bins=32)
    assert h.base_width == grid_width(9.75, 32)
    assert h.hist.tolist() == reference(x, h.base_width, length=32).tolist()


# ----------------------------------------------------------- streaming
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_streaming_with_growing_range_equals_reference(dtype, small_chunks):
    rng = np.random.default_rng(0)
    batches = [rng.normal(scale=s, size=(3, 17)).astype(dtype) for s in (1.0, 2.5, 0.1, 8.0, 3.0)]
    h = streamed(batches, bins=64)
    width = grid_width(float(np.abs(batches[0].astype(np.float64)).max()), 64)
    assert h.base_width == width
    assert len(h.hist) > 64  # the range grew past the first batch
    assert h.hist.tolist() == reference(np.concatenate(batches, axis=None), width).tolist()
    assert h.abs_max == float(max(np.abs(b.astype(np.float64)).max() for b in batches))
    assert h.count == sum(b.size for b in batches) == int(h.hist.sum())
    np.testing.assert_array_equal(h.edges, np.arange(len(h.hist) + 1) * width)


def test_integer_tensors_use_exact_magnitudes():
    x = np.array([-128, 127, 0, -1, 5], dtype=np.int8)
    h = streamed([x], bins=8)
    assert h.abs_max == 128.0
    assert h.hist.tolist() == reference(x.astype(np.int64), h.base_width, length=8).tolist()
    big = np.array([-(2**40), 3], dtype=np.int64)
    h.update(big)
    assert h.abs_max == 2.0**40


def test_order_and_batch_boundaries_do_not_matter(small_chunks):
    rng = np.random.default_rng(1)
    first = rng.laplace(size=50).astype(np.float32)
    rest = [
        rng.laplace(scale=s, size=rng.integers(1, 40)).astype(np.float32) for s in (1, 4, 0.5, 9)
    ]
    a = streamed([first, *rest], bins=32)
    flat = np.concatenate(rest)
    shuffled = flat[rng.permutation(flat.size)]
    b = streamed([first, *np.array_split(shuffled, 7)], bins=32)
    c = streamed([first, *rest[::-1]], bins=32)
    assert state(a) == state(b) == state(c)


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=80),
    cuts=st.lists(st.integers(0, 80), max_size=6),
    bins=st.integers(1, 40),
)
def test_any_split_equals_one_batch(data, cuts, bins):
    x = np.array(data, dtype=np.float32)
    parts = np.split(x, sorted({c for c in cuts if c <= x.size}))
    whole = streamed([x], bins=bins)
    split = AbsHistogram(bins)
    split.fix_grid(float(np.abs(x).max()))
    for p in parts:
        split.update(p)
    assert state(whole) == state(split)
    if whole.has_grid:
        assert whole.hist.tolist() == reference(x, whole.base_width, whole.shift, bins).tolist()


# ------------------------------------------------------------- NaN / Inf
def test_nan_and_inf_are_counted_apart_and_left_out():
    x = np.array([1.0, np.nan, -np.inf, 2.0, np.inf, np.nan, -0.5], dtype=np.float32)
    h = streamed([x], bins=4)
    assert (h.nan_count, h.inf_count, h.count) == (2, 2, 3)
    assert h.abs_max == 2.0 and h.base_width == grid_width(2.0, 4)
    assert h.hist.tolist() == reference(x, h.base_width, length=4).tolist()


def test_a_batch_of_only_nan_defines_no_grid():
    h = streamed([np.full(5, np.nan, np.float32), np.array([np.inf])], bins=4)
    assert not h.has_grid and (h.count, h.nan_count, h.inf_count) == (0, 5, 1)
    assert h.hist.sum() == 0


# -------------------------------------------------------------- all zeros
def test_all_zero_tensor_gives_valid_histogram_and_tiny_positive_amax():
    h = streamed([np.zeros((2, 3), np.float32), np.zeros(4, np.float16), -np.zeros(3)], bins=2048)
    assert not h.has_grid
    assert h.hist[0] == 13 and h.hist[1:].sum() == 0 and len(h.hist) == 2048
    assert h.edges[0] == 0 and h.edges[1] == EMPTY_BIN_WIDTH
    for method in METHODS:
        amax = compute_amax(method, h.hist, h.edges, abs_max=h.abs_max)
        assert 0 < amax <= h.edges[-1] and math.isfinite(amax), method
    assert compute_amax("max", h.hist, h.edges, abs_max=h.abs_max) == EMPTY_BIN_WIDTH


def test_zeros_before_the_grid_stay_in_bin_zero():
    h = streamed([np.zeros(6, np.float32), np.array([0.0, 4.0, -1.0], np.float32)], bins=8)
    assert h.base_width == grid_width(4.0, 8)
    assert (
        h.hist.tolist()
        == reference(np.r_[np.zeros(6), 0.0, 4.0, -1.0], h.base_width, 0, 8).tolist()
    )


def test_empty_batch_changes_nothing():
    h = streamed([np.array([], np.float32)], bins=8)
    assert state(h) == state(AbsHistogram(8))


# ------------------------------------------------------------- coarsening
def test_huge_outlier_coarsens_by_powers_of_two_exactly(small_chunks):
    rng = np.random.default_rng(2)
    first = rng.normal(size=100).astype(np.float32)
    others = [rng.normal(size=30).astype(np.float32), np.array([1e9, -3.0], np.float32)]
    h = streamed([first, *others], bins=16, max_bins=64)
    assert len(h.hist) <= 64 and h.shift > 0
    width = grid_width(float(np.abs(first).max()), 16)
    assert h.base_width == width
    everything = np.concatenate([first, *others])
    assert h.hist.tolist() == reference(everything, width, h.shift).tolist()
    # the smallest shift that fits: one less would need more than max_bins bins
    assert math.floor(1e9 * math.ldexp(1.0 / width, 1 - h.shift)) + 1 > 64
    # outlier first (after the grid batch) gives the same bins
    g = streamed([first, others[1], others[0]], bins=16, max_bins=64)
    assert state(g) == state(h)


def test_memory_stays_bounded_for_extreme_range():
    h = streamed([np.array([1.0, 0.5]), np.array([1e300])], bins=2048)
    assert len(h.hist) <= 64 * 2048 and h.hist.sum() == 3 and h.hist[-1] == 1
    # the quotient 1e300 / 1e-300 overflows float64; the bins still fit
    g = streamed([np.array([1e-300]), np.array([1e300, 2e-300])], bins=2048)
    assert len(g.hist) <= 64 * 2048 and g.hist.tolist()[0] == 2 and g.hist[-1] == 1


# ---------------------------------------------------------------- merge
def test_merged_shards_equal_one_run():
    rng = np.random.default_rng(3)
    batches = [rng.normal(scale=s, size=64).astype(np.float32) for s in (1, 3, 0.2, 40, 2, 7)]
    batches[2][5] = np.nan
    batches[4][0] = np.inf
    single = streamed(batches, bins=32, max_bins=128)
    shards = []
    for k in range(3):
        shard = AbsHistogram(32, 128)
        shard.fix_grid(float(np.abs(batches[0]).max()))
        for b in batches[k::3]:
            shard.update(b)
        shards.append(shard)
    merged = shards[0].copy()
    merged.merge(shards[1])
    merged.merge(shards[2])
    assert state(merged) == state(single)
    assert single.shift > 0  # the 40-sigma batch forced coarsening in one shard only


def test_merge_with_zero_only_collector_in_either_order():
    x = np.array([0.0, 2.0, -1.5], np.float32)
    zeros = streamed([np.zeros(4, np.float32)], bins=8)
    a = streamed([x], bins=8)
    a.merge(zeros)
    b = zeros.copy()
    b.merge(streamed([x], bins=8))
    expected = streamed([x, np.zeros(4, np.float32)], bins=8)
    assert state(a) == state(b) == state(expected)


def test_merge_refuses_different_grids():
    a = streamed([np.array([1.0])], bins=8)
    b = streamed([np.array([2.0])], bins=8)
    with pytest.raises(QtoolError, match="different grids"):
        a.merge(b)
    with pytest.raises(QtoolError, match="different bin counts"):
        a.merge(streamed([np.array([1.0])], bins=16))


def test_fix_grid_rules():
    h = AbsHistogram(8)
    h.fix_grid(0.0)
    assert not h.has_grid
    tiny = AbsHistogram(1)
    tiny.fix_grid(2.0**-52)  # a fixed grid counts nothing, so it coarsens nothing
    assert tiny.shift == 0 and tiny.bin_width == grid_width(2.0**-52, 1)
    h.fix_grid(2.0)
    h.fix_grid(2.0)
    assert h.base_width == grid_width(2.0, 8) and h.count == 0
    with pytest.raises(QtoolError, match="already set"):
        h.fix_grid(3.0)
    for bad in (math.nan, math.inf, -1.0):
        with pytest.raises(QtoolError):
            AbsHistogram(8).fix_grid(bad)
    h.update(np.array([5.0]))  # beyond the fixed range: extends
    assert h.hist.tolist() == reference([5.0], h.base_width, length=8).tolist()


# ----------------------------------------------------------- persistence
def test_npz_round_trip_and_resume():
    rng = np.random.default_rng(4)
    batches = [rng.normal(size=50).astype(np.float32) for _ in range(4)] + [np.array([np.nan, 1e8])]
    full = streamed(batches, bins=16, max_bins=64)
    part = streamed(batches[:3], bins=16, max_bins=64)
    buffer = io.BytesIO()
    np.savez(buffer, **part.to_arrays())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        loaded = AbsHistogram.from_arrays({k: archive[k] for k in archive.files})
    assert state(loaded) == state(part)
    for b in batches[3:]:
        loaded.update(b)
    assert state(loaded) == state(full)
    empty = AbsHistogram.from_arrays(AbsHistogram(16).to_arrays())
    assert state(empty) == state(AbsHistogram(16))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("counts"), "lacks counts"),
        (lambda d: d.update(counts=d["counts"][:-1]), "bins where its range implies"),
        (lambda d: d.update(counts=-d["counts"]), "non-negative"),
        (lambda d: d.update(bin_width=np.float64(-1.0)), "bin width"),
        (lambda d: d.update(abs_max=np.array([1.0])), "scalar"),
    ],
)
def test_from_arrays_rejects_inconsistent_data(change, message):
    arrays = streamed([np.array([1.0, 2.0, 3.0])], bins=8).to_arrays()
    change(arrays)
    with pytest.raises(QtoolError, match=message):
        AbsHistogram.from_arrays(arrays)


def test_rejects_non_numeric_tensors_and_bad_sizes():
    with pytest.raises(QtoolError, match="real numbers"):
        AbsHistogram(8).update(np.array([1 + 2j]))
    with pytest.raises(QtoolError, match="real numbers"):
        AbsHistogram(8).update(np.array(["a"]))
    with pytest.raises(QtoolError):
        AbsHistogram(0)
    with pytest.raises(QtoolError):
        AbsHistogram(8, max_bins=4)
