"""scripts/bench_compare.py: the plain baseline reads the batches compare makes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_compare


def test_plain_batches_follow_files_or_the_batch_size(tmp_path):
    rng = np.random.default_rng(0)
    samples = [rng.normal(size=(count, 3)).astype(np.float32) for count in (1, 2, 4, 1)]
    for index, array in enumerate(samples):
        np.savez(tmp_path / f"{index:05d}.npz", x=array, m=array[:, :1] > 0)
    everything = np.concatenate(samples)
    per_file = list(bench_compare.plain_batches(tmp_path, None))
    assert [len(b["x"]) for b in per_file] == [1, 2, 4, 1]
    by_three = list(bench_compare.plain_batches(tmp_path, 3))
    assert [len(b["x"]) for b in by_three] == [3, 3, 2]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in by_three]), everything)
    np.testing.assert_array_equal(np.concatenate([b["m"] for b in by_three]),
                                  everything[:, :1] > 0)
    stacked = tmp_path / "all.npz"
    np.savez(stacked, x=everything)
    assert [len(b["x"]) for b in bench_compare.plain_batches(stacked, None)] == [8]
    assert [len(b["x"]) for b in bench_compare.plain_batches(stacked, 4)] == [4, 4]


def test_unknown_models_are_refused(capsys):
    with pytest.raises(SystemExit):
        bench_compare.main(["--models", "resnet"])
    assert "unknown model resnet" in capsys.readouterr().err


def test_medians_of_repeated_runs():
    from bench_measure import ERROR, OK, Measured

    runs = [Measured(OK, 3.0, 100.0), Measured(OK, 1.0, 120.0), Measured(OK, 2.0, 90.0)]
    median = bench_compare.median_of(runs)
    assert (median.seconds, median.peak_rss_mb) == (2.0, 100.0)
    failed = Measured(ERROR, 1.0, 1.0, stderr="boom")
    assert bench_compare.median_of([*runs, failed]) is failed
