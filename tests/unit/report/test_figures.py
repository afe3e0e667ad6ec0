"""Figures: thumbnail PNGs, a reused plotter leaves nothing of the previous histogram behind,
plain-text log-axis labels."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from qtool.report.figures import (
    HIST_SIZE_PX,
    HistogramPlotter,
    histogram_png,
    log_label,
    scale_spread_png,
    sensitivity_png,
)


def histogram(seed: int, scale: float):
    values = np.abs(np.random.default_rng(seed).normal(size=20_000)) * scale
    counts, edges = np.histogram(values, bins=2048, range=(0, values.max() * 1.0001))
    return counts, edges


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_reused_plotter_draws_exactly_what_a_fresh_one_draws():
    first, second = histogram(0, 1.0), histogram(1, 40.0)
    lines_first = [("max", 4.0, False), ("entropy", 2.0, True)]
    lines_second = [("mse", 100.0, False), ("percentile", 120.0, True)]
    plotter = HistogramPlotter()
    plotter.render(*first, lines_first)
    reused = plotter.render(*second, lines_second)
    fresh = histogram_png(*second, lines_second)
    np.testing.assert_array_equal(pixels(reused), pixels(fresh))
    assert not np.array_equal(pixels(reused), pixels(histogram_png(*first, lines_first)))
    assert Image.open(io.BytesIO(reused)).size == HIST_SIZE_PX


def test_empty_histogram_and_chart_edge_cases_render():
    empty = histogram_png(np.zeros(2048, dtype=np.int64), np.arange(2049) * 2.0**-24,
                          [("max", 2.0**-24, True)])
    assert Image.open(io.BytesIO(empty)).size == HIST_SIZE_PX
    chart = sensitivity_png(["a", "b", "c"], [math.inf, 3.0, math.nan], [True, False, False],
                            "SQNR", reference=2.0)
    assert Image.open(io.BytesIO(chart)).size[1] == 44 + 15 * 3
    spread = scale_spread_png([1e-12, 0.01], [0.02, 0.02], [0.03, 0.05], [True, False])
    assert spread.startswith(b"\x89PNG")


def test_log_labels_are_plain_text_at_1_2_5_steps():
    assert [log_label(v) for v in (1.0, 10.0, 1e5, 0.001, 2e-3, 5e4, 3e2, 0.0)] == [
        "1", "1e1", "1e5", "1e-3", "2e-3", "5e4", "", ""]
