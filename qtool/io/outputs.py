"""The output guard: every path a command will write is checked before any work starts.

    guard_outputs([output, histograms], models=[model], calibrations=calibration_files(calib),
                  inputs=[config, data, loader_script])

An output may not be an input of the run, nor lie inside an input folder:
  models        the model file and its external-data files
  calibrations  the calibration file and its histogram .npz (the caller names them, with
                qtool.calib.calibfile.paths.calibration_files: this module knows no calibration format)
  inputs        any other file or folder read (configs, scripts, labels, data); a folder
                covers everything in it
An output that exists must be a regular file: it is replaced by a rename, which would turn a
device node, a FIFO or a folder into a plain file. Two outputs of one run may not be one file.
A missing parent folder is created when the output is written (io/atomic.py); its nearest
existing ancestor must be a writable folder now, and every name must fit the file system.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from qtool.errors import QtoolError, UsageError
from qtool.io.atomic import reason
from qtool.io.files import kind_of

PathLike = str | os.PathLike


def guard_outputs(outputs: Iterable[PathLike | None], *, models: Iterable[PathLike | None] = (),
                  calibrations: Iterable[PathLike | None] = (),
                  inputs: Iterable[PathLike | None] = ()) -> None:
    """Refuse (one QtoolError line) any output that would destroy an input or cannot be written.
    None entries are skipped, so optional outputs and inputs can be passed as they are."""
    outputs = [Path(out) for out in outputs if out is not None and str(out) != ""]
    if not outputs:
        return
    existing = any(_exists(out) for out in outputs)
    sources: list[tuple[Path, str]] = []  # (path, what it is in a message)
    for model in models:
        if model is not None:
            sources.append((Path(model), f"the input {model}"))
            if existing:  # only a file that exists can be a model's external data
                sources.extend((data, f"the external data of the input {model}")
                               for data in _external_data(Path(model)))
    sources.extend((Path(path), f"the input {path}") for path in calibrations
                   if path is not None)
    sources.extend((Path(path), f"the input {path}") for path in inputs
                   if path is not None and str(path) != "")
    resolved_sources = [(source, _resolve(source), what) for source, what in sources]
    seen: dict[Path, Path] = {}
    for out in outputs:
        _check_kind(out)
        _check_folder(out)
        resolved = _resolve(out)
        if resolved in seen:
            raise UsageError(f"{seen[resolved]} and {out} are the same output file; give "
                             f"different paths")
        seen[resolved] = out
        for source, target, what in resolved_sources:
            _refuse_overlap(out, resolved, source, target, what)


_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG)


def _exists(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def beside(source: PathLike, name: str) -> Path:
    """Where an output named `name` goes without -o: beside `source` when that folder is the
    user's own (owned by the user and writable), else in the current folder: a read-only assets
    folder or a shared model store is never written into unasked."""
    folder = Path(source).parent
    try:
        own = folder.stat().st_uid == os.getuid() and os.access(folder, os.W_OK | os.X_OK)
    except OSError:
        own = False
    return folder / name if own else Path(name)


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # a symbolic-link loop
        raise QtoolError(f"cannot use output {path}: {exc}") from None


def _external_data(model: Path) -> list[Path]:
    """The model's external-data files; none when it cannot be parsed (loading it says why)."""
    import onnx

    from qtool.io.model import check_external_paths

    if not model.is_file():
        return []
    try:
        proto = onnx.load(str(model), load_external_data=False)
        return check_external_paths(proto, model.parent)
    except Exception:  # an unreadable model is refused, with its reason, when it is loaded
        return []


def _refuse_overlap(out: Path, resolved: Path, source: Path, target: Path, what: str) -> None:
    """`resolved` and `target`: `out` and `source` with links resolved."""
    same = resolved == target
    if not same and _exists(out) and _exists(source):
        with contextlib.suppress(OSError):
            same = os.path.samefile(out, source)  # a hard link to the input
    if same:
        raise QtoolError(f"output {out} would overwrite {what}; choose another -o")
    if target in resolved.parents and target.is_dir():
        raise QtoolError(f"output {out} is inside the input folder {source} and would "
                         f"overwrite or add to its contents; choose another -o")


def _check_kind(out: Path) -> None:
    try:
        mode = os.stat(out).st_mode
    except OSError as exc:
        if exc.errno in _ABSENT:  # _check_folder says what is wrong, if anything
            return
        raise QtoolError(f"cannot use output {out}: {reason(exc)}") from None
    if not stat.S_ISREG(mode):
        raise QtoolError(f"output {out} is {kind_of(mode)}, not a regular file; give a file path")


def _check_folder(out: Path) -> None:
    """The nearest existing ancestor must be a writable folder; every new name must fit."""
    folder = Path(os.path.abspath(out)).parent
    missing = [out.name]
    while not _exists(folder):
        missing.append(folder.name)
        folder = folder.parent
    if not folder.is_dir():
        raise QtoolError(f"cannot write {out}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        err = errno.EROFS if _read_only(folder) else errno.EACCES
        raise QtoolError(f"cannot write {out}: {folder}: {os.strerror(err)}")
    limit = _name_max(folder)
    for name in missing:
        if len(os.fsencode(name)) > limit:
            raise QtoolError(f"cannot write {out}: the name {name[:40]}... is longer than "
                             f"{limit} bytes")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255
