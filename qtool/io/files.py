"""Open input files as regular files only.

A FIFO, socket or device among the inputs would block a read forever (or have side effects on
opening), so its kind is checked with os.stat before it is opened; the open itself does not block
(O_NONBLOCK) and the opened descriptor is checked again, in case the path was swapped meanwhile.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from qtool.errors import QtoolError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def kind_of(mode: int) -> str:
    """'a FIFO', 'a folder', ... for a stat mode that is not a regular file's."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def require_regular(path: str | os.PathLike) -> None:
    """Refuse a path that is not a regular file (without opening it)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise QtoolError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise QtoolError(f"{os.fspath(path)} is {kind_of(mode)}, not a regular file")


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open a regular file for reading in binary mode; anything else is one QtoolError line."""
    require_regular(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise QtoolError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise QtoolError(f"{os.fspath(path)} is {kind_of(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
