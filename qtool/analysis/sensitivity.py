"""Per-layer quantization sensitivity and the automatic fallback: the library behind
`qtool sensitivity`.

Ranking: the model is quantized once, exactly as `qtool quantize` would with the same options
(weights kept as FP32 + Q + DQ, numerically the same as INT8 storage, and everything else in
FP32). For each quantized layer, the FP32 model with only that layer quantized, with the full
model's scales (see single_layer.py), runs on a small sample kept in memory together with the FP32
outputs; its output SQNR and cosine versus FP32 rank the layers, most damaging (lowest SQNR)
first.

Fallback (with a target): candidate sets of layers are excluded through the quantize library
itself and the resulting whole model is checked on the evaluation samples (by default all of
the data), so the answer holds for the model `qtool quantize --exclude-file` will produce,
placement consequences included (a residual Add whose conv is excluded loses its Q/DQ, say).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from qtool.analysis.evaluation import Evaluation, ReferenceSet, rank_key
from qtool.analysis.fallback import FallbackResult, Step, search_fallback
from qtool.analysis.gates import Gates
from qtool.analysis.single_layer import SingleLayerModels
from qtool.backends.onnxruntime.providers import AUTO as AUTO_PROVIDER
from qtool.backends.onnxruntime.providers import Providers
from qtool.backends.onnxruntime.providers import check_choice as check_provider
from qtool.backends.onnxruntime.runner import OnnxRunner
from qtool.calib.calibfile import check_model_match, read_calibration
from qtool.calib.choices import TASKS
from qtool.errors import QtoolError, UsageError
from qtool.graph.topology import node_label
from qtool.io.batch_axes import BatchLayout
from qtool.io.data import open_data
from qtool.io.labels import read_labels
from qtool.io.model import load_model, model_sha256
from qtool.options import require_positive
from qtool.quantize.api import quantize_model, refuse_quantized
from qtool.quantize.options import QuantizeOptions
from qtool.versions import tool_versions

DEFAULT_SAMPLES = 32
DEFAULT_BATCH = 32


@dataclass
class SensitivityOptions:
    num_samples: int = DEFAULT_SAMPLES     # ranking sample
    eval_samples: int | None = None        # fallback checks (None: all of the data)
    batch_size: int | None = None          # default: 32 when the batch size is free
    preprocess: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)  # [inputs] table: batch axes
    loader_script: str | None = None
    labels: str | None = None
    task: str | None = None
    logits: str | None = None
    quantize: QuantizeOptions = field(default_factory=QuantizeOptions)
    target: Gates = field(default_factory=Gates)
    provider: str = AUTO_PROVIDER          # onnxruntime's execution providers

    @property
    def classification(self) -> bool:
        return self.task == "classification" or self.labels is not None

    def validate(self) -> SensitivityOptions:
        check_provider(self.provider)
        require_positive(self, ("num_samples", "eval_samples", "batch_size"))
        if self.task is not None and self.task not in TASKS:
            raise UsageError(f"unknown task {self.task!r}; choose {', '.join(TASKS)}")
        self.target.validate()
        self.quantize.validate()
        if self.target.needs_labels and self.labels is None:
            raise UsageError("--max-top1-drop needs labels (--labels FILE)")
        if self.target.min_agreement is not None and not self.classification:
            raise UsageError("--min-agreement needs --task classification or --labels FILE")
        return self


@dataclass
class LayerResult:
    rank: int
    index: int              # position among the layers in graph order
    node: str
    op_type: str
    evaluation: Evaluation

    def to_dict(self) -> dict:
        return {"rank": self.rank, "node": self.node, "op_type": self.op_type,
                **self.evaluation.summary()}


@dataclass
class SensitivityResult:
    model: dict
    calibration: dict
    data: str
    samples: int
    layers: list[LayerResult]                # ranked, most sensitive first
    all_quantized: Evaluation
    fp32_top1: float | None
    seconds: dict
    quantize_options: dict
    node_names: list[str]
    target: Gates = field(default_factory=Gates)
    fallback: FallbackResult | None = None
    eval_samples: int | None = None
    eval_fp32_top1: float | None = None

    @property
    def ranking(self) -> list[str]:
        return [layer.node for layer in self.layers]

    def to_dict(self) -> dict:
        result = {
            "model": self.model,
            "calibration": self.calibration,
            "data": self.data,
            "samples": self.samples,
            "layers": len(self.layers),
            "quantize_options": self.quantize_options,
            "fp32_top1_percent": self.fp32_top1,
            "all_quantized": self.all_quantized.summary(),
            "ranking": [layer.to_dict() for layer in self.layers],
            "seconds": {key: round(value, 3) for key, value in self.seconds.items()},
            "tools": tool_versions(),
        }
        if self.fallback is not None:
            result["fallback"] = {"target": self.target.to_dict(), "eval_samples": self.eval_samples,
                                  "fp32_top1_percent": self.eval_fp32_top1,
                                  **self.fallback.to_dict()}
        return result


def _default_batch(specs, inputs: dict) -> int | None:
    layout = BatchLayout.of(specs, inputs)
    # joining files needs every input batched (an unbatched one could differ between files)
    if layout.dynamic and None not in layout.axes.values():
        return DEFAULT_BATCH
    return None


def _reference_set(runner: OnnxRunner, data, options: SensitivityOptions, num_samples,
                   batch_size, option: str = "--num-samples"):
    """(ReferenceSet, its data source)."""
    specs = runner.input_specs
    source = open_data(data, specs, preprocess=options.preprocess or None, inputs=options.inputs,
                       batch_size=batch_size,
                       num_samples=num_samples, loader_script=options.loader_script)
    labels = read_labels(options.labels, source) if options.labels else None
    reference = ReferenceSet(runner.run, source, source.layout, labels=labels, logits=options.logits,
                             classification=options.classification, option=option)
    return reference, source


def measure_sensitivity(model_path: str | os.PathLike, calib_path: str | os.PathLike,
                        data: str | os.PathLike | None, options: SensitivityOptions,
                        on_layer: Callable[[int, int, str], None] | None = None,
                        on_step: Callable[[Step], None] | None = None) -> SensitivityResult:
    """Rank every quantized layer by its cost alone; with a target, find the fallback set."""
    options.validate()
    if data is None and options.loader_script is None:
        raise UsageError("give sample data with --data PATH (or --data-loader-script FILE)")
    start = time.perf_counter()
    model = load_model(model_path)
    refuse_quantized(model)
    calibration = read_calibration(calib_path)
    sha256 = model_sha256(model_path)
    check_model_match(calibration, sha256)
    # Single-layer models keep one layer's Q/DQ on the FP32 model; a bias corrected for the other
    # layers' weight rounding would be wrong there, so the ranking runs without bias correction.
    analysis_options = dataclasses.replace(options.quantize, weights="fp32", high_precision="fp32",
                                           bias_correction=False)
    quantized, _ = quantize_model(model, calibration.amax, analysis_options)
    single = SingleLayerModels(model, quantized)
    if not single.layers:
        raise QtoolError("no layer is quantized, so there is nothing to rank; see `qtool quantize -v`")
    providers = Providers(options.provider)
    reference_runner = OnnxRunner(model, label=str(model_path), providers=providers)
    batch_size = options.batch_size or _default_batch(reference_runner.input_specs,
                                                      options.inputs)
    sample, sample_source = _reference_set(reference_runner, data, options, options.num_samples,
                                           batch_size)
    setup = time.perf_counter() - start

    ranking_start = time.perf_counter()
    all_quantized, layers = _rank_layers(sample, quantized, single, providers, on_layer)
    ranking_seconds = time.perf_counter() - ranking_start
    seconds = {"setup": setup, "ranking": ranking_seconds,
               "per_layer": ranking_seconds / len(layers)}

    result = SensitivityResult(
        model={"path": str(model_path), "sha256": sha256},
        calibration={"path": str(calib_path), "method": calibration.method},
        data=sample_source.describe(), samples=sample.samples, layers=layers, all_quantized=all_quantized,
        fp32_top1=sample.reference_accuracy(), seconds=seconds,
        quantize_options=options.quantize.to_dict(),
        node_names=[node_label(node) for node in model.graph.node], target=options.target,
    )
    if options.target.any:
        fallback_start = time.perf_counter()
        if _sample_covers_evaluation(sample_source, options):
            evaluation_set = sample
        else:
            evaluation_set, _ = _reference_set(reference_runner, data, options,
                                               options.eval_samples, batch_size, "--eval-samples")
        result.eval_samples = evaluation_set.samples
        result.eval_fp32_top1 = evaluation_set.reference_accuracy()
        means = calibration.load_channel_means() if options.quantize.bias_correction else None
        result.fallback = find_fallback(model, calibration.amax, options, result.ranking,
                                        evaluation_set, on_step, channel_means=means,
                                        providers=providers)
        seconds["fallback"] = time.perf_counter() - fallback_start
    seconds["total"] = time.perf_counter() - start
    return result


def _rank_layers(sample: ReferenceSet, quantized: onnx.ModelProto, single: SingleLayerModels,
                 providers: Providers,
                 on_layer: Callable[[int, int, str], None] | None) -> tuple[Evaluation, list[LayerResult]]:
    """The whole quantized model's evaluation, and every layer ranked by its single-layer
    model's, most damaging first (ties keep the graph's order)."""
    all_quantized = _evaluate_model(sample, quantized, providers=providers)
    evaluations = []
    count = len(single.layers)
    for index, layer in enumerate(single.layers):
        evaluations.append(_evaluate_model(sample, single.build(layer), providers=providers))
        if on_layer is not None:
            on_layer(index + 1, count, layer.name)
    order = sorted(range(count), key=lambda i: (rank_key(evaluations[i]), i))
    layers = [LayerResult(rank + 1, i, single.layers[i].name, single.layers[i].op_type,
                          evaluations[i]) for rank, i in enumerate(order)]
    return all_quantized, layers


def _evaluate_model(evaluation_set: ReferenceSet, model: onnx.ModelProto,
                    gates: Gates | None = None, providers: Providers | None = None) -> Evaluation:
    runner = OnnxRunner(model, providers=providers)
    try:
        return evaluation_set.evaluate(runner.run, gates)
    finally:
        runner.close()


def _sample_covers_evaluation(sample_source, options: SensitivityOptions) -> bool:
    """The evaluation samples are exactly the ranking sample: reuse it instead of re-reading."""
    if options.eval_samples == options.num_samples:
        return True
    available = sample_source.available_samples  # before the num_samples cut
    if available is None or available > options.num_samples:
        return False
    return options.eval_samples is None or options.eval_samples >= available


def find_fallback(model: onnx.ModelProto, amax: dict[str, float], options: SensitivityOptions,
                  ranking: list[str], evaluation_set: ReferenceSet,
                  on_step: Callable[[Step], None] | None = None,
                  channel_means: dict | None = None,
                  providers: Providers | None = None) -> FallbackResult:
    """Search the exclusion set with whole-model checks on `evaluation_set`."""
    base = options.quantize

    def check(excluded: tuple[str, ...]) -> tuple[bool, dict]:
        trial = dataclasses.replace(base, exclude=tuple(base.exclude) + excluded)
        candidate, _ = quantize_model(model, amax, trial, channel_means=channel_means)
        evaluation = _evaluate_model(evaluation_set, candidate, options.target, providers)
        failure = evaluation.failure(options.target)
        metrics = evaluation.summary()
        if failure:
            metrics["failed"] = failure
        return failure is None, metrics

    return search_fallback(ranking, check, on_step)


def default_exclude_path(model_path: str | os.PathLike) -> Path:
    """In the current folder: the model's folder may not be the user's (a read-only assets
    folder, a shared model store)."""
    return Path(Path(model_path).stem + ".exclude.txt")
