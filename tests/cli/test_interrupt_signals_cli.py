"""Ctrl-C (SIGINT) and SIGTERM during calibration, on a real `python -m qtool` process: exit status
130 / 143, one line on stderr, no output file and no temporary file left, the input model
untouched, and no background thread keeping the process alive."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tiny_models import conv_relu_gemm, save

REPO = Path(__file__).resolve().parents[2]

# Yields batches forever, so calibration never ends on its own. The marker file says that the
# calibration loop has pulled several batches; then it either sleeps between batches (the main
# thread waits on the prefetch queue) or keeps them coming (the main thread runs onnxruntime and
# hands histograms to the worker thread).
LOADER = '''
import os, time
import numpy as np

def load_data():
    marker, delay = os.environ["QTOOL_TEST_MARKER"], float(os.environ["QTOOL_TEST_DELAY"])
    rng = np.random.default_rng(0)
    index = 0
    while True:
        if index == 4:
            open(marker, "w").close()
        if index >= 4 and delay:
            time.sleep(delay)
        yield {"x": rng.normal(size=(4, 2, 6, 6)).astype(np.float32)}
        index += 1
'''


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def workdir(tmp_path):
    model = Path(save(conv_relu_gemm(), tmp_path / "net.onnx"))
    (tmp_path / "loader.py").write_text(LOADER)
    (tmp_path / "out").mkdir()
    return tmp_path, model


def start_calibration(tmp_path: Path, model: Path, delay: float, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, QTOOL_TEST_MARKER=str(tmp_path / "started"),
               QTOOL_TEST_DELAY=str(delay), PYTHONPATH=str(REPO))
    # -X faulthandler: SIGABRT then dumps every thread's stack (see stuck_process_message)
    command = [sys.executable, "-X", "faulthandler", "-m", "qtool", "calibrate", str(model),
               "--data-loader-script", str(tmp_path / "loader.py"),
               "-o", str(tmp_path / "out" / "net.calib.json"),
               "--trt-cache", str(tmp_path / "out" / "net.cache"), *extra]
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"calibration ended early: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("calibration did not start in time")
        time.sleep(0.02)


def stuck_process_message(process: subprocess.Popen) -> str:
    """Where a process that ignored its signal is stuck: its threads' stacks, from faulthandler."""
    process.send_signal(signal.SIGABRT)
    try:
        _, err = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return f"the process did not exit after the signal; its threads:\n{err[-8000:]}"


@pytest.mark.parametrize("signum, status, line", [
    (signal.SIGINT, 130, "interrupted"),
    (signal.SIGTERM, 143, "terminated"),
])
@pytest.mark.parametrize("delay", [5.0, 0.0], ids=["waiting-for-data", "busy"])
def test_signal_during_calibration(workdir, signum, status, line, delay):
    tmp_path, model = workdir
    before = sha256(model)
    mtime = model.stat().st_mtime_ns
    process = start_calibration(tmp_path, model, delay)
    wait_for(tmp_path / "started", process)
    time.sleep(0.2)  # well inside the batch loop
    sent = time.monotonic()
    process.send_signal(signum)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(stuck_process_message(process)) from None
    assert time.monotonic() - sent < 10  # not held up by the sleeping prefetch thread
    assert process.returncode == status, err
    assert err == f"{line}\n"
    assert out == ""
    assert list((tmp_path / "out").iterdir()) == []  # no output, no temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loader.py", "net.onnx", "out", "started"]
    assert sha256(model) == before and model.stat().st_mtime_ns == mtime


def test_an_uninterrupted_run_writes_everything(workdir):
    """The same command, made finite with --num-samples, completes: the test above is no fluke."""
    tmp_path, model = workdir
    process = start_calibration(tmp_path, model, 0.0, "--num-samples", "40", "-q")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "net.cache", "net.calib.json", "net.calib.npz"]


SLOW_IMPORT = '''
import os, time
open(os.environ["QTOOL_TEST_MARKER"], "w").close()
time.sleep(30)

def load_data():
    return []
'''


@pytest.mark.parametrize("signum, status, line", [
    (signal.SIGINT, 130, "interrupted"),
    (signal.SIGTERM, 143, "terminated"),
])
def test_signal_while_the_loader_script_itself_runs(workdir, signum, status, line):
    """The script's own errors (SystemExit included) become one error line with status 1; a
    signal that arrives while its code runs is still an interruption, not a script failure."""
    tmp_path, model = workdir
    (tmp_path / "loader.py").write_text(SLOW_IMPORT)
    process = start_calibration(tmp_path, model, 0.0)
    wait_for(tmp_path / "started", process)
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert (process.returncode, err, out) == (status, f"{line}\n", "")
    assert list((tmp_path / "out").iterdir()) == []
