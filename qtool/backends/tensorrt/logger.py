"""A TensorRT logger that writes to stderr and remembers errors.

TensorRT's own `trt.Logger` prints to stdout, which would mix its messages into results and
`--json` output; this one prints on stderr and keeps the error lines so a failed parse, build or
deserialisation can be reported in one line.
"""

from __future__ import annotations

import sys

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
            self.max_rank = SEVERITIES.index(level) if level is not None else -1
            self.errors: list[str] = []
            self.stream = stream

        def log(self, severity, msg):
            rank = severity_rank(severity)
            text = str(msg).strip()
            if rank <= 1:
                self.errors.append(text)
            if rank <= self.max_rank:
                label = LABELS[SEVERITIES[min(rank, len(SEVERITIES) - 1)]]
                print(f"[TensorRT] {label}: {text}", file=self.stream or sys.stderr, flush=True)

        def last_error(self) -> str:
            """The most recent error message, on one line ('' when there was none)."""
            for message in reversed(self.errors):
                line = " ".join(message.split())
                if line:
                    return line
            return ""

    return StderrLogger()
