"""Threshold methods against slow, obviously-correct reference loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qtool.calib.histogram import AbsHistogram
from qtool.errors import QtoolError
from qtool.thresholds import METHODS, compute_amax, entropy
from qtool.thresholds.entropy import TIE_TOLERANCE as KL_TIE
from qtool.thresholds.entropy import kl_divergences
from qtool.thresholds.mse import TIE_TOLERANCE as MSE_TIE
from qtool.thresholds.mse import mse_candidates


# ------------------------------------------------------------ references
def last_nonempty_end(hist) -> int:
    end = 0
    for j, count in enumerate(hist):
        if count:
            end = j + 1
    return end


def ref_max(hist, edges):
    end = last_nonempty_end(hist)
    return float(edges[end]) if end else float(edges[1])


def ref_percentile(hist, edges, p):
    total = sum(int(c) for c in hist)
    if total == 0:
        return float(edges[1])
    target = p / 100 * total
    running = 0
    for j, count in enumerate(hist):
        running += int(count)
        if running >= target:
            return float(edges[j + 1])
    raise AssertionError("unreachable")


def ref_coverage(hist, edges, coverage):
    """Two pointers; on |x| the left one stays on bin 0 and the right one walks down."""
    total = sum(int(c) for c in hist)
    if total == 0:
        return float(edges[1])
    target = coverage * total
    left, right, covered = 0, len(hist) - 1, total
    while right > left and covered - int(hist[right]) >= target:
        covered -= int(hist[right])
        right -= 1
    return float(edges[right + 1])


def ref_kl(hist, i, levels):
    """KL(P || Q) for keeping i bins, built literally from the description."""
    h = np.asarray(hist, dtype=np.float64)
    p = h[:i].copy()
    p[i - 1] += h[i:].sum()
    kept = h[:i]
    chunk_of = (levels * np.arange(i)) // i  # bin j -> chunk floor(levels * j / i)
    chunk_mass = np.bincount(chunk_of, weights=kept, minlength=levels)
    chunk_nonempty = np.bincount(chunk_of, weights=kept > 0, minlength=levels)
    # each chunk's mass spread evenly over its non-empty bins; empty bins stay empty
    q = np.where(kept > 0, chunk_mass[chunk_of] / np.maximum(chunk_nonempty[chunk_of], 1), 0.0)
    if q.sum() == 0:
        return math.inf
    p, q = p / p.sum(), q / q.sum()
    used = p > 0
    if (q[used] == 0).any():
        return math.inf
    return float(np.sum(p[used] * np.log(p[used] / q[used])))


def ref_entropy(hist, edges, levels=128):
    hist = np.array(hist, dtype=np.int64)
    if len(hist) > 1 and hist[1] > 0:
        hist[0] = hist[1]  # the exact zeros say nothing about the threshold
    end = last_nonempty_end(hist)
    if end == 0:
        return float(edges[1])
    if end <= levels:
        return float(edges[end])
    divergences = [ref_kl(hist, i, levels) for i in range(levels, end + 1)]
    best = min(divergences)
    first = next(k for k, d in enumerate(divergences) if d <= best + KL_TIE)
    return float(edges[levels + first])


def ref_mse_error(hist, edges, amax):
    """Sum over bins of count * (centre - dequantized centre)**2 at scale amax / 127."""
    hist = np.asarray(hist)
    used = np.flatnonzero(hist)
    centre = (edges[used] + edges[used + 1]) / 2
    scale = amax / 127.0
    q = np.minimum(np.rint(centre / scale), 127.0)
    return float(np.sum(hist[used] * (centre - q * scale) ** 2))


def ref_mse(hist, edges):
    end = last_nonempty_end(hist)
    if end == 0:
        return float(edges[1])
    stride = -(-end // 2048)
    ks = list(range(stride, end + 1, stride))
    if ks[-1] != end:
        ks.append(end)
    errors = [ref_mse_error(hist, edges, edges[k]) for k in ks]
    best = min(errors)
    return float(edges[ks[next(n for n, e in enumerate(errors) if e <= best * (1 + MSE_TIE))]])


# ------------------------------------------------------------ histograms
def grid(n, width=0.01):
    return np.arange(n + 1, dtype=np.float64) * width


def abs_hist(values, bins=2048):
    h = AbsHistogram(bins)
    h.update(values)
    return h.hist, h.edges


def make_cases():
    rng = np.random.default_rng(7)
    cases = {}
    cases["laplace+outliers"] = abs_hist(
        np.concatenate([rng.laplace(size=200_000), rng.normal(scale=25, size=40)]).astype(
            np.float32
        )
    )
    cases["gaussian"] = abs_hist(rng.normal(size=100_000).astype(np.float32), bins=512)
    cases["relu"] = abs_hist(np.maximum(rng.normal(size=50_000), 0).astype(np.float32), bins=400)
    cases["random counts"] = (rng.integers(0, 50, size=600), grid(600))
    spike = np.zeros(700, np.int64)
    spike[311] = 10_000
    cases["single spike"] = (spike, grid(700))
    bin0 = np.zeros(300, np.int64)
    bin0[0] = 123
    cases["all mass in bin 0"] = (bin0, grid(300))
    tail = np.floor(1e6 * 0.97 ** np.arange(500)).astype(np.int64)
    cases["long geometric tail"] = (tail, grid(500))
    holes = rng.integers(1, 100, size=450)
    holes[rng.random(450) < 0.6] = 0
    holes[449] = 1
    cases["empty bins inside"] = (holes, grid(450))
    cases["fewer than 128 bins"] = (rng.integers(0, 9, size=90), grid(90))
    cases["all zeros"] = (np.zeros(256, np.int64), grid(256))
    cases["huge counts"] = (rng.integers(10**12, 10**13, size=300), grid(300, width=1e-3))
    sparse_end = np.zeros(260, np.int64)
    sparse_end[:130] = rng.integers(1, 1000, size=130)
    sparse_end[259] = 1
    cases["isolated outlier bin"] = (sparse_end, grid(260))
    extended = np.zeros(2600, np.int64)
    extended[:2048] = rng.integers(0, 30, size=2048)
    extended[2599] = 2
    cases["extended past 2048"] = (extended, grid(2600))
    cases["uneven edges"] = (
        rng.integers(0, 20, size=200),
        np.concatenate([[0.0], np.cumsum(rng.random(200) + 0.01)]),
    )
    return cases


CASES = make_cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_max_percentile_coverage_match_reference(name):
    hist, edges = CASES[name]
    assert METHODS["max"](hist, edges) == ref_max(hist, edges)
    for p in (50.0, 99.0, 99.99, 100.0, 1e-6):
        assert METHODS["percentile"](hist, edges, percentile=p) == ref_percentile(hist, edges, p)
    for c in (0.5, 0.999, 0.9999, 1.0, 1e-9):
        assert METHODS["coverage"](hist, edges, coverage=c) == ref_coverage(hist, edges, c)


@pytest.mark.parametrize("name", sorted(CASES))
def test_entropy_matches_reference(name):
    hist, edges = CASES[name]
    assert METHODS["entropy"](hist, edges) == ref_entropy(hist, edges)


@pytest.mark.parametrize("name", sorted(CASES))
def test_mse_matches_reference(name):
    hist, edges = CASES[name]
    assert METHODS["mse"](hist, edges) == ref_mse(hist, edges)


def test_kl_values_match_reference_per_candidate():
    hist, _ = CASES["empty bins inside"]
    end = last_nonempty_end(hist)
    fast = kl_divergences(np.asarray(hist[:end], np.int64), 128)
    slow = np.array([ref_kl(hist, i, 128) for i in range(128, end + 1)])
    assert np.array_equal(np.isinf(fast), np.isinf(slow)) and np.isinf(slow).any()
    finite = np.isfinite(slow)
    np.testing.assert_allclose(fast[finite], slow[finite], rtol=0, atol=1e-13)


def test_kl_worked_example():
    # P = [1 0 2 3 5 3 1 7] in 2 levels: chunks [1 0 2 3] and [5 3 1 7];
    # Q spreads 6 over 3 non-empty bins and 16 over 4: [2 0 2 2 4 4 4 4].
    hist = np.array([1, 0, 2, 3, 5, 3, 1, 7])
    p = hist / 22
    q = np.array([2, 0, 2, 2, 4, 4, 4, 4]) / 22
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)
    (kl8,) = kl_divergences(hist[:8], 2)[-1:]
    assert kl8 == pytest.approx(expected, abs=1e-15)
    # i = 7 piles the 7 of bin 7 onto bin 6: P = [1 0 2 3 5 3 8] / 22 with chunk
    # bounds ceil(c*7/2) = 0, 4, 7: Q = [2 0 2 2 3 3 3] / 15.
    p7 = np.array([1, 0, 2, 3, 5, 3, 8]) / 22
    q7 = np.array([2, 0, 2, 2, 3, 3, 3]) / 15
    expected7 = sum(pi * math.log(pi / qi) for pi, qi in zip(p7, q7) if pi > 0)
    assert kl_divergences(hist, 2)[5] == pytest.approx(expected7, abs=1e-15)


def test_entropy_piled_outliers_on_empty_bin_are_infinite():
    hist = np.array([5, 4, 0, 3])  # i = 3 piles bin 3 onto the empty bin 2
    kl = kl_divergences(hist, 2)
    assert kl[1] == math.inf and math.isfinite(kl[0]) and math.isfinite(kl[2])


def test_entropy_special_shapes():
    edges = grid(1000)
    bin0 = np.zeros(1000, np.int64)
    bin0[0] = 50
    assert METHODS["entropy"](bin0, edges) == edges[1]  # fits in one level per bin
    fits = np.zeros(1000, np.int64)
    fits[:100] = 3
    assert METHODS["entropy"](fits, edges) == edges[100]
    short = np.arange(1, 41)
    assert METHODS["entropy"](short, grid(40)) == grid(40)[40]


def test_entropy_ignores_the_zero_spike_of_a_relu():
    rng = np.random.default_rng(0)
    relu = np.maximum(rng.normal(size=200_000), 0)  # half of the values are exactly 0
    relu6 = np.minimum(np.maximum(rng.normal(scale=3, size=200_000), 0), 6)  # saturated too
    for values, low in ((relu, 2.0), (relu6, 4.0)):
        hist, edges = abs_hist(values)
        assert METHODS["entropy"](hist, edges) > low
    steps = rng.integers(0, 17, size=10_000) / 16  # discrete: bin 1 is empty, zeros are kept
    hist, edges = abs_hist(steps)
    assert METHODS["entropy"](hist, edges) == edges[-1]  # the whole range, just above 1.0
    hist, edges = abs_hist(relu)
    before = hist.copy()
    METHODS["entropy"](hist, edges)
    np.testing.assert_array_equal(hist, before)  # the caller's histogram is left alone


def test_entropy_ties_go_to_the_smallest_candidate(monkeypatch):
    noise = [0.5, 0.3 + KL_TIE / 2, 0.3, 0.3 - KL_TIE / 4, 0.4]
    monkeypatch.setattr(entropy, "kl_divergences", lambda counts, levels: np.array(noise))
    hist = np.ones(132, np.int64)
    assert entropy.entropy_amax(hist, grid(132)) == grid(132)[128 + 1]
    noise[1] = 0.3 + 2 * KL_TIE  # no longer within the tolerance of the minimum
    assert entropy.entropy_amax(hist, grid(132)) == grid(132)[128 + 2]


# -------------------------------------------------------------- properties
histograms = hnp.arrays(
    np.int64,
    st.integers(1, 400),
    elements=st.one_of(st.just(0), st.integers(0, 10**6)),
)


@settings(max_examples=60, deadline=None)
@given(hist=histograms, width=st.floats(1e-6, 1e3))
def test_every_method_returns_positive_amax_within_range(hist, width):
    edges = grid(len(hist), width)
    for name, method in METHODS.items():
        amax = method(hist, edges)
        assert isinstance(amax, float) and math.isfinite(amax), name
        assert 0 < amax <= edges[-1], name


@settings(max_examples=60, deadline=None)
@given(hist=histograms, p=st.floats(1e-3, 100.0), q=st.floats(1e-3, 100.0))
def test_percentile_is_monotone_in_p(hist, p, q):
    edges = grid(len(hist))
    low, high = sorted((p, q))
    assert METHODS["percentile"](hist, edges, percentile=low) <= METHODS["percentile"](
        hist, edges, percentile=high
    )


@settings(max_examples=40, deadline=None)
@given(hist=histograms)
def test_entropy_and_mse_never_above_max(hist):
    edges = grid(len(hist))
    top = METHODS["max"](hist, edges)
    assert METHODS["entropy"](hist, edges) <= top
    assert METHODS["mse"](hist, edges) <= top


@settings(max_examples=40, deadline=None)
@given(hist=histograms, c=st.sampled_from([0.5, 0.9, 0.99, 0.999, 0.9999, 1.0]))
def test_coverage_equals_percentile_on_abs_histograms(hist, c):
    edges = grid(len(hist))
    assert METHODS["coverage"](hist, edges, coverage=c) == METHODS["percentile"](
        hist, edges, percentile=c * 100
    )


@settings(max_examples=30, deadline=None)
@given(
    hist=hnp.arrays(
        np.int64,
        st.integers(1, 300),
        elements=st.one_of(st.just(0), st.integers(1, 5), st.integers(0, 10**9)),
    )
)
def test_entropy_and_mse_match_reference_on_random_histograms(hist):
    edges = grid(len(hist))
    assert METHODS["entropy"](hist, edges) == ref_entropy(hist, edges)
    assert METHODS["mse"](hist, edges) == ref_mse(hist, edges)


def test_mse_candidate_set():
    assert mse_candidates(5).tolist() == [1, 2, 3, 4, 5]
    assert mse_candidates(2048).tolist() == list(range(1, 2049))
    assert mse_candidates(4097).tolist() == list(range(3, 4097, 3)) + [4097]


def test_mse_prefers_clipping_a_far_outlier():
    hist = np.zeros(2048, np.int64)
    hist[:100] = 1000
    hist[2047] = 1
    edges = grid(2048)
    amax = METHODS["mse"](hist, edges)
    assert edges[90] < amax < edges[2047]
    assert amax == ref_mse(hist, edges)


# -------------------------------------------------------------- registry
def test_compute_amax_dispatch_and_clamp():
    hist, edges = CASES["laplace+outliers"]
    abs_max = float(edges[last_nonempty_end(hist)]) * 0.999
    assert compute_amax("max", hist, edges, abs_max=abs_max) == abs_max
    assert compute_amax("max", hist, edges) == ref_max(hist, edges)
    assert compute_amax("percentile", hist, edges, percentile=100.0, abs_max=abs_max) == abs_max
    assert compute_amax("entropy", hist, edges) == METHODS["entropy"](hist, edges)
    assert compute_amax("coverage", hist, edges, coverage=0.5) == ref_coverage(hist, edges, 0.5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda h, e: compute_amax("kl", h, e), "unknown threshold method 'kl'"),
        (lambda h, e: compute_amax("entropy", h, e, percentile=3), "takes no parameter percentile"),
        (
            lambda h, e: compute_amax("percentile", h, e, percentile=0),
            r"percentile must be in \(0, 100\]",
        ),
        (lambda h, e: compute_amax("percentile", h, e, percentile=101), "percentile must be in"),
        (lambda h, e: compute_amax("coverage", h, e, coverage=1.5), "coverage must be in"),
        (lambda h, e: compute_amax("coverage", h, e, coverage="x"), "coverage must be a number"),
        (lambda h, e: compute_amax("max", h, e, abs_max=1e9), "outside the histogram"),
        (lambda h, e: compute_amax("max", h[:-1], e), "edges must be"),
        (lambda h, e: compute_amax("max", -h, e), "must not be negative"),
        (lambda h, e: compute_amax("max", h, e[::-1]), "start at 0"),
        (lambda h, e: compute_amax("max", h + 0.5, e), "whole numbers"),
        (lambda h, e: compute_amax("entropy", h, e, levels=1), "levels"),
        (lambda h, e: compute_amax("entropy", h, e, levels="x"), "levels"),
    ],
)
def test_user_errors_are_one_line_qtool_errors(call, message):
    hist, edges = np.array([3, 0, 2, 1]), grid(4)
    with pytest.raises(QtoolError, match=message) as info:
        call(hist, edges)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_one_occupied_bin_gives_the_exact_largest_value(method):
    edges = np.linspace(0, 4, 2049)
    hist = np.zeros(2048, np.int64)
    hist[1536] = 50  # |x| = 3.001 everywhere, inside bin 1536
    assert compute_amax(method, hist, edges, abs_max=3.001) == 3.001
