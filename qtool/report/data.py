"""Everything the report shows, gathered from the calibration file and the optional model,
sensitivity and compare results. No plotting and no HTML here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from qtool.calib.calibfile import Calibration, check_model_match, read_calibration
from qtool.errors import QtoolError
from qtool.graph.op_types import QDQ_OPS
from qtool.io.model import load_model, model_sha256
from qtool.report.results import CompareView, read_compare
from qtool.report.sensitivity_result import SensitivityView, read_sensitivity
from qtool.report.tensors import TensorSummary, summarize_tensors
from qtool.report.weight_layers import LayerAnalysis, analyse_layers

SOURCE_SHA_KEY = "qtool.source_sha256"


@dataclass
class ModelInfo:
    path: Path
    sha256: str
    quantized: bool          # holds Q/DQ nodes
    source_sha256: str | None = None  # what it was quantized from (its qtool metadata)


@dataclass
class ReportData:
    calibration: Calibration
    tensors: list[TensorSummary]
    histograms_missing: str | None = None     # why there are no histograms, if so
    model: ModelInfo | None = None
    layers: LayerAnalysis | None = None
    sensitivity: SensitivityView | None = None
    compare: CompareView | None = None
    notes: list[str] = field(default_factory=list)


def _metadata(model, key: str) -> str | None:
    return next((prop.value for prop in model.metadata_props if prop.key == key), None)


def _check_model(calibration: Calibration, path: Path, loaded, quantized: bool,
                 notes: list[str]) -> ModelInfo:
    """The model must be the calibrated one, or quantized from it."""
    digest = model_sha256(path)
    info = ModelInfo(path, digest, quantized, _metadata(loaded, SOURCE_SHA_KEY))
    if not quantized:
        check_model_match(calibration, digest)
    elif info.source_sha256 is None:
        notes.append(f"{path.name} does not record which model it was quantized from; "
                     "it is assumed to match the calibration file")
    elif info.source_sha256 != calibration.model_sha256:
        raise QtoolError(
            f"{path} was quantized from a different model (sha256 {info.source_sha256[:12]}...) "
            f"than the calibration file describes ({calibration.model_sha256[:12]}...)")
    return info


def gather(calibration_path: str | os.PathLike, model: str | os.PathLike | None = None,
           sensitivity: str | os.PathLike | None = None,
           compare: str | os.PathLike | None = None) -> ReportData:
    """Read and check every input; a problem with any of them is one QtoolError."""
    calibration = read_calibration(calibration_path)
    notes: list[str] = []
    histograms = None
    missing = None
    if calibration.histogram_file is None:
        missing = ("the calibration file has no histograms (it was made from a TensorRT cache), "
                   "so only the amax values are shown")
    else:
        histograms = calibration.load_histograms()
    data = ReportData(calibration, summarize_tensors(calibration, histograms), missing,
                      notes=notes)
    for tensor in data.tensors:
        if tensor.recomputed_amax is not None:
            notes.append(f"{tensor.name}: the file's amax {tensor.amax:.6g} differs from "
                         f"{calibration.method} on its histogram ({tensor.recomputed_amax:.6g})")
        if tensor.nan or tensor.inf:
            notes.append(f"{tensor.name}: {tensor.nan} NaN and {tensor.inf} Inf values were "
                         "seen in calibration and left out of its histogram")
    if model is not None:
        path = Path(model)
        loaded = load_model(path)
        quantized = any(node.op_type in QDQ_OPS
                        for node in loaded.graph.node)
        data.model = _check_model(calibration, path, loaded, quantized, notes)
        data.layers = analyse_layers(loaded, calibration.amax)
    if sensitivity is not None:
        data.sensitivity = read_sensitivity(sensitivity)
        digest = data.sensitivity.model_sha256
        if digest is not None and digest != calibration.model_sha256:
            notes.append(f"{Path(sensitivity).name} was measured on another model "
                         f"(sha256 {digest[:12]}...) than the calibrated one")
    if compare is not None:
        data.compare = read_compare(compare)
        digest = data.compare.reference_sha256
        if digest is not None and digest != calibration.model_sha256:
            notes.append(f"{Path(compare).name} compares against another reference model "
                         f"(sha256 {digest[:12]}...) than the calibrated one")
    return data
