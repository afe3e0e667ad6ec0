"""Reading a calibration file: parsed as data (no pickle) and validated field by field, so a
corrupt or foreign file gets one clear error rather than a crash further down."""

from __future__ import annotations

import math
import os
from pathlib import Path

from qtool.calib.calibfile.records import (
    FORMAT,
    HISTOGRAM_METHODS,
    METHODS,
    VERSION,
    Calibration,
    TensorCalibration,
)
from qtool.errors import QtoolError


def read_calibration(path: str | os.PathLike) -> Calibration:
    """Read and validate a calibration file; any problem is one QtoolError naming the file."""
    import json

    path = Path(path)
    if not path.is_file():
        raise QtoolError(f"calibration file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise QtoolError(f"{path} is not a valid calibration file: {exc}") from None
    except RecursionError:
        raise QtoolError(f"{path} is not a valid calibration file: nested too deeply") from None
    try:
        calib = from_dict(data)
    except _SchemaError as exc:
        raise QtoolError(f"{path} is not a valid calibration file: {exc}") from None
    calib.path = path
    return calib


class _SchemaError(Exception):
    pass


def _reject_constant(name):
    raise ValueError(f"non-finite number {name} is not allowed")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise _SchemaError(message)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_sha256(value) -> bool:
    return (isinstance(value, str) and len(value) == 64
            and all(ch in "0123456789abcdef" for ch in value))


def _is_number(value) -> bool:
    """A finite number that fits a float (JSON integers may be far larger: 10**400)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def from_dict(data) -> Calibration:
    _require(isinstance(data, dict), "top level must be an object")
    _require(data.get("format") == FORMAT, f"'format' must be {FORMAT!r}")
    _require(data.get("version") == VERSION, f"unsupported version {data.get('version')!r}")
    model = data.get("model")
    _require(isinstance(model, dict), "'model' must be an object")
    sha = model.get("sha256")
    _require(_is_sha256(sha), "'model.sha256' must be a sha256 hex string")
    _require(model.get("file") is None or isinstance(model.get("file"), str),
             "'model.file' must be a string")
    method = data.get("method")
    _require(method in METHODS, f"unknown method {method!r}")
    tensors_in = data.get("tensors")
    _require(isinstance(tensors_in, dict), "'tensors' must be an object")
    tensors = {name: _tensor(name, entry) for name, entry in tensors_in.items()}
    histograms = data.get("histograms")
    _check_histograms(histograms, tensors)
    for key in ("num_samples", "num_batches"):
        _require(_is_int(data.get(key, 0)) and data.get(key, 0) >= 0, f"'{key}' must be a count")
    bins = data.get("bins")
    _require(bins is None or (_is_int(bins) and bins > 0), "'bins' must be a positive integer")
    for key in ("params", "tools", "config", "auto"):
        _require(isinstance(data.get(key, {}), dict), f"'{key}' must be an object")
    _require(method != "auto" or all(t.method or t.rule for t in tensors.values()),
             "with method 'auto' every tensor records the method that won")
    inputs = model.get("inputs", [])
    _require(isinstance(inputs, list) and all(isinstance(item, dict) for item in inputs),
             "'model.inputs' must be a list of objects")
    for item in inputs:
        _check_seen(item)
    _require(data.get("shard") is None or isinstance(data.get("shard"), str),
             "'shard' must be a string like '0/4'")
    return Calibration(
        model_sha256=sha, method=method, tensors=tensors, params=data.get("params", {}),
        bins=bins, model_file=model.get("file"), inputs=inputs,
        num_samples=data.get("num_samples", 0), num_batches=data.get("num_batches", 0),
        shard=data.get("shard"), tools=data.get("tools", {}), config=data.get("config", {}),
        histogram_file=histograms["file"] if histograms else None,
        histogram_sha256=histograms.get("sha256") if histograms else None,
        auto=data.get("auto"),
    )


def _tensor(name: str, entry) -> TensorCalibration:
    """One entry of 'tensors', checked."""
    _require(isinstance(entry, dict), f"tensor {name!r} must be an object")
    amax = entry.get("amax")
    _require(_is_number(amax) and amax > 0, f"tensor {name!r}: amax must be a finite positive number")
    abs_max = entry.get("abs_max")
    _require(abs_max is None or (_is_number(abs_max) and abs_max >= 0),
             f"tensor {name!r}: abs_max must be a finite non-negative number")
    for counter in ("count", "nan", "inf"):
        value = entry.get(counter, 0)
        _require(_is_int(value) and value >= 0, f"tensor {name!r}: {counter} must be a count")
    key = entry.get("key")
    _require(key is None or isinstance(key, str), f"tensor {name!r}: key must be a string")
    rule = entry.get("rule")
    _require(rule in (None, "bounded"), f"tensor {name!r}: unknown rule {rule!r}")
    chosen = entry.get("method")
    _require(chosen is None or chosen in HISTOGRAM_METHODS,
             f"tensor {name!r}: unknown method {chosen!r}")
    candidates = entry.get("candidates")
    _require(candidates is None or (isinstance(candidates, dict) and all(
        method in HISTOGRAM_METHODS and isinstance(value, dict) for method, value in candidates.items())),
        f"tensor {name!r}: 'candidates' must map methods to objects")
    return TensorCalibration(
        float(amax), None if abs_max is None else float(abs_max),
        entry.get("count", 0), entry.get("nan", 0), entry.get("inf", 0), key, rule, chosen,
        candidates)


def _check_histograms(histograms, tensors: dict[str, TensorCalibration]) -> None:
    """'histograms': null, or a file name beside the calibration file that every histogrammed
    tensor has a key into."""
    _require(histograms is None or (isinstance(histograms, dict)
                                    and isinstance(histograms.get("file"), str)),
             "'histograms' must be null or an object with a 'file'")
    if histograms is not None:
        _require(Path(histograms["file"]).name == histograms["file"] and "\x00" not in histograms["file"],
                 "'histograms.file' must be a file name beside the calibration file")
        _require(histograms.get("sha256") is None or _is_sha256(histograms.get("sha256")),
                 "'histograms.sha256' must be a sha256 hex string")
        # only a bounded tensor calibrated by its max alone (count 0) may have no entry
        _require(all(tensor.key or (tensor.rule == "bounded" and tensor.count == 0)
                     for tensor in tensors.values()),
                 "every histogrammed tensor needs a histogram 'key' when 'histograms' is set")


def _check_seen(item: dict) -> None:
    """`seen` (optional, qtool.calib.signature): the smallest and largest size per axis."""
    if "seen" not in item:
        return
    seen, name = item["seen"], item.get("name")
    _require(isinstance(name, str), "'model.inputs' entries with 'seen' need a 'name'")
    _require(isinstance(seen, dict) and all(
        isinstance(seen.get(key), list) and all(_is_int(d) and d >= 0 for d in seen[key])
        for key in ("min", "max")), f"input {name!r}: 'seen' must hold 'min' and 'max' sizes")
    _require(len(seen["min"]) == len(seen["max"]) and all(
        a <= b for a, b in zip(seen["min"], seen["max"])),
        f"input {name!r}: 'seen' min and max must have one size per axis, min <= max")
