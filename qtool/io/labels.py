"""Class labels for accuracy checks (`--labels FILE`), in the order the data yields its samples.

Accepted files:
  .npy                   integer array, shape [N] (or [N, 1])
  text, one int a line   the n-th line labels the n-th sample
  text, "<file> <int>"   ImageNet style; matched to the image files of the data by their path
                         relative to the data folder, or by bare file name when that is unique
Blank lines and lines starting with '#' are skipped. File names may contain spaces (the label is
the last field).

Positional labels (.npy, one int a line) must number exactly the samples the data holds, or
exactly the samples read when num_samples cuts the data short; with the full count, the first
num_samples are returned. Named labels must cover every image read; extra names are ignored (a
label list for a whole dataset serves any subset of it). Without a data source, labels come back
in file order.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from qtool.errors import QtoolError
from qtool.io import arrays

log = logging.getLogger(__name__)


def read_labels(path: str | os.PathLike, data_source=None) -> np.ndarray:
    """Labels as int64, one per sample of `data_source` in its order (file order without one)."""
    path = Path(path)
    if not path.is_file():
        raise QtoolError(f"labels file not found: {path}")
    if path.suffix.lower() == ".npy":
        return _positional(_read_npy(path), path, data_source)
    kind, entries = _read_text(path)
    if kind == "positional":
        return _positional(np.array([label for _, label, _ in entries], dtype=np.int64), path,
                           data_source)
    return _named(entries, path, data_source)


def _read_npy(path: Path) -> np.ndarray:
    labels = arrays.load_npy(path)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise QtoolError(f"labels {path} must be a 1-D array of class indices, found shape "
                         f"{tuple(labels.shape)}")
    if labels.dtype.kind not in "iu":
        raise QtoolError(f"labels {path} must hold integers, found {labels.dtype}")
    if labels.dtype == np.uint64 and labels.size and labels.max() > np.iinfo(np.int64).max:
        raise QtoolError(f"labels {path} holds values too large for int64")
    return labels.astype(np.int64)


def _parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _read_text(path: Path) -> tuple[str, list[tuple[str | None, int, int]]]:
    """('positional' | 'named', [(name or None, label, line number)])."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise QtoolError(f"labels {path} is not UTF-8 text (nor a .npy file)") from None
    except OSError as exc:
        raise QtoolError(f"cannot read labels {path}: {exc.strerror}") from None
    entries = []
    kind = None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.rsplit(None, 1)
        if len(fields) == 1:
            this, name, label = "positional", None, _parse_int(fields[0])
        else:
            this, name, label = "named", fields[0], _parse_int(fields[1])
        if label is None:
            raise QtoolError(f"labels {path} line {number}: expected '<class index>' or "
                             f"'<file> <class index>', got {line!r}")
        if kind is None:
            kind = this
        elif kind != this:
            raise QtoolError(f"labels {path} line {number}: mixes '<file> <class index>' lines "
                             f"with bare class indices")
        entries.append((name, label, number))
    if not entries:
        raise QtoolError(f"labels {path} holds no labels")
    return kind, entries


def _positional(labels: np.ndarray, path: Path, source) -> np.ndarray:
    if source is None:
        return labels
    used, available = source.num_samples, source.available_samples
    if used is None:  # a loader script of unknown length: the caller pairs them as it reads
        return labels
    if len(labels) == used:
        return labels
    if available is not None and len(labels) == available:
        return labels[:used]
    counts = f"{used}" if available in (None, used) else f"{available} ({used} read)"
    raise QtoolError(f"labels {path} has {len(labels)} entries but the data has {counts} samples")


def _key(name: str) -> str:
    return Path(name.replace("\\", "/")).as_posix().removeprefix("./")


def _named(entries, path: Path, source) -> np.ndarray:
    by_name: dict[str, tuple[int, int]] = {}
    for name, label, number in entries:
        key = _key(name)
        if key in by_name:
            raise QtoolError(f"labels {path}: {name} is listed twice (lines {by_name[key][1]} "
                             f"and {number})")
        by_name[key] = (label, number)
    if source is None:
        return np.array([label for _, label, _ in entries], dtype=np.int64)
    files = source.sample_files()
    if files is None:
        raise QtoolError(f"labels {path} names files, but the data ({source.kind}) is not one "
                         f"image per file; use a .npy of labels or one class index per line")
    root = Path(source.root)
    base_counts: dict[str, int] = {}
    for file in files:
        base_counts[file.name] = base_counts.get(file.name, 0) + 1
    labels, missing = [], []
    for file in files:
        relative = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name
        if relative in by_name:
            labels.append(by_name[relative][0])
        elif file.name in by_name and base_counts[file.name] == 1:
            labels.append(by_name[file.name][0])
        else:
            missing.append(relative)
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        ambiguous = any(Path(m).name in by_name for m in missing)
        hint = "; names found in several folders need their folder" if ambiguous else ""
        raise QtoolError(f"labels {path} lacks {len(missing)} of the {len(files)} data file(s): "
                         f"{shown}{hint}")
    unused = len(by_name) - len(labels)
    if unused > 0:
        log.debug("labels %s: %d entries name files not read", path, unused)
    return np.array(labels, dtype=np.int64)
