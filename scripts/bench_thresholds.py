"""Time the threshold methods and AbsHistogram.update.

    .venv/bin/python scripts/bench_thresholds.py [--repeat N] [--seed S]

Thresholds run on a 2048-bin |x| histogram of a Laplace sample with a few
Gaussian outliers (the shape of a typical pre-activation tensor); update() runs
on a [32, 32, 112, 112] float32 activation (12.8 M values, post-ReLU-like half
zeros). Medians over --repeat runs of wall time and of process CPU time (the
latter is the fairer figure on a machine shared with other work).
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


def median_seconds(function, repeat: int) -> tuple[float, float]:
    """(median wall seconds, median process CPU seconds) over `repeat` calls."""
    function()  # warm-up: first-call allocations and imports
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


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
    print(f"{'method':<12}{'amax':>12}{'wall ms':>10}{'cpu ms':>10}")
    for name, method in METHODS.items():
        params = DEFAULT_PARAMS[name]
        wall, cpu = median_seconds(lambda m=method, p=params: m(hist, edges, **p), args.repeat)
        amax = method(hist, edges, **params)
        print(f"{name:<12}{amax:>12.5g}{wall * 1e3:>10.3f}{cpu * 1e3:>10.3f}")

    activation = np.maximum(rng.standard_normal((32, 32, 112, 112), dtype=np.float32), 0)
    collector = AbsHistogram()
    wall, cpu = median_seconds(lambda: collector.update(activation), args.repeat)
    print(
        f"AbsHistogram.update {list(activation.shape)} float32: wall {wall * 1e3:.2f} ms, "
        f"cpu {cpu * 1e3:.2f} ms ({cpu / activation.size * 1e9:.2f} ns per value)"
    )


if __name__ == "__main__":
    main()
