"""Interruptions and early exits inside the process: background threads end, sources are closed,
outputs are complete or absent (the subprocess tests are tests/cli/test_interrupt_signals_cli.py)."""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from qtool.calib import calibfile
from qtool.calib.calibfile import Calibration, TensorCalibration, write_calibration
from qtool.calib.histogram import AbsHistogram
from qtool.cli.main import main
from qtool.errors import Interrupted
from qtool.io.prefetch import Prefetcher


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "qtool-prefetch"]


def wait_until(condition, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_prefetch_thread_ends_when_the_consumer_stops_at_a_full_queue():
    closed = []

    def source():
        try:
            yield from range(3)
        finally:
            closed.append(True)

    stream = Prefetcher(source(), depth=1)
    assert next(stream) == 0
    # The producer has queued 1 and now waits to queue 2 (or the end marker) into a full queue.
    time.sleep(0.3)
    stream.close()
    assert wait_until(lambda: not prefetch_threads())
    assert closed == [True]  # the half-read source was closed, so its clean-up ran


def test_prefetch_errors_reach_the_consumer_and_the_thread_ends():
    def source():
        yield 1
        raise ValueError("broken batch")

    stream = Prefetcher(source())
    assert next(stream) == 1
    with pytest.raises(ValueError, match="broken batch"):
        next(stream)
    assert wait_until(lambda: not prefetch_threads())


def test_interrupted_is_a_system_exit_no_except_exception_can_swallow():
    assert issubclass(Interrupted, SystemExit) and not issubclass(Interrupted, Exception)
    assert Interrupted(128 + signal.SIGINT).signal_name == "interrupted"
    assert Interrupted(128 + signal.SIGTERM).signal_name == "terminated"


def test_main_restores_the_signal_handlers(capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def _calibration() -> tuple[Calibration, dict]:
    hist = AbsHistogram(128)
    hist.update(np.linspace(-2, 3, 100, dtype=np.float32))
    calib = Calibration(model_sha256="0" * 64, method="max",
                        tensors={"x": TensorCalibration(amax=3.0, abs_max=3.0, count=100)})
    return calib, {"x": hist}


@pytest.mark.parametrize("fail_in", ["savez", "json"])
def test_write_calibration_interrupted_leaves_nothing(tmp_path, monkeypatch, fail_in):
    calib, histograms = _calibration()

    def interrupt(*args, **kwargs):
        raise Interrupted(130)

    if fail_in == "savez":
        monkeypatch.setattr(calibfile.writer.np, "savez_compressed", interrupt)
    else:
        monkeypatch.setattr(calibfile.writer, "write_json", interrupt)
    with pytest.raises(Interrupted):
        write_calibration(calib, tmp_path / "c.json", histograms)
    assert list(tmp_path.iterdir()) == []


def test_write_calibration_keeps_the_previous_pair_when_interrupted(tmp_path, monkeypatch):
    calib, histograms = _calibration()
    write_calibration(calib, tmp_path / "c.json", histograms)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    calib2, histograms2 = _calibration()
    histograms2["x"].update(np.array([7.0], np.float32))

    def interrupt(*args, **kwargs):
        raise Interrupted(143)

    monkeypatch.setattr(calibfile.writer, "write_json", interrupt)
    with pytest.raises(Interrupted):
        write_calibration(calib2, tmp_path / "c.json", histograms2)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert calibfile.read_calibration(tmp_path / "c.json").load_histograms()["x"].count == 100
