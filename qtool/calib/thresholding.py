"""From histograms to thresholds: every tensor's amax by one method (or by the method auto chose
for it), bounded tensors' observed max, and the calibration record that holds them."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from qtool.calib.calibfile import Calibration, TensorCalibration
from qtool.calib.choices import AUTO
from qtool.calib.histogram import EMPTY_BIN_WIDTH, AbsHistogram
from qtool.calib.pooled import PooledMax
from qtool.errors import QtoolError
from qtool.thresholds import DEFAULT_PARAMS, compute_amax
from qtool.thresholds.cost import (
    POOR_CLIPPED,
    POOR_SQNR_DB,
    PoorThreshold,
    poor_thresholds,
)
from qtool.versions import tool_versions

log = logging.getLogger("qtool")

# Threads picking thresholds: calibration's last step, after every batch (EfficientNet-Lite0: 17
# entropy searches, 0.1 s in one thread).
THRESHOLD_THREADS = 4


def amax_from_histograms(histograms: dict[str, AbsHistogram], method: str,
                         params: dict | None = None) -> dict[str, float]:
    """Threshold every histogram with one method. The exact largest |x| seen is passed along:
    `max` returns it and the other methods never go above it."""
    params = params or {}

    def amax(hist: AbsHistogram) -> float:
        return compute_amax(method, hist.hist, hist.edges, abs_max=hist.abs_max, **params)

    # numpy releases the GIL inside the searches' array operations: threads share the work
    with ThreadPoolExecutor(max_workers=min(THRESHOLD_THREADS, os.cpu_count() or 1)) as pool:
        return dict(zip(histograms, pool.map(amax, histograms.values())))


def build_calibration(histograms: dict[str, AbsHistogram], *, method: str, params: dict, bins: int,
                      sha256: str, model_file: str | None, inputs: list, num_samples: int,
                      num_batches: int, shard: str | None, config: dict,
                      bounded: set[str] = frozenset(), maxima: dict[str, PooledMax] | None = None,
                      order: list[str] | None = None, tensor_methods: dict[str, str] | None = None,
                      candidates: dict[str, dict] | None = None,
                      auto: dict | None = None) -> Calibration:
    """Thresholds with `method`, except that the `bounded` tensors (outputs of bounded
    activations) take their observed max; their entries record rule "bounded". `maxima`: the
    bounded tensors observed without a histogram, by their max|x| and non-finite count (count 0
    in the file). `order`: the tensors' order in the file (default: histograms, then maxima).

    With method "auto", `tensor_methods` names the method of every other tensor (what the search
    chose, or what an earlier auto calibration recorded); `candidates` and `auto` are the
    search's evidence, recorded as they are."""
    maxima = maxima or {}
    bounded = {name for name in bounded if name in histograms}
    searched = {name: hist for name, hist in histograms.items() if name not in bounded}
    methods = {name: (tensor_methods or {}).get(name, method) for name in searched}
    if AUTO in methods.values():
        raise QtoolError("method auto needs calibration data to choose thresholds: run "
                         "`qtool calibrate --method auto` (or pick a method)")
    amax = {}
    for chosen in dict.fromkeys(methods.values()):
        group = {name: hist for name, hist in searched.items() if methods[name] == chosen}
        amax.update(amax_from_histograms(group, chosen, params_for(chosen, params)))
    amax.update(bounded_amax(histograms, bounded, maxima))
    per_tensor = method == AUTO
    tensors = {
        name: TensorCalibration(amax=amax[name], abs_max=hist.abs_max, count=hist.count,
                                nan=hist.nan_count, inf=hist.inf_count,
                                rule="bounded" if name in bounded else None,
                                method=methods.get(name) if per_tensor else None,
                                candidates=(candidates or {}).get(name) if per_tensor else None)
        for name, hist in histograms.items()
    }
    for name, observed in maxima.items():
        tensors[name] = TensorCalibration(amax=amax[name], abs_max=observed.abs_max, count=0,
                                          nan=observed.non_finite, rule="bounded")
    if order is not None:
        tensors = {name: tensors[name] for name in order if name in tensors}
    return Calibration(
        model_sha256=sha256, method=method, tensors=tensors, params=params, bins=bins,
        model_file=model_file, inputs=inputs, num_samples=num_samples, num_batches=num_batches,
        shard=shard, tools=tool_versions(), config=config, auto=auto if per_tensor else None,
    )


def bounded_amax(histograms: dict[str, AbsHistogram], bounded: set[str],
                 maxima: dict[str, PooledMax]) -> dict[str, float]:
    """The amax of bounded tensors, whatever the method: their max, from the histogram or from
    the pooled max (a tiny positive amax for an all-zero tensor, as the max method gives)."""
    amax = amax_from_histograms({name: histograms[name] for name in bounded
                                 if name in histograms}, "max")
    amax.update((name, observed.abs_max if observed.abs_max > 0 else EMPTY_BIN_WIDTH)
                for name, observed in maxima.items())
    return amax


def params_for(method: str, params: dict) -> dict:
    """The entries of `params` that `method` takes (auto's params serve several methods)."""
    return {key: value for key, value in params.items() if key in DEFAULT_PARAMS[method]}


def warn_poor_thresholds(calibration: Calibration, histograms: dict[str, AbsHistogram],
                         shown: int = 5) -> list[PoorThreshold]:
    """Log one warning naming the tensors whose thresholds cost much (thresholds.cost), with
    where to look next; returns them."""
    poor = poor_thresholds(histograms, calibration.amax)
    if not poor:
        return poor
    listed = ", ".join(f"{item.tensor} ({item.sqnr_db:.1f} dB, {item.clipped:.1%} clipped)"
                       for item in poor[:shown])
    if len(poor) > shown:
        listed += f" and {len(poor) - shown} more"
    if calibration.method == AUTO:
        advice = ("auto chose them by the model's outputs; `qtool report` shows every "
                  "method's cost for them, and `qtool sensitivity` whether keeping their "
                  "consumers in high precision pays")
    else:
        advice = "calibrate with --method auto, or compare the methods with `qtool report`"
    log.warning("%d tensor(s) quantize poorly with method %s (estimated SQNR below %g dB or "
                "over %g%% of values clipped): %s; %s", len(poor), calibration.method,
                POOR_SQNR_DB, 100 * POOR_CLIPPED, listed, advice)
    return poor
