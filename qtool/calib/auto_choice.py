"""Method auto at the end of a calibration: every candidate method's thresholds from the
histograms, scored on the samples calibration held aside (qtool.calib.auto's search, run on
qtool.calib.probe's quantized model)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qtool.backends.onnxruntime.providers import Providers
from qtool.calib.auto import (
    CANDIDATE_METHODS,
    SLICE_MIN_SAMPLES,
    SliceTap,
    choose_thresholds,
    estimated_sqnrs,
)
from qtool.calib.calibfile import channel_means
from qtool.calib.thresholding import amax_from_histograms, bounded_amax
from qtool.graph.facts import ModelFacts
from qtool.io.model import load_model
from qtool.quantize.options import QuantizeOptions

if TYPE_CHECKING:
    from qtool.calib.options import CalibrateOptions

log = logging.getLogger("qtool")


@dataclass
class AutoResult:
    methods: dict[str, str]      # tensor -> chosen method
    candidates: dict[str, dict]  # tensor -> method -> {"amax", "est_sqnr_db", scores}
    record: dict                 # the search's record for the calibration file


def choose_auto(model_path, run, tap: SliceTap, options: CalibrateOptions, bounded: set[str],
                quantize: QuantizeOptions | None, providers: Providers | None = None,
                facts: ModelFacts | None = None) -> AutoResult:
    """Method auto: score every candidate method's thresholds, then single tensors, on the
    samples the tap kept (qtool.calib.auto). Too few samples to score on: mse,
    the most robust single method, for every tensor. `facts`: the calibrated model's, which
    the probe's quantization reuses when they describe the model with its weights too."""
    # imported here: the probe brings the whole quantizer, which collection alone never needs
    from qtool.backends.onnxruntime.runner import OnnxRunner
    from qtool.calib.probe import ThresholdProbe

    searched = {name: hist for name, hist in run.histograms.items() if name not in bounded}
    candidates = {method: amax_from_histograms(searched, method, options.method_params(method))
                  for method in CANDIDATE_METHODS}
    estimates = estimated_sqnrs(searched, candidates)
    details = {name: {method: {"amax": values[name], "est_sqnr_db": _rounded(estimates[name][method])}
                      for method, values in candidates.items()}
               for name in searched}
    batches = tap.batches()
    fallback = CANDIDATE_METHODS[0]
    if len(tap.units) < SLICE_MIN_SAMPLES or options.shard:
        reason = "a shard" if options.shard else f"fewer than {SLICE_MIN_SAMPLES} samples"
        log.warning("method auto: %s to score on; every tensor takes method %s", reason, fallback)
        return AutoResult(dict.fromkeys(searched, fallback), details,
                          {"model_method": fallback, "reason": reason})
    fixed = bounded_amax(run.histograms, bounded, run.maxima)
    model = load_model(model_path)
    with OnnxRunner(model, providers=providers) as reference:
        references = [list(reference.run(feeds).values()) for feeds in batches]
    # weights that were left on disk may hold small constants that shape inference reads
    reused = facts if facts is not None and not facts.unloaded_weights else None
    probe = ThresholdProbe(model, {**fixed, **candidates[fallback]}, quantize,
                           channel_means(run.means), providers, facts=reused)
    choice = choose_thresholds(
        probe.run, batches, references, candidates, fixed, estimates,
        budget=int(options.auto_budget * run.num_samples),
        classification=options.task == "classification", sizes=tap.sizes)
    for tensor, scores in choice.tensor_scores.items():
        for method, score in scores.items():
            details[tensor][method].update(score.to_dict())
    log.info("method auto: %s per model (%s); %d tensors refined; %d probe sample-runs",
             choice.model_method, ", ".join(f"{m} {s.sqnr_db:.2f} dB"
                                            for m, s in choice.model_scores.items()),
             len(choice.refined), choice.sample_runs)
    return AutoResult(choice.methods, details, choice.record())


def _rounded(value: float) -> float | None:
    """A figure for the JSON file: 3 decimals, None when not finite."""
    return round(value, 3) if math.isfinite(value) else None
