"""Atomic output files: write to a temporary file beside the target, then rename.

An interrupted command (Ctrl-C, SIGTERM, an error) therefore never leaves a
half-written file at the target path, and an existing file there stays intact
until the new one is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from qtool.errors import QtoolError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto target on success."""
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise QtoolError(f"output directory does not exist: {parent}")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike, obj) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def refuse_overwrite_input(output: str | os.PathLike, *inputs: str | os.PathLike) -> None:
    """Refuse an output path that is one of the inputs, or an existing file inside an input
    folder (never modify an input)."""
    out = Path(output).resolve()
    for path in inputs:
        if path is None or not Path(path).exists():
            continue
        source = Path(path).resolve()
        if source == out:
            raise QtoolError(f"output {output} would overwrite the input {path}; choose another -o")
        if source.is_dir() and source in out.parents and out.exists():
            raise QtoolError(f"output {output} would overwrite a file in the input folder {path}; "
                             f"choose another -o")
