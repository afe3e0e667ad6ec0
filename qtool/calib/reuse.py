"""Calibration reuse: a calibration file records cache keys, so that a run whose model, data and
options are unchanged reuses it instead of calibrating again.

cache_key: the sha256 of the model's sha256, the content of every data file (or the loader
script's text) and the calibration and preprocessing options. histogram_key: the same without
the options that only pick thresholds (method, percentile, coverage); when only it matches, the
stored histograms are thresholded again without inference. Where onnxruntime ran (provider) and
the shard are left out: a calibration made on a GPU serves a CPU run too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from qtool.calib.api import CalibrateResult
from qtool.calib.calibfile import Calibration, read_calibration
from qtool.calib.merge import rethreshold
from qtool.calib.options import CalibrateOptions
from qtool.errors import QtoolError
from qtool.io.hashing import sha256_file

# Options that only pick thresholds from the histograms: changing them needs no new inference.
THRESHOLD_OPTIONS = ("method", "percentile", "coverage")


def data_fingerprint(source, loader_script) -> dict:
    """What the calibration data is, by content: one sha256 per file (or of the loader script)."""
    if loader_script is not None:
        return {"loader_script_sha256": sha256_file(loader_script)}
    root = Path(source.root)
    return {"files": [[f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name,
                       sha256_file(f)] for f in source.files]}


def calibration_key(model_sha256: str, options, fingerprint: dict,
                    thresholds: bool = True) -> str:
    """What a calibration depends on, hashed; without `thresholds`, what its histograms depend on."""
    skip = {"shard", "provider"} | (set() if thresholds else set(THRESHOLD_OPTIONS))
    record = {"model": model_sha256, "data": fingerprint,
              "options": {k: v for k, v in asdict(options).items() if k not in skip}}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class CalibrationKeys:
    key: str             # the whole calibration's
    histogram_key: str   # its histograms'

    def record(self, calibration: Calibration) -> None:
        """Write the keys into the calibration's config, for the next run to compare."""
        calibration.config.update(cache_key=self.key, histogram_key=self.histogram_key)


def calibration_keys(model_path, model_sha256: str, data, options: CalibrateOptions) -> CalibrationKeys:
    """The keys of calibrating `model_path` on `data` (or options.loader_script) with `options`."""
    from qtool.io.data import open_data
    from qtool.io.model import input_specs, load_model

    source = None
    if options.loader_script is None:
        model = load_model(model_path, load_weights=False)
        source = open_data(data, input_specs(model), preprocess=options.preprocess or None,
                           inputs=options.inputs, batch_size=options.batch_size,
                           num_samples=options.num_samples)
    fingerprint = data_fingerprint(source, options.loader_script)
    return CalibrationKeys(calibration_key(model_sha256, options, fingerprint),
                           calibration_key(model_sha256, options, fingerprint, thresholds=False))


@dataclass
class Reuse:
    """What an existing calibration file offers: itself (every key matches), or a calibration
    thresholded again from its histograms (only the histogram key matches), or nothing."""

    calibration: Calibration | None = None
    rethresholded: CalibrateResult | None = None


def find_reuse(path, model_sha256: str, keys: CalibrationKeys,
               options: CalibrateOptions) -> Reuse:
    """Compare the calibration at `path` (when it is a readable calibration of this model) with
    `keys`."""
    path = Path(path)
    existing = None
    if path.is_file():
        with contextlib.suppress(QtoolError):
            existing = read_calibration(path)
    if existing is None or existing.model_sha256 != model_sha256 or existing.shard != options.shard:
        return Reuse()  # the keys leave the shard out: a shard never stands for the whole
    if existing.config.get("cache_key") == keys.key:
        return Reuse(calibration=existing)
    if existing.config.get("histogram_key") == keys.histogram_key:
        with contextlib.suppress(QtoolError):  # histograms unreadable: calibrate again
            return Reuse(rethresholded=rethreshold(existing, options.method,
                                                   options.method_params()))
    return Reuse()
