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

Modules: records (the in-memory dataclasses), reader (parsing and validation), writer (atomic
JSON + .npz), histogram_npz (reading the histograms and channel means back).
"""

from __future__ import annotations

from qtool.calib.calibfile.histogram_npz import channel_means
from qtool.calib.calibfile.reader import from_dict, read_calibration
from qtool.calib.calibfile.records import (
    Calibration,
    TensorCalibration,
    check_model_match,
)
from qtool.calib.calibfile.writer import histogram_path_for, to_dict, write_calibration

__all__ = [
    "Calibration", "TensorCalibration", "channel_means", "check_model_match", "from_dict",
    "histogram_path_for", "read_calibration", "to_dict", "write_calibration",
]
