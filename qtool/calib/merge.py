"""Calibrations from calibrations, with no inference: shards merged exactly (histograms add),
or thresholds picked again on the stored histograms."""

from __future__ import annotations

from qtool.calib.api import CalibrateResult
from qtool.calib.calibfile import Calibration
from qtool.calib.choices import AUTO
from qtool.calib.histogram import DEFAULT_BINS
from qtool.calib.pooled import PooledMax
from qtool.calib.signature import merge_inputs
from qtool.calib.thresholding import build_calibration
from qtool.errors import QtoolError, UsageError


def merge(calibrations: list[Calibration], method: str | None = None,
          params: dict | None = None) -> CalibrateResult:
    """Merge shards: histograms add exactly, thresholds are picked again on the sum."""
    if len(calibrations) < 2:
        raise UsageError("merge needs at least two calibration files")
    first = calibrations[0]
    for other in calibrations[1:]:
        if other.model_sha256 != first.model_sha256:
            raise QtoolError(f"{other.path} was made for a different model than {first.path}")
        if other.bins != first.bins:
            raise QtoolError(f"{other.path} uses {other.bins} bins, {first.path} uses {first.bins}")
        if set(other.tensors) != set(first.tensors):
            raise QtoolError(f"{other.path} observed other tensors than {first.path}")
    config = dict(first.config)
    config["merged_from"] = [str(c.path.name) if c.path else None for c in calibrations]
    return _combine(calibrations, method, params, config)


def rethreshold(calibration: Calibration, method: str, params: dict) -> CalibrateResult:
    """The calibration with thresholds picked again by `method` on its stored histograms: no
    inference (tensors calibrated by their max alone keep it)."""
    config = dict(calibration.config, method=method, **params)
    return _combine([calibration], method, params, config)


def _combine(calibrations: list[Calibration], method: str | None, params: dict | None,
             config: dict) -> CalibrateResult:
    """One calibration from the histograms, maxima and means of several (or of one)."""
    first = calibrations[0]
    merged, means = first.load_stored()
    for other in calibrations[1:]:
        theirs, their_means = other.load_stored()
        if set(theirs) != set(merged):
            raise QtoolError(f"{other.path} histogrammed other tensors than {first.path} "
                             "(calibrated with other options, e.g. --no-bounded-max?)")
        for name, hist in theirs.items():
            merged[name].merge(hist)
        # means survive a merge only where every shard has them
        for name in list(means):
            if name in their_means:
                means[name].merge(their_means[name])
            else:
                del means[name]
    # bounded tensors calibrated without a histogram: the max of the shards' maxima
    maxima = {name: PooledMax(max(c.tensors[name].abs_max or 0.0 for c in calibrations),
                              sum(c.tensors[name].nan for c in calibrations))
              for name in first.tensors if name not in merged}
    method = method or first.method
    if method == "trt-cache":
        raise QtoolError("calibrations made from a TensorRT cache have no histograms to merge")
    params = first.params if params is None and method == first.method else (params or {})
    # auto's choice needs data: without it, each tensor keeps the method it was given
    tensor_methods = ({name: tensor.method for name, tensor in first.tensors.items()
                       if tensor.method} if method == AUTO else None)
    calibration = build_calibration(
        merged, method=method, params=params, bins=first.bins or DEFAULT_BINS, sha256=first.model_sha256,
        model_file=first.model_file, inputs=merge_inputs([c.inputs for c in calibrations]),
        num_samples=sum(c.num_samples for c in calibrations),
        num_batches=sum(c.num_batches for c in calibrations), shard=None, config=config,
        bounded={name for name, tensor in first.tensors.items() if tensor.rule == "bounded"},
        maxima=maxima, order=list(first.tensors), tensor_methods=tensor_methods,
        auto=first.auto,
    )
    return CalibrateResult(calibration, merged, 0.0, means)
