"""The calibrate step as a library call: data + model -> histograms -> thresholds -> file.

The CLI command and the pipeline both call `calibrate()`. The model is analysed once
(qtool.graph.facts); the placement plan made from those facts says which tensors to observe
(qtool.calib.routes). Thresholds come from qtool.calib.thresholding (method auto's choice from
qtool.calib.auto_choice); qtool.calib.merge re-picks thresholds or merges shards without inference.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qtool.backends.onnxruntime.providers import Providers
from qtool.calib.auto import SLICE_MAX_SAMPLES, SliceTap
from qtool.calib.auto_choice import choose_auto
from qtool.calib.calibfile import Calibration
from qtool.calib.channelmean import ChannelMean
from qtool.calib.choices import AUTO
from qtool.calib.collection import collect_histograms, parse_shard
from qtool.calib.histogram import AbsHistogram
from qtool.calib.options import CalibrateOptions
from qtool.calib.routes import observation_routes, tensors_to_calibrate
from qtool.calib.signature import SeenShapes
from qtool.calib.thresholding import build_calibration
from qtool.errors import UsageError
from qtool.graph.bounded import bounded_ranges
from qtool.graph.facts import ModelFacts
from qtool.graph.observe import channel_axes
from qtool.io.data import open_data
from qtool.io.model import input_specs, load_model, model_sha256
from qtool.quantize.options import QuantizeOptions


@dataclass
class CalibrateResult:
    calibration: Calibration
    histograms: dict[str, AbsHistogram]
    seconds: float
    means: dict[str, ChannelMean] = field(default_factory=dict)


def calibrate(model_path: str | os.PathLike, data_path: str | os.PathLike | None,
              options: CalibrateOptions,
              on_batch: Callable[[int], None] | None = None,
              on_start: Callable[[int | None], None] | None = None,
              quantize: QuantizeOptions | None = None,
              sha256: str | None = None) -> CalibrateResult:
    """Calibrate one model on one data set; nothing is written (see calibfile.write_calibration).
    `quantize`: the options the model will be quantized with, which method auto's scoring
    reproduces (default: quantize's defaults). `sha256`: the model file's model_sha256, when the
    caller has hashed it already (a large model's weights are then not read twice)."""
    options.validate()
    # Only the graph is needed here: onnxruntime reads external weights straight from their files.
    model = load_model(model_path, load_weights=False)
    facts = ModelFacts.of(model)  # analysed once: everything below reads these
    specs = input_specs(model)
    if data_path is None and options.loader_script is None:
        raise UsageError("give calibration data with --data PATH (or --data-loader-script FILE)")
    source = open_data(data_path, specs, preprocess=options.preprocess or None,
                       inputs=options.inputs, batch_size=options.batch_size, num_samples=options.num_samples,
                       loader_script=options.loader_script)
    if on_start is not None:
        on_start(source.num_samples)
    providers = Providers(options.provider)
    tensors = tensors_to_calibrate(facts)
    bounded = bounded_ranges(facts) if options.bounded_max else {}
    routes = observation_routes(facts, tensors, bounded, channel_axes(facts))
    tap = SliceTap(SLICE_MAX_SAMPLES, source.layout) if options.method == AUTO else None
    seen = SeenShapes()  # the input signature, for `qtool build` without --shapes
    run = collect_histograms(model, seen.watch(source if tap is None else tap.wrap(source)),
                             routes.histograms, bins=options.bins,
                             shard=parse_shard(options.shard), on_batch=on_batch,
                             external_dir=Path(model_path).parent, mean_axes=routes.mean_axes,
                             max_only={name: bounded[name][1] for name in routes.max_only},
                             pooled_means=routes.pooled_means, elem_types=facts.elem_types,
                             expected_samples=_shard_share(source.num_samples, options.shard),
                             split_parts=source.layout.all_on_axis_0, providers=providers)
    choice = None
    if tap is not None:
        choice = choose_auto(model_path, run, tap, options, set(bounded), quantize, providers,
                             facts=facts)
    calibration = build_calibration(
        run.histograms, method=options.method, params=options.method_params(), bins=options.bins,
        sha256=sha256 or model_sha256(model_path), model_file=Path(model_path).name,
        inputs=seen.entries(specs, source.layout.axis),
        num_samples=run.num_samples, num_batches=run.num_batches, shard=options.shard,
        config=_effective_config(options, data_path), bounded=set(bounded),
        maxima=run.maxima, order=tensors,
        tensor_methods=choice.methods if choice else None,
        candidates=choice.candidates if choice else None,
        auto=choice.record if choice else None,
    )
    return CalibrateResult(calibration, run.histograms, run.seconds, run.means)


def _shard_share(num_samples: int | None, shard: str | None) -> int | None:
    """About how many of `num_samples` one shard counts (None when the total is unknown)."""
    if num_samples is None:
        return None
    return -(-num_samples // parse_shard(shard)[1])


def _effective_config(options: CalibrateOptions, data_path) -> dict:
    config = asdict(options)
    config["data"] = str(data_path) if data_path is not None else None
    return config
