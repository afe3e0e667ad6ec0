"""Per observed tensor: the chosen amax next to the amax every other method would give, with the
clipped mass and estimated SQNR of each (qtool.thresholds.cost). With method auto, each tensor's
chosen method is the one the calibration file records for it.

The amax of a method is computed exactly as calibration computes it (amax_from_histograms), with
the calibration's own parameters for its method and each method's defaults otherwise. The chosen
amax is the one in the calibration file, the value quantization will use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from qtool.calib.calibfile import Calibration
from qtool.calib.choices import AUTO
from qtool.calib.histogram import AbsHistogram
from qtool.calib.thresholding import amax_from_histograms, params_for
from qtool.thresholds.cost import clipped_fraction, estimated_sqnr_db

# Methods every tensor is compared under, in the order they are shown.
COMPARED_METHODS = ("max", "percentile", "mse", "entropy")


@dataclass(frozen=True)
class MethodPoint:
    method: str
    amax: float
    clipped: float          # fraction of values clipped, 0..1
    sqnr_db: float          # estimated; inf or nan possible
    chosen: bool = False

    def to_dict(self) -> dict:
        return {"method": self.method, "amax": self.amax, "clipped": self.clipped,
                "sqnr_db": _json_float(self.sqnr_db), "chosen": self.chosen}


@dataclass
class TensorSummary:
    name: str
    amax: float                              # chosen, from the calibration file
    abs_max: float | None
    count: int
    nan: int
    inf: int
    rule: str | None = None                  # "bounded": amax is the observed max (calibfile)
    histogram: AbsHistogram | None = None
    points: list[MethodPoint] = field(default_factory=list)  # empty without a histogram
    recomputed_amax: float | None = None     # the chosen method's amax recomputed, if it differs

    @property
    def chosen(self) -> MethodPoint | None:
        return next((point for point in self.points if point.chosen), None)

    def to_dict(self) -> dict:
        return {"name": self.name, "amax": self.amax, "abs_max": self.abs_max,
                "count": self.count, "nan": self.nan, "inf": self.inf, "rule": self.rule,
                "methods": [point.to_dict() for point in self.points],
                "recomputed_amax": self.recomputed_amax}


def _json_float(value: float):
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def methods_for(calibration: Calibration) -> list[str]:
    """The compared methods, plus the calibration's own when it is another histogram method."""
    methods = list(COMPARED_METHODS)
    if calibration.method not in methods and calibration.method not in ("trt-cache", AUTO):
        methods.append(calibration.method)
    return methods


def summarize_tensors(calibration: Calibration,
                      histograms: dict[str, AbsHistogram] | None) -> list[TensorSummary]:
    """One summary per calibrated tensor, in calibration-file order."""
    per_method: dict[str, dict[str, float]] = {}
    if histograms:
        for method in methods_for(calibration):
            own = calibration.method in (method, AUTO)  # auto's params serve its candidates
            params = params_for(method, calibration.params) if own else {}
            per_method[method] = amax_from_histograms(histograms, method, params)
    summaries = []
    for name, tensor in calibration.tensors.items():
        summary = TensorSummary(name, tensor.amax, tensor.abs_max, tensor.count, tensor.nan,
                                tensor.inf, tensor.rule)
        hist = histograms.get(name) if histograms else None
        if hist is not None:
            summary.histogram = hist
            counts, edges = hist.hist, hist.edges
            own = "max" if tensor.rule == "bounded" else tensor.method or calibration.method
            for method, values in per_method.items():
                chosen = method == own
                amax = tensor.amax if chosen else values[name]
                if chosen and not math.isclose(values[name], tensor.amax, rel_tol=1e-12):
                    summary.recomputed_amax = values[name]
                summary.points.append(MethodPoint(
                    method, amax, clipped_fraction(counts, edges, amax, hist.abs_max),
                    estimated_sqnr_db(counts, edges, amax), chosen))
        summaries.append(summary)
    return summaries
