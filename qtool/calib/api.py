"""The calibrate step as a library call: data + model -> histograms -> thresholds -> file.

The CLI command and the pipeline both call `calibrate()`; `amax_from_histograms` re-picks the
thresholds of stored histograms with any method (no new inference), and `merge()` combines the
histogram files of shards exactly.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from qtool.backends.providers import Providers
from qtool.calib.auto import (
    AUTO,
    CANDIDATE_METHODS,
    SLICE_MAX_SAMPLES,
    SLICE_MIN_SAMPLES,
    SliceTap,
    choose_thresholds,
    estimated_sqnrs,
)
from qtool.calib.calibfile import Calibration, TensorCalibration, channel_means
from qtool.calib.channelmean import ChannelMean
from qtool.calib.histogram import EMPTY_BIN_WIDTH, AbsHistogram
from qtool.calib.options import CalibrateOptions
from qtool.calib.pooled import PooledMax
from qtool.calib.runner import collect_histograms, has_unloaded_weights, parse_shard
from qtool.calib.signature import SeenShapes, merge_inputs
from qtool.errors import QtoolError, UsageError
from qtool.graph.bounded import bounded_ranges
from qtool.graph.observe import channel_axes, tensors_to_observe
from qtool.graph.shapes import tensor_infos
from qtool.io.data import open_data
from qtool.io.model import input_specs, load_model, model_sha256
from qtool.quantize.options import QuantizeOptions
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


@dataclass
class CalibrateResult:
    calibration: Calibration
    histograms: dict[str, AbsHistogram]
    seconds: float
    means: dict[str, ChannelMean] = field(default_factory=dict)


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


def tensors_to_calibrate(model) -> list[str]:
    """The activation tensors the default Q/DQ placement quantizes (every other option only
    removes Q/DQ). Histogramming the other candidates (Adds that will not fuse, inputs of
    unquantized Concats) cost 2.7-3.7x the needed work on PP-OCR models. Falls back to every
    candidate when the placement cannot be planned here (weights left on disk, or an opset that
    quantize would upgrade first).
    """
    from qtool.quantize.options import QuantizeOptions
    from qtool.quantize.placement import make_plan

    candidates = tensors_to_observe(model)
    if has_unloaded_weights(model):  # weights still on disk: placement cannot see them
        return candidates
    try:
        plan, _ = make_plan(model, dict.fromkeys(candidates, 1.0), QuantizeOptions())
    except Exception:  # planning is an optimisation here; observing more is always correct
        return candidates
    needed = [name for name in candidates if name in plan.activations]
    return needed or candidates


def calibrate(model_path: str | os.PathLike, data_path: str | os.PathLike | None,
              options: CalibrateOptions,
              on_batch: Callable[[int], None] | None = None,
              on_start: Callable[[int | None], None] | None = None,
              quantize: QuantizeOptions | None = None) -> CalibrateResult:
    """Calibrate one model on one data set; nothing is written (see calibfile.write_calibration).
    `quantize`: the options the model will be quantized with, which method auto's scoring
    reproduces (default: quantize's defaults)."""
    options.validate()
    # Only the graph is needed here: onnxruntime reads external weights straight from their files.
    model = load_model(model_path, load_weights=False)
    specs = input_specs(model)
    if data_path is None and options.loader_script is None:
        raise UsageError("give calibration data with --data PATH (or --data-loader-script FILE)")
    source = open_data(data_path, specs, preprocess=options.preprocess or None,
                       inputs=options.inputs, batch_size=options.batch_size, num_samples=options.num_samples,
                       loader_script=options.loader_script)
    if on_start is not None:
        on_start(source.num_samples)
    providers = Providers(options.provider)
    tensors = tensors_to_calibrate(model)
    bounded = bounded_ranges(model) if options.bounded_max else {}
    routes = observation_routes(model, tensors, bounded, channel_axes(model))
    tap = SliceTap(SLICE_MAX_SAMPLES, source.layout) if options.method == AUTO else None
    seen = SeenShapes()  # the input signature, for `qtool build` without --shapes
    run = collect_histograms(model, seen.watch(source if tap is None else tap.wrap(source)),
                             routes.histograms, bins=options.bins,
                             shard=parse_shard(options.shard), on_batch=on_batch,
                             external_dir=Path(model_path).parent, mean_axes=routes.mean_axes,
                             max_only={name: bounded[name][1] for name in routes.max_only},
                             pooled_means=routes.pooled_means,
                             expected_samples=_shard_share(source.num_samples, options.shard),
                             split_parts=source.layout.all_on_axis_0, providers=providers)
    choice = None
    if tap is not None:
        choice = choose_auto(model_path, run, tap, options, set(bounded), quantize, providers)
    calibration = build_calibration(
        run.histograms, method=options.method, params=options.method_params(), bins=options.bins,
        sha256=model_sha256(model_path), model_file=Path(model_path).name,
        inputs=seen.entries(specs, source.layout.axis),
        num_samples=run.num_samples, num_batches=run.num_batches, shard=options.shard,
        config=_effective_config(options, data_path), bounded=set(bounded),
        maxima=run.maxima, order=tensors,
        tensor_methods=choice.methods if choice else None,
        candidates=choice.candidates if choice else None,
        auto=choice.record if choice else None,
    )
    return CalibrateResult(calibration, run.histograms, run.seconds, run.means)


@dataclass
class AutoResult:
    methods: dict[str, str]      # tensor -> chosen method
    candidates: dict[str, dict]  # tensor -> method -> {"amax", "est_sqnr_db", scores}
    record: dict                 # the search's record for the calibration file


def choose_auto(model_path, run, tap: SliceTap, options: CalibrateOptions, bounded: set[str],
                quantize: QuantizeOptions | None, providers: Providers | None = None) -> AutoResult:
    """Method auto: score every candidate method's thresholds, then single tensors, on the
    samples the tap kept (qtool.calib.auto). Too few samples to score on: mse,
    the most robust single method, for every tensor."""
    # imported here: the probe brings the whole quantizer, which collection alone never needs
    from qtool.backends.onnxruntime import OnnxRunner
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
    probe = ThresholdProbe(model, {**fixed, **candidates[fallback]}, quantize,
                           channel_means(run.means), providers)
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


@dataclass
class ObservationRoutes:
    """How calibration observes each tensor (see collect_histograms and qtool.calib.pooled)."""

    histograms: list[str]          # taken out whole: |x| histogram (and numpy channel means)
    max_only: list[str]            # bounded and never negative: max|x| pooled in onnxruntime
    pooled_means: list[str]        # convolution inputs: channel means pooled in onnxruntime
    mean_axes: dict[str, int]      # the other tensors whose channel means are kept


def observation_routes(model, tensors: list[str], bounded: dict[str, tuple[float, float]],
                       axes: dict[str, int]) -> ObservationRoutes:
    """Tensors whose amax will be their max (bounded, see build_calibration) and whose values
    are never negative need no histogram: global max pooling inside onnxruntime gives max|x|
    without taking the tensor out. Likewise conv inputs' channel means come from global average
    pooling. Both need a float32 tensor of rank >= 3 (known from shape inference: onnxruntime's
    CPU pooling takes no other float type); otherwise the tensor is histogrammed as usual."""
    fed = {value.name for value in model.graph.input}
    wanted = set(tensors)
    rank3 = {name for name, info in tensor_infos(model).items()
             if info.elem_type == onnx.TensorProto.FLOAT
             and info.shape is not None and len(info.shape) >= 3}
    max_only = [name for name in tensors if name in bounded and bounded[name][0] >= 0
                and name in rank3 and name not in fed and axes.get(name, 1) == 1]
    pooled = [name for name, axis in axes.items() if axis == 1 and name in rank3 and name in wanted]
    histograms = [name for name in tensors if name not in max_only]
    mean_axes = {name: axis for name, axis in axes.items()
                 if name in histograms and name not in pooled}
    return ObservationRoutes(histograms, max_only, pooled, mean_axes)


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
        merged, method=method, params=params, bins=first.bins or 2048, sha256=first.model_sha256,
        model_file=first.model_file, inputs=merge_inputs([c.inputs for c in calibrations]),
        num_samples=sum(c.num_samples for c in calibrations),
        num_batches=sum(c.num_batches for c in calibrations), shard=None, config=config,
        bounded={name for name, tensor in first.tensors.items() if tensor.rule == "bounded"},
        maxima=maxima, order=list(first.tensors), tensor_methods=tensor_methods,
        auto=first.auto,
    )
    return CalibrateResult(calibration, merged, 0.0, means)


def _rounded(value: float) -> float | None:
    """A figure for the JSON file: 3 decimals, None when not finite."""
    return round(value, 3) if math.isfinite(value) else None


def _shard_share(num_samples: int | None, shard: str | None) -> int | None:
    """About how many of `num_samples` one shard counts (None when the total is unknown)."""
    if num_samples is None:
        return None
    return -(-num_samples // parse_shard(shard)[1])


def _effective_config(options: CalibrateOptions, data_path) -> dict:
    config = asdict(options)
    config["data"] = str(data_path) if data_path is not None else None
    return config
