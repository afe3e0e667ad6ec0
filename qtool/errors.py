"""Errors that end a command with one clear line instead of a traceback.

Anything that is the user's doing (bad path, wrong data, missing optional
package) raises a QtoolError; the CLI prints its message and exits with its
exit_code. Bugs raise anything else and keep their traceback.
"""

from __future__ import annotations


class QtoolError(Exception):
    """A user-facing error: one line, exit status 1."""

    exit_code = 1


class UsageError(QtoolError):
    """Options that contradict each other or are missing: exit status 2."""

    exit_code = 2


class MissingDependency(QtoolError):
    """An optional package (tensorrt, matplotlib, a CUDA binding) or a GPU is absent."""


class GateFailed(QtoolError):
    """An accuracy threshold was not met: exit status 3."""

    exit_code = 3


class Interrupted(SystemExit):
    """Ctrl-C (SIGINT) or SIGTERM: the command ends with status 128 + the signal's number.

    A SystemExit rather than a KeyboardInterrupt, so that neither `except Exception` on the way
    out nor click's own Ctrl-C handling (which prints a blank line) gets in between.
    """

    @property
    def signal_name(self) -> str:
        import signal

        return "interrupted" if self.code == 128 + signal.SIGINT else "terminated"


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type's name when empty), for a one-line
    error; at most `limit` characters when given (some libraries put whole dumps in one line)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]
