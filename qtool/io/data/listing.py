"""Which data files a path names: one file, or every data file of one kind under a folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from qtool.errors import QtoolError
from qtool.io.files import require_regular
from qtool.io.images import IMAGE_SUFFIXES

log = logging.getLogger("qtool.io.data")

KIND_SUFFIXES = {"npy": (".npy",), "npz": (".npz",), "images": IMAGE_SUFFIXES}


def _hidden(name: str) -> bool:
    return name.startswith(".")


def list_data_files(path: Path) -> tuple[str, list[Path]]:
    """(kind, files) for a data path; see qtool.io.data's notes for the rules."""
    if path.exists() and not path.is_dir():
        require_regular(path)
        for kind, suffixes in KIND_SUFFIXES.items():
            if path.suffix.lower() in suffixes:
                return kind, [path]
        raise QtoolError(f"unsupported data file {path}: expected .npy, .npz, an image "
                         f"({', '.join(IMAGE_SUFFIXES)}) or a folder of them")
    if not path.is_dir():
        raise QtoolError(f"data not found: {path}")
    found: dict[str, list[Path]] = {kind: [] for kind in KIND_SUFFIXES}
    ignored = 0
    for folder, dirs, names in os.walk(path, onerror=_walk_error):
        dirs[:] = [d for d in dirs if not _hidden(d)]
        for name in names:
            if _hidden(name):
                continue
            suffix = os.path.splitext(name)[1].lower()
            kind = next((k for k, s in KIND_SUFFIXES.items() if suffix in s), None)
            if kind is None:
                ignored += 1
            else:
                require_regular(Path(folder) / name)  # a FIFO would block the reader forever
                found[kind].append(Path(folder) / name)
    kinds = {kind: files for kind, files in found.items() if files}
    if not kinds:
        raise QtoolError(f"no data files found in {path} (looked for .npy, .npz and images "
                         f"{', '.join(IMAGE_SUFFIXES)})")
    if len(kinds) > 1:
        mix = ", ".join(f"{len(files)} {kind}" for kind, files in kinds.items())
        raise QtoolError(f"{path} mixes kinds of data files ({mix}); keep one kind per folder")
    if ignored:
        log.debug("%s: ignoring %d file(s) that are not data", path, ignored)
    ((kind, files),) = kinds.items()
    files.sort(key=lambda f: f.relative_to(path).parts)
    return kind, files


def _walk_error(exc: OSError) -> None:
    raise QtoolError(f"cannot read folder {exc.filename}: {exc.strerror}")
