"""The calibration file: JSON with one amax per tensor, beside an .npz of the histograms.

    {
      "format": "qtool-calibration", "version": 1,
      "model": {"file": "net.onnx", "sha256": "...",
                "inputs": [{"name": "x", "dtype": "float32", "shape": ["N", 3, 224, 224],
                            "seen": {"min": [8, 3, 224, 224], "max": [32, 3, 224, 224]}}]},
      "method": "entropy", "params": {...}, "bins": 2048,
      "num_samples": 200, "num_batches": 200, "shard": null,
      "tools": {...}, "config": {...},
      "histograms": {"file": "net.calib.npz", "sha256": "..."},
      "tensors": {"input.1": {"amax": 2.64, "abs_max": 2.64, "count": 150528,
                              "nan": 0, "inf": 0, "key": "t0"}, ...}
    }

`seen` is each input's smallest and largest size per axis over the calibration batches (the
input signature `qtool build` sizes dynamic dimensions from); files without it are read as before.

Everything is parsed as data (no pickle) and validated, so a corrupt or foreign file gets one
clear error rather than a crash further down.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qtool.calib.channelmean import FORMAT_KEYS as MEAN_KEYS
from qtool.calib.channelmean import ChannelMean
from qtool.calib.histogram import DEFAULT_BINS, DEFAULT_MAX_BINS_FACTOR, AbsHistogram
from qtool.errors import QtoolError, first_line
from qtool.io.atomic import atomic_path, write_json
from qtool.io.hashing import sha256_file

FORMAT = "qtool-calibration"
VERSION = 1
HISTOGRAM_METHODS = ("entropy", "max", "percentile", "mse", "coverage")
# "auto" picks one of the histogram methods per tensor; "trt-cache" is imported from TensorRT
METHODS = (*HISTOGRAM_METHODS, "auto", "trt-cache")
# Smallest base bin count the member size cap assumes (channel means of wide layers fit under it).
MEMBER_FLOOR = 2048


@dataclass
class TensorCalibration:
    amax: float
    abs_max: float | None = None
    count: int = 0
    nan: int = 0
    inf: int = 0
    key: str | None = None  # entry prefix in the histogram .npz; None when there is no histogram
    rule: str | None = None  # "bounded": amax is the observed max, not the method's threshold
    method: str | None = None  # with method "auto": the method whose threshold won
    candidates: dict | None = None  # with "auto": method -> {"amax", "est_sqnr_db", scores}


@dataclass
class Calibration:
    model_sha256: str
    method: str
    tensors: dict[str, TensorCalibration]
    params: dict = field(default_factory=dict)
    bins: int | None = None
    model_file: str | None = None
    inputs: list = field(default_factory=list)
    num_samples: int = 0
    num_batches: int = 0
    shard: str | None = None
    tools: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    histogram_file: str | None = None
    histogram_sha256: str | None = None
    auto: dict | None = None  # with method "auto": the search's record (scores, budget, ...)
    path: Path | None = None  # where it was read from, to find the histogram file

    @property
    def amax(self) -> dict[str, float]:
        return {name: tensor.amax for name, tensor in self.tensors.items()}

    def histogram_path(self) -> Path | None:
        if self.histogram_file is None:
            return None
        base = self.path.parent if self.path is not None else Path(".")
        return base / self.histogram_file

    def load_histograms(self) -> dict[str, AbsHistogram]:
        """Read the histograms back (checked against the recorded sha256)."""
        return self.load_stored()[0]

    def load_stored(self) -> tuple[dict[str, AbsHistogram], dict[str, ChannelMean]]:
        """The histograms and the channel-mean accumulators, from one read of the .npz."""
        path = self.histogram_path()
        if path is None and self.tensors and all(
                t.rule == "bounded" and t.count == 0 for t in self.tensors.values()):
            return {}, {}  # every tensor was calibrated by its max alone: nothing to read
        histograms, means = {}, {}
        for name, parts in self._read_entries().items():
            if set(parts) - set(MEAN_KEYS):  # anything besides channel means: a histogram
                histograms[name] = _parse(AbsHistogram.from_arrays, parts,
                                          f"histogram of {name!r} in {path}")
            elif self.tensors[name].count:
                raise QtoolError(f"histogram file {path} has no histogram for tensor {name!r}")
            accumulator = _parse(ChannelMean.from_arrays, parts, f"channel means of {name!r} in {path}")
            if accumulator is not None:
                means[name] = accumulator
        return histograms, means

    def load_channel_means(self) -> dict[str, tuple[int, np.ndarray]] | None:
        """tensor -> (channel axis, float64 mean per channel) for bias correction; None when the
        calibration has none (no histogram file, or one written before means were recorded).
        Means that are not finite (NaN or Inf in the activations) are left out."""
        if self.histogram_path() is None or not self.histogram_path().is_file():
            return None
        return channel_means(self.load_stored()[1])

    def _read_entries(self) -> dict[str, dict[str, np.ndarray]]:
        """The .npz arrays of each tensor, keyed by tensor name (parts without the prefix)."""
        path = self.histogram_path()
        if path is None:
            raise QtoolError("this calibration file has no histograms (made from a TensorRT cache?)")
        if not path.is_file():
            raise QtoolError(f"histogram file not found: {path}")
        if self.histogram_sha256 and sha256_file(path) != self.histogram_sha256:
            raise QtoolError(f"histogram file {path} does not match its calibration file (sha256 differs)")
        arrays = self._read_members(path)
        entries = {}
        for name, tensor in self.tensors.items():
            if tensor.key is None:  # calibrated by its max alone, nothing stored
                continue
            prefix = f"{tensor.key}/"
            parts = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            if not parts:
                raise QtoolError(f"histogram file {path} has no entry for tensor {name!r}")
            entries[name] = parts
        return entries


    def _read_members(self, path: Path) -> dict[str, np.ndarray]:
        """The .npz members of this calibration's tensors only, each checked against the size
        the header allows before it is read (an unnamed member is never read)."""
        import zipfile

        from qtool.io.arrays import read_header
        from qtool.io.files import open_regular

        prefixes = {tensor.key for tensor in self.tensors.values() if tensor.key is not None}
        # counts hold at most max_bins = 64 * bins entries; channel means one per channel
        cap = 8 * DEFAULT_MAX_BINS_FACTOR * max(self.bins or DEFAULT_BINS, MEMBER_FLOOR)
        arrays = {}
        try:
            with open_regular(path) as raw, zipfile.ZipFile(raw) as archive:
                for member in archive.namelist():
                    name = member.removesuffix(".npy")
                    if name.split("/", 1)[0] not in prefixes or "/" not in name:
                        continue
                    with archive.open(member) as handle:
                        shape, dtype = read_header(handle, f"{path} [{name}]")
                    if math.prod(shape) * dtype.itemsize > cap:
                        raise QtoolError(f"histogram file {path}: {name} holds {list(shape)} "
                                         f"{dtype} values, more than {self.bins or DEFAULT_BINS} "
                                         f"bins can need")
                    with archive.open(member) as handle:
                        arrays[name] = np.lib.format.read_array(handle, allow_pickle=False)
        except QtoolError:
            raise
        except Exception as exc:
            raise QtoolError(f"cannot read histogram file {path}: {first_line(exc, 300)}") from None
        return arrays


def channel_means(accumulators: dict[str, ChannelMean]) -> dict[str, tuple[int, np.ndarray]] | None:
    """tensor -> (channel axis, float64 mean per channel), as bias correction takes them; means
    that are not finite (NaN or Inf in the activations) are left out; None when none is left."""
    means = {}
    for name, accumulator in accumulators.items():
        mean = accumulator.mean
        if mean is not None and np.all(np.isfinite(mean)):
            means[name] = (accumulator.axis, mean)
    return means or None


def _parse(reader, parts: dict, what: str):
    """reader(parts), any failure as one QtoolError line naming `what`."""
    try:
        return reader(parts)
    except QtoolError as exc:
        raise QtoolError(f"{what}: {exc}") from None
    except Exception as exc:
        raise QtoolError(f"{what} is invalid: {first_line(exc, 300)}") from None



def histogram_path_for(calib_path: str | os.PathLike) -> Path:
    path = Path(calib_path)
    stem = path.name.removesuffix(".json")
    return path.with_name(stem + ".npz")


def write_calibration(calib: Calibration, path: str | os.PathLike,
                      histograms: dict[str, AbsHistogram] | None = None,
                      means: dict[str, ChannelMean] | None = None) -> None:
    """Write the JSON (and the histogram .npz beside it) atomically.

    `means`: per-channel means of some tensors (for bias correction), stored beside their
    histograms in the .npz.

    Both are complete in temporary files before either is renamed into place (npz first, JSON
    last), so an interruption or error leaves neither, or at worst a new npz beside the old JSON
    (which then refuses it by its sha256), never a JSON without its histograms.
    """
    path = Path(path)
    histograms = histograms or {}
    if not histograms and not means:
        write_json(path, to_dict(calib))
        return
    npz_path = histogram_path_for(path)
    arrays = {}
    for index, name in enumerate(calib.tensors):
        parts = dict(histograms[name].to_arrays()) if name in histograms else {}
        if means and name in means:
            parts.update(means[name].to_arrays())
        # tensors calibrated by their max alone (no histogram, no means) have no entry
        calib.tensors[name].key = f"t{index}" if parts else None
        arrays.update((f"t{index}/{part}", np.asarray(value)) for part, value in parts.items())
    with atomic_path(path) as json_tmp, atomic_path(npz_path) as npz_tmp:
        with open(npz_tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        calib.histogram_file = npz_path.name
        calib.histogram_sha256 = sha256_file(npz_tmp)
        write_json(json_tmp, to_dict(calib))


def to_dict(calib: Calibration) -> dict:
    tensors = {}
    for name, tensor in calib.tensors.items():
        entry = {"amax": float(tensor.amax)}
        if tensor.abs_max is not None:
            entry["abs_max"] = float(tensor.abs_max)
        entry.update(count=int(tensor.count), nan=int(tensor.nan), inf=int(tensor.inf))
        if tensor.key is not None:
            entry["key"] = tensor.key
        if tensor.rule is not None:
            entry["rule"] = tensor.rule
        if tensor.method is not None:
            entry["method"] = tensor.method
        if tensor.candidates is not None:
            entry["candidates"] = tensor.candidates
        tensors[name] = entry
    histograms = None
    if calib.histogram_file:
        histograms = {"file": calib.histogram_file, "sha256": calib.histogram_sha256}
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {"file": calib.model_file, "sha256": calib.model_sha256, "inputs": calib.inputs},
        "method": calib.method,
        "params": calib.params,
        "bins": calib.bins,
        "num_samples": calib.num_samples,
        "num_batches": calib.num_batches,
        "shard": calib.shard,
        "tools": calib.tools,
        "config": calib.config,
        "histograms": histograms,
        **({"auto": calib.auto} if calib.auto is not None else {}),
        "tensors": tensors,
    }


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
    tensors = {}
    for name, entry in tensors_in.items():
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
        tensors[name] = TensorCalibration(
            float(amax), None if abs_max is None else float(abs_max),
            entry.get("count", 0), entry.get("nan", 0), entry.get("inf", 0), key, rule, chosen,
            candidates)
    histograms = data.get("histograms")
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


def check_model_match(calib: Calibration, model_sha256: str, calib_name: str = "calibration file") -> None:
    """A later step refuses a calibration file made for a different model."""
    if calib.model_sha256 != model_sha256:
        raise QtoolError(
            f"{calib_name} was made for a different model (sha256 {calib.model_sha256[:12]}..., "
            f"this model {model_sha256[:12]}...); calibrate this model first"
        )
