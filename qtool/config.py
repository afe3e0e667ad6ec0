"""TOML configuration: one file, one table per step, used as defaults that flags override.

    [calibrate]   method = "entropy", bins = 2048, ...
    [preprocess]  resize = 256, crop = 224, layout = "NCHW", ...
    [quantize]    exclude = ["/head/.*"], high_precision = "fp16", ...
    [build] [compare] [sensitivity] [pipeline]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from qtool.errors import QtoolError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def load_config(path: str | os.PathLike | None) -> dict:
    """Parse a TOML file into a dict; missing or malformed files are a user error."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise QtoolError(f"config file not found: {path}")
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise QtoolError(f"invalid TOML in {path}: {exc}") from None
    except UnicodeDecodeError:
        raise QtoolError(f"invalid TOML in {path}: not UTF-8 text") from None
    except RecursionError:
        raise QtoolError(f"invalid TOML in {path}: nested too deeply") from None


def section(config: dict, name: str) -> dict:
    value = config.get(name, {})
    if not isinstance(value, dict):
        raise QtoolError(f"config key [{name}] must be a table")
    return value
