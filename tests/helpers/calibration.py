"""Calibration files written from hand-picked amax values, for tests that quantize without
calibrating first."""

from __future__ import annotations

from qtool.calib.calibfile import Calibration, TensorCalibration, write_calibration
from qtool.io.model import model_sha256


def write_calib(path, model_path, amax, method="max"):
    calib = Calibration(model_sha256=model_sha256(model_path), method=method,
                        tensors={name: TensorCalibration(amax=value) for name, value in amax.items()})
    write_calibration(calib, path)
    return path


# amax of the activations of tests.tiny_models.conv_relu_gemm that quantization reads
AMAX = {"x": 2.0, "relu": 3.0, "flat": 1.5}
