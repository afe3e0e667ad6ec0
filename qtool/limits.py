"""Resource caps: an input that would need more memory than these is refused with one line that
names the cap and how to raise it, instead of exhausting the machine.

    [limits]                       (in the --config file of any command, or the pipeline's config)
    data_file_bytes = 2147483648   bytes one .npy/.npz data file may hold once decompressed
    sparse_bytes = 1073741824      bytes the sparse initializers of a model take when made dense
    bins = 65536                   histogram bins (--bins) a calibration may use

Values are integers; sizes may also be written "8 GiB", "512 MiB". The caps are set for the
whole process when a command reads its config (configure), and read where the inputs are read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

from qtool.errors import UsageError

GiB = 1 << 30


@dataclass(frozen=True)
class Limits:
    data_file_bytes: int = 2 * GiB
    sparse_bytes: int = 1 * GiB
    bins: int = 1 << 16


DEFAULTS = Limits()
_current = DEFAULTS
_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": GiB, "tib": 1 << 40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def current() -> Limits:
    return _current


def configure(table: dict | None) -> Limits:
    """Set the caps from a [limits] table (missing keys keep their defaults)."""
    global _current
    _current = parse(table)
    return _current


def parse(table: dict | None) -> Limits:
    table = table or {}
    if not isinstance(table, dict):
        raise UsageError("config key [limits] must be a table")
    known = {f.name for f in fields(Limits)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise UsageError(f"unknown key {unknown[0]!r} in [limits] (known: {', '.join(sorted(known))})")
    return replace(DEFAULTS, **{key: _size(key, value) for key, value in table.items()})


def _size(key: str, value) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", value)
        if match and match.group(2).lower() in _UNITS and int(match.group(1)) > 0:
            return int(match.group(1)) * _UNITS[match.group(2).lower()]
    raise UsageError(f"[limits] {key} must be a positive integer (or a size such as \"8 GiB\"), "
                     f"got {value!r}")


def how_to_raise(key: str) -> str:
    return f"raise [limits] {key} in the --config file if this is intended"
