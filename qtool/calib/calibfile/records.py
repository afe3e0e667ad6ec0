"""What a calibration file holds: one record per tensor and the file's header, in memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qtool.calib.calibfile import histogram_npz
from qtool.calib.channelmean import ChannelMean
from qtool.calib.histogram import AbsHistogram
from qtool.errors import QtoolError

FORMAT = "qtool-calibration"
VERSION = 1
HISTOGRAM_METHODS = ("entropy", "max", "percentile", "mse", "coverage")
# "auto" picks one of the histogram methods per tensor; "trt-cache" is imported from TensorRT
METHODS = (*HISTOGRAM_METHODS, "auto", "trt-cache")


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
        return histogram_npz.load_stored(self)

    def load_channel_means(self) -> dict[str, tuple[int, np.ndarray]] | None:
        """tensor -> (channel axis, float64 mean per channel) for bias correction; None when the
        calibration has none (no histogram file, or one written before means were recorded).
        Means that are not finite (NaN or Inf in the activations) are left out."""
        if self.histogram_path() is None or not self.histogram_path().is_file():
            return None
        return histogram_npz.channel_means(self.load_stored()[1])


def check_model_match(calib: Calibration, model_sha256: str, calib_name: str = "calibration file") -> None:
    """A later step refuses a calibration file made for a different model."""
    if calib.model_sha256 != model_sha256:
        raise QtoolError(
            f"{calib_name} was made for a different model (sha256 {calib.model_sha256[:12]}..., "
            f"this model {model_sha256[:12]}...); calibrate this model first"
        )
