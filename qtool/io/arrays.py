"""Read .npy and .npz files safely: never unpickle, and fail with one line naming the file.

Headers (shape and dtype) are read on their own, without the data, so a whole directory can be
checked against the model before the first batch runs.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from qtool import limits
from qtool.errors import QtoolError, first_line
from qtool.io.files import open_regular

Header = tuple[tuple[int, ...], np.dtype]



def read_header(handle: IO[bytes], where: str) -> Header:
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    except Exception as exc:  # numpy raises ValueError, EOFError, SyntaxError on garbage
        raise QtoolError(f"{where} is not a readable .npy array: {first_line(exc)}") from None
    _refuse_objects(dtype, where)
    return tuple(int(d) for d in shape), np.dtype(dtype)


def _refuse_objects(dtype: np.dtype, where: str) -> None:
    if dtype.hasobject:
        raise QtoolError(f"{where} holds Python objects; qtool loads only plain numeric arrays "
                         f"(never pickled data)")
    if dtype.names is not None:
        raise QtoolError(f"{where} holds a structured array; save one plain array per input")


def check_size(path: Path, headers: list[Header]) -> None:
    """Refuse a data file whose arrays would take more memory than [limits] data_file_bytes
    (a small compressed .npz can decompress to gigabytes)."""
    total = sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers)
    cap = limits.current().data_file_bytes
    if total > cap:
        raise QtoolError(f"{path} holds {total} bytes of arrays once decompressed, above the cap "
                         f"of {cap}; {limits.how_to_raise('data_file_bytes')}")


def npy_header(path: Path) -> Header:
    """Shape and dtype of a .npy file, read from its header only."""
    try:
        with open_regular(path) as handle:
            header = read_header(handle, str(path))
    except OSError as exc:
        raise QtoolError(f"cannot read {path}: {exc.strerror or first_line(exc)}") from None
    check_size(path, [header])
    return header


def npz_headers(path: Path, wanted: list[str]) -> tuple[list[str], dict[str, Header]]:
    """(every key in a .npz archive, shape and dtype of the wanted keys that are present).

    Keys are as np.savez names them; arrays that are not wanted are never read, not even their
    header, so extra content (labels, metadata) cannot get in the way.
    """
    keys, headers = [], {}
    try:
        with open_regular(path) as raw, zipfile.ZipFile(raw) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                key = member[: -len(".npy")]
                keys.append(key)
                if key not in wanted:
                    continue
                with archive.open(member) as handle:
                    headers[key] = read_header(handle, f"{path} [{key}]")
    except QtoolError:
        raise
    except Exception as exc:  # zipfile raises BadZipFile, NotImplementedError, RuntimeError, ...
        raise QtoolError(f"{path} is not a readable .npz archive: {first_line(exc)}") from None
    check_size(path, list(headers.values()))
    return keys, headers


def load_npy(path: Path) -> np.ndarray:
    # The file is opened here, not by np.load, so that it is closed whatever np.load makes of it.
    try:
        with open_regular(path) as handle:
            if handle.read(4) == b"PK\x03\x04":
                raise QtoolError(f"{path} is a .npz archive, not a .npy array; rename it to .npz")
            handle.seek(0)
            check_size(path, [read_header(handle, str(path))])
            handle.seek(0)
            array = np.load(handle, allow_pickle=False)
    except QtoolError:
        raise
    except Exception as exc:  # ValueError (pickle, bad header), OSError, EOFError on truncation
        raise QtoolError(f"cannot load {path} as a .npy array: {first_line(exc)}") from None
    _refuse_objects(array.dtype, str(path))
    return array


def load_npz(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    """Load the named arrays of a .npz archive (other arrays are never read)."""
    out = {}
    npz_headers(path, keys)  # the size cap, checked again on every read
    try:
        with open_regular(path) as handle, np.load(handle, allow_pickle=False) as archive:
            for key in keys:
                out[key] = archive[key]
    except QtoolError:
        raise
    except Exception as exc:  # BadZipFile, zlib.error, ValueError, EOFError, KeyError
        raise QtoolError(f"cannot load {path} as a .npz archive: {first_line(exc)}") from None
    for key, array in out.items():
        if not isinstance(array, np.ndarray):
            raise QtoolError(f"{path} [{key}] is not a .npy array")
        _refuse_objects(array.dtype, f"{path} [{key}]")
    return out
