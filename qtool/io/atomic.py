"""Atomic output files: write to a temporary file beside the target, then rename.

An interrupted command (Ctrl-C, SIGTERM, an error) therefore never leaves a
half-written file at the target path, and an existing file there stays intact
until the new one is complete. Missing parent folders are created; the file gets
the mode an ordinary new file gets under the umask, or keeps the mode of the file
it replaces; every OS error (read-only, no space, name too long) is one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from qtool.errors import QtoolError

# Names of temporary files beside an output: short, so a long output name still fits.
TEMP_PREFIX = ".qtool-"


def reason(exc: OSError) -> str:
    """An OSError as a few words: 'No space left on device', 'Read-only file system', ..."""
    return exc.strerror or str(exc) or type(exc).__name__


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto target on success."""
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    tmp_path = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.chmod(tmp_path, output_mode(target))
        os.replace(tmp_path, target)
    except OSError as exc:
        raise QtoolError(f"cannot write {target}: {reason(exc)}") from None
    finally:
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                tmp_path.unlink()


def output_mode(target: Path) -> int:
    """The mode of the file being replaced, else what open() gives a new file under the umask."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike, obj) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")
