"""Threads of the calibration pass: the observers' updates run beside onnxruntime, and a second
session is built beside the first.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from qtool.backends.onnxruntime.buffers import OutputBufferSets

_DONE = object()


class ObserverWorker:
    """Runs the observers' updates in a background thread so numpy overlaps with onnxruntime."""

    # How often an idle worker looks whether it was abandoned.
    POLL_SECONDS = 0.5

    def __init__(self):
        self.jobs: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.abandoned = False
        self.thread = threading.Thread(target=self._work, daemon=True, name="qtool-histograms")
        self.thread.start()

    def _work(self):
        while True:
            try:
                job = self.jobs.get(timeout=self.POLL_SECONDS)
            except queue.Empty:
                if self.abandoned:
                    return
                continue
            if job is _DONE or self.abandoned:
                return
            updates, token = job
            try:
                if self.error is None:
                    for update, value in updates:
                        update(value)
            except BaseException as exc:
                self.error = exc
            finally:
                OutputBufferSets.release(token)
                # hold no arrays between jobs: their memory is the sessions' to reuse or free
                job = updates = token = update = value = None
                self.jobs.task_done()

    def drain(self) -> None:
        """Wait until every submitted batch is counted (the histograms are then up to date)."""
        self.jobs.join()
        if self.error is not None:
            raise self.error

    def submit(self, updates: list[tuple[Callable, np.ndarray]], token=None):
        """Call update(value) for each pair, in order, in the worker thread."""
        if self.error is not None:
            raise self.error
        self.jobs.put((updates, token))

    def close(self):
        self.jobs.put(_DONE)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """Let the thread end on its own, without waiting for it or touching its queue: the
        caller is unwinding an error or a signal, and a signal can leave a lock that the main
        thread took inside a `with` block held (the thread is a daemon, so that cannot hold up
        the process's exit either)."""
        self.abandoned = True


def in_background(function: Callable, *args) -> Future:
    """function(*args) in a daemon thread, its result or exception in the returned future. (An
    executor's threads are joined at exit, so one stuck behind a signal would hang the process.)"""
    future: Future = Future()

    def run():
        try:
            result = function(*args)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    threading.Thread(target=run, daemon=True, name="qtool-session").start()
    return future
