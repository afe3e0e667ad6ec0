"""TensorRT's legacy calibration cache (implicit quantization, TensorRT 10 and older).

    TRT-100300-EntropyCalibration2
    input: 3c010204
    conv1_out: 3d1c8f5c

One `name: <hex>` line per tensor, the hex being the big-endian bytes of the float32 scale
(scale = amax / 127). The version in the header is TensorRT's NV_TENSORRT_VERSION integer
(major * 10000 + minor * 100 + patch for 10.x, major * 1000 + minor * 100 + patch before).
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import numpy as np

from qtool.errors import QtoolError
from qtool.io.atomic import write_text

QMAX = 127.0
DEFAULT_TRT_VERSION = "10.3.0"
_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")
_LINE = re.compile(r"^(.+): ([0-9a-fA-F]{8})$")
# Characters a name in the cache cannot hold: line breaks of any kind (TensorRT reads lines,
# Python's splitlines also breaks at \x0b, \x85, \u2028, ...), and NUL (C strings).
_UNWRITABLE = re.compile(r"[\x00\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def check_name(name: str, where: str) -> None:
    """Refuse a tensor name the cache format cannot carry (or that reads back as another)."""
    if not name or _UNWRITABLE.search(name) or name != name.strip(" ") or name.endswith(":"):
        raise QtoolError(f"{where}: tensor name {name!r} cannot be stored in a TensorRT cache "
                         f"(line breaks, NUL, surrounding spaces or a trailing ':')")


def version_number(version: str) -> int:
    """'10.3.0' -> 100300, '8.6.1' -> 8601 (TensorRT's NV_TENSORRT_VERSION encoding); a build
    number ('10.16.1.11', as tensorrt.__version__ has it) is not part of it."""
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?(?:\.\d+)?", version.strip())
    if not match:
        raise QtoolError(f"TensorRT version must look like 10.3.0, got {version!r}")
    major, minor, patch = (int(part or 0) for part in match.groups())
    if major >= 10:
        return major * 10000 + minor * 100 + patch
    return major * 1000 + minor * 100 + patch


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", np.float32(scale)).hex()


def hex_to_scale(text: str) -> float:
    return float(struct.unpack(">f", bytes.fromhex(text))[0])


def format_cache(amax: dict[str, float], trt_version: str = DEFAULT_TRT_VERSION,
                 algorithm: str = "EntropyCalibration2") -> str:
    lines = [f"TRT-{version_number(trt_version)}-{algorithm}"]
    for name, value in amax.items():
        check_name(name, "TensorRT cache")
        lines.append(f"{name}: {scale_to_hex(float(value) / QMAX)}")
    return "\n".join(lines) + "\n"


def write_cache(path: str | os.PathLike, amax: dict[str, float],
                trt_version: str = DEFAULT_TRT_VERSION) -> None:
    write_text(path, format_cache(amax, trt_version))


def read_cache(path: str | os.PathLike) -> tuple[str, dict[str, float]]:
    """Parse a cache into (header, tensor name -> scale). Every malformed line is an error."""
    path = Path(path)
    if not path.is_file():
        raise QtoolError(f"TensorRT calibration cache not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise QtoolError(f"{path} is not a TensorRT calibration cache (not text)") from None
    # Lines end at \n only, as TensorRT reads them; other line breaks inside are refused below.
    lines = [(number, line.removesuffix("\r")) for number, line in
             enumerate(text.split("\n"), start=1) if line.strip()]
    if not lines or not _HEADER.match(lines[0][1]):
        raise QtoolError(f"{path} is not a TensorRT calibration cache (no TRT-<version>-<algorithm> header)")
    scales = {}
    for number, line in lines[1:]:
        match = _LINE.match(line)
        if not match:
            raise QtoolError(f"{path}:{number}: expected 'name: <8 hex digits>', got {line[:80]!r}")
        name = match.group(1)
        check_name(name, f"{path}:{number}")
        if name in scales:
            raise QtoolError(f"{path}:{number}: tensor {name!r} appears twice")
        scale = hex_to_scale(match.group(2))
        if not np.isfinite(scale) or scale <= 0:
            raise QtoolError(f"{path}:{number}: scale of {name!r} is {scale}, not a positive number")
        scales[name] = scale
    if not scales:
        raise QtoolError(f"{path} holds no tensor scales (only its header)")
    return lines[0][1], scales


def cache_amax(scales: dict[str, float]) -> dict[str, float]:
    """Scales back to amax. The product is exact in float64 (24 + 7 mantissa bits), so
    float32(amax / 127) gives back the very same scale: the cache round-trips bit for bit."""
    return {name: float(scale) * QMAX for name, scale in scales.items()}
