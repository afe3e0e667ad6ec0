"""Scale and INT8 weight numerics against slow reference loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qtool.errors import QtoolError
from qtool.quantize.scales import MIN_SCALE, quantize_int8, scale_from_amax, weight_scales


def test_scale_is_amax_over_127_rounded_once_to_float32():
    for amax in (1.0, 2.5, 3.14159, 1e-3, 1234.5678, 127.0):
        scale = scale_from_amax(amax)
        assert isinstance(scale, np.float32)
        assert scale == np.float32(amax / 127.0)


def test_zero_amax_gets_the_documented_minimum_and_tiny_amax_is_floored():
    assert scale_from_amax(0.0) == MIN_SCALE
    assert scale_from_amax(1e-30) == MIN_SCALE
    assert 0 < MIN_SCALE < np.float32(1e-6 / 127) and np.isfinite(1 / MIN_SCALE)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "x"])
def test_invalid_amax_raises(bad):
    with pytest.raises(QtoolError, match="amax must be a finite non-negative number"):
        scale_from_amax(bad)


def slow_channel_scales(w, axis):
    scales = []
    moved = np.moveaxis(w, axis, 0)
    for channel in moved:
        biggest = 0.0
        for v in channel.ravel():
            biggest = max(biggest, abs(float(v)))
        scales.append(max(np.float32(biggest / 127.0), MIN_SCALE))
    return np.array(scales, np.float32)


@pytest.mark.parametrize("shape, axis", [((4, 3, 2, 2), 0), ((3, 5, 2, 2), 1), ((6, 7), 1), ((6, 7), 0)])
def test_per_channel_weight_scales(shape, axis):
    rng = np.random.default_rng(sum(shape))
    w = rng.normal(size=shape).astype(np.float32) * rng.uniform(0.1, 5)
    np.testing.assert_array_equal(weight_scales(w, axis), slow_channel_scales(w, axis))
    assert weight_scales(w, None) == np.float32(float(np.abs(w).max()) / 127.0)


def test_nan_weight_is_refused():
    w = np.ones((2, 2), np.float32)
    w[0, 1] = np.nan
    with pytest.raises(QtoolError, match="NaN or Inf"):
        weight_scales(w, 0)


def slow_quantize(x, scale):
    """Scalar loop: half to even by hand, then clamp."""
    out = []
    for v in np.asarray(x, np.float32).ravel():
        r = float(np.float32(v) / np.float32(scale))
        low = math.floor(r)
        frac = r - low
        q = low + 1 if frac > 0.5 or (frac == 0.5 and low % 2 == 1) else low
        out.append(min(127, max(-128, q)))
    return np.array(out, np.int8).reshape(np.shape(x))


def test_quantize_int8_rounds_half_to_even_and_clamps():
    scale = np.float32(0.5)
    x = np.array([0.25, 0.75, -0.25, -0.75, 1.25, 100.0, -100.0, 63.75, -64.25], np.float32)
    np.testing.assert_array_equal(quantize_int8(x, scale, None), [0, 2, 0, -2, 2, 127, -128, 127, -128])
    np.testing.assert_array_equal(quantize_int8(x, scale, None), slow_quantize(x, scale))


def test_quantize_int8_per_channel_matches_loop():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(3, 4, 2)).astype(np.float32)
    scales = weight_scales(w, 1)
    got = quantize_int8(w, scales, 1)
    for c in range(4):
        np.testing.assert_array_equal(got[:, c, :], slow_quantize(w[:, c, :], scales[c]))
    assert np.abs(got).max() == 127  # the largest value of each channel maps to +-127
