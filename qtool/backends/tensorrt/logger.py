"""A TensorRT logger that writes to stderr and remembers errors.

TensorRT's own `trt.Logger` prints to stdout, which would mix its messages into results and
`--json` output; this one prints on stderr and keeps the error lines so a failed parse, build or
deserialisation can be reported in one line.

TensorRT treats the logger as a process-wide singleton: the one given to the first Builder or
Runtime keeps receiving the messages, and it must outlive every object made through it. So qtool
makes one per tensorrt module (`shared_logger`) and, for each build or run, sets its level and
forgets older errors, instead of creating a logger that TensorRT might never call. TensorRT may
call it from several threads, so the error list is guarded.
"""

from __future__ import annotations

import sys
import threading

SEVERITIES = ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")
LABELS = {"INTERNAL_ERROR": "fatal", "ERROR": "error", "WARNING": "warning",
          "INFO": "info", "VERBOSE": "verbose"}


def level_for(verbose: int = 0, quiet: bool = False) -> str:
    """qtool's -q/-v/-vv mapped onto TensorRT's severities."""
    if quiet:
        return "ERROR"
    return ("WARNING", "INFO", "VERBOSE")[min(max(verbose, 0), 2)]


def severity_rank(severity) -> int:
    name = getattr(severity, "name", None)
    if name in SEVERITIES:
        return SEVERITIES.index(name)
    try:
        return int(severity)
    except (TypeError, ValueError):
        return SEVERITIES.index("WARNING")


def make_logger(trt, level: str | None = "WARNING", stream=None):
    """An instance of a `trt.ILogger` subclass printing messages up to `level` on stderr
    (nothing with level None); errors are kept either way."""
    if level is not None and level not in SEVERITIES:
        raise ValueError(f"unknown TensorRT log level {level!r}")
    base = trt.ILogger

    class StderrLogger(base):
        def __init__(self):
            base.__init__(self)
            self.errors: list[str] = []
            self.stream = stream
            self._lock = threading.Lock()
            self.set_level(level)

        def set_level(self, value: str | None) -> None:
            if value is not None and value not in SEVERITIES:
                raise ValueError(f"unknown TensorRT log level {value!r}")
            self.max_rank = SEVERITIES.index(value) if value is not None else -1

        def forget(self) -> None:
            """Drop the errors kept so far: a new build or run starts."""
            with self._lock:
                self.errors.clear()

        def log(self, severity, msg):
            rank = severity_rank(severity)
            text = str(msg).strip()
            if rank <= 1:
                with self._lock:
                    self.errors.append(text)
            if rank <= self.max_rank:
                label = LABELS[SEVERITIES[min(rank, len(SEVERITIES) - 1)]]
                print(f"[TensorRT] {label}: {text}", file=self.stream or sys.stderr, flush=True)

        def last_error(self) -> str:
            """The most recent error message, on one line ('' when there was none)."""
            with self._lock:
                errors = list(self.errors)
            for message in reversed(errors):
                line = " ".join(message.split())
                if line:
                    return line
            return ""

    return StderrLogger()


_SHARED: list[tuple[object, object]] = []  # (tensorrt module, its logger)
_SHARED_LOCK = threading.Lock()


def shared_logger(trt, level: str | None = "WARNING", stream=None):
    """The one logger qtool gives TensorRT (module `trt`), at `level`, with no errors kept yet."""
    with _SHARED_LOCK:
        for module, logger in _SHARED:
            if module is trt:
                break
        else:
            logger = make_logger(trt, level, stream)
            _SHARED.append((trt, logger))
    logger.set_level(level)
    logger.stream = stream
    logger.forget()
    return logger
