"""Time the threshold methods and AbsHistogram.update.

    .venv/bin/python scripts/bench_thresholds.py [--repeat N] [--seed S]

Thresholds run on a 2048-bin |x| histogram of a Laplace sample with a few
Gaussian outliers (the shape of a typical pre-activation tensor); update() runs
on a [32, 32, 112, 112] float32 activation (12.8 M values, post-ReLU-like half
zeros). Medians over --repeat runs, printed as a table on stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qtool.calib.histogram import AbsHistogram
from qtool.thresholds import DEFAULT_PARAMS, METHODS


def median_seconds(function, repeat: int) -> float:
    function()  # warm-up: first-call allocations and imports
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    sample = np.concatenate([rng.laplace(size=4_000_000), rng.normal(scale=20.0, size=400)])
    histogram = AbsHistogram()
    histogram.update(sample.astype(np.float32))
    hist, edges = histogram.hist, histogram.edges
    print(f"histogram: {len(hist)} bins, {histogram.count} values, abs_max {histogram.abs_max:.4g}")
    print(f"{'method':<12}{'amax':>12}{'median ms':>12}")
    for name, method in METHODS.items():
        params = DEFAULT_PARAMS[name]
        seconds = median_seconds(lambda m=method, p=params: m(hist, edges, **p), args.repeat)
        print(f"{name:<12}{method(hist, edges, **params):>12.5g}{seconds * 1e3:>12.3f}")

    activation = np.maximum(rng.standard_normal((32, 32, 112, 112), dtype=np.float32), 0)
    collector = AbsHistogram()
    seconds = median_seconds(lambda: collector.update(activation), args.repeat)
    per_value = seconds / activation.size * 1e9
    print(
        f"AbsHistogram.update {list(activation.shape)} float32: "
        f"{seconds * 1e3:.2f} ms median ({per_value:.2f} ns per value)"
    )


if __name__ == "__main__":
    main()
