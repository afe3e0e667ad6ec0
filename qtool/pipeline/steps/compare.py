"""The compare steps: the FP32 model against the quantized model (compare), or against the
engine (compare_engine), with the accuracy gates of [compare]."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qtool.errors import UsageError
from qtool.pipeline.context import PipelineContext
from qtool.pipeline.result import StepRecord


def options_from_config(context: PipelineContext):
    """The compare step's options, gates included, from [compare], [preprocess] and [inputs]."""
    from qtool.analysis.compare_options import compare_options

    return compare_options(context.config.values("compare"), preprocess=context.config.table("preprocess"),
                 inputs=context.config.table("inputs"), provider=context.provider,
                 where=lambda key: f"[compare] {key}")


def check_compare(context: PipelineContext) -> None:
    """The compare step's options, gates and metric script, checked before any inference."""
    from qtool.analysis.compare import check_before_inference

    check_before_inference(options_from_config(context))


class CompareStep:
    def __init__(self, name: str, candidate: Callable[[PipelineContext], Path]):
        self.name = name
        self.candidate = candidate

    def run(self, context: PipelineContext) -> StepRecord:
        from qtool.analysis.compare import compare_models
        from qtool.io.atomic import write_json

        record = context.start(self.name)
        data = context.config.path_of("compare", "data")
        options = options_from_config(context)
        if data is None and options.loader_script is None:
            raise UsageError("[compare] data (or loader_script) is required")
        path = context.output_dir / f"{self.name}.json"
        with context.progress_bar("comparing") as bar:
            compared = compare_models(context.result.model_path, self.candidate(context),
                                      None if options.loader_script else data, options,
                                      on_batch=bar.advance, on_start=bar.begin, output=path)
        report = compared.to_dict()
        write_json(path, report)
        context.result.gates.extend(compared.gate_results)
        record.status = "ok" if compared.passed else "gate_failed"
        record.data.update(output=str(path), samples=compared.samples,
                           outputs=report["outputs"], classification=report["classification"],
                           sequence=report["sequence"], metrics=report["metrics"],
                           gates=report["gates"], passed=compared.passed)
        context.result.info.setdefault("metrics", {})[self.name] = headline(report)
        record.detail = detail(compared)
        return record


def detail(compared) -> str:
    """The compare step's line for people."""
    from qtool.analysis.metrics import format_number

    worst = min(compared.outputs.values(), key=lambda stats: stats.sqnr_db)
    text = (f"{compared.samples} samples: sqnr {format_number(worst.sqnr_db)} dB, "
            f"cosine {format_number(worst.cosine, 6)}")
    cls = compared.classification
    if cls is not None:
        text += f", top-1 agreement {cls.agreement:.2f}%"
        if cls.labelled:
            text += (f", top-1 {cls.accuracy('reference'):.2f}% -> "
                     f"{cls.accuracy('candidate'):.2f}%")
    seq = compared.sequence
    if seq is not None:
        text += f", position agreement {seq.agreement:.2f}%"
        if seq.same_sequence is not None:
            text += f", same sequence {seq.same_sequence:.2f}%"
    for metric, value in compared.metrics.items():
        text += f", {metric} {format_number(value, 6)}"
    if not compared.passed:
        text += "; " + compared.failure()
    return text


def headline(report: dict) -> dict:
    """The numbers a CI log wants from a compare report."""
    headline = {"samples": report["samples"],
                "sqnr_db": {name: o["sqnr_db"] for name, o in report["outputs"].items()},
                "cosine": {name: o["cosine"] for name, o in report["outputs"].items()}}
    cls = report["classification"]
    if cls:
        headline["top1_agreement_percent"] = cls["top1_agreement_percent"]
        if "reference" in cls:
            headline["fp32_top1_percent"] = cls["reference"]["top1_percent"]
            headline["int8_top1_percent"] = cls["candidate"]["top1_percent"]
            headline["top1_drop_points"] = cls["top1_drop_points"]
    seq = report["sequence"]
    if seq:
        headline["position_agreement_percent"] = seq["position_agreement_percent"]
        if "ctc" in seq:
            headline["same_sequence_percent"] = seq["ctc"]["same_sequence_percent"]
            headline["token_error_rate_percent"] = seq["ctc"]["token_error_rate_percent"]
    if report["metrics"]:
        headline["metrics"] = report["metrics"]
    return headline
