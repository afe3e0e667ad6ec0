"""Compare two models on the same data: per-output error metrics, classification accuracy and
agreement, sequence agreement (CTC decoding), a user's metric script, and accuracy gates. The
library behind `qtool compare` and the pipeline's compare step.

Both models see every batch in turn; only running sums are kept (see metrics.py, sequences.py),
so memory stays flat however large the data set is. Either model may be ONNX or a TensorRT engine.

Fail fast: whatever can be checked is checked before any inference (options, gates, the report's
folder, the metric script's import and functions: check_before_inference) or on the first batch
(the task's output shapes, the names the metric gates read: check_first_batch), never after the
whole data set has run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from qtool.analysis.compare_options import COMPARE_TASKS
from qtool.analysis.gates import GateResult, Gates, evaluate_gates, failure_message
from qtool.analysis.metric_script import MetricScript
from qtool.analysis.metrics import (
    ClassificationStats,
    OutputStats,
    describe_disagreements,
    format_number,
    json_number,
)
from qtool.analysis.runners import model_kind, open_runner
from qtool.analysis.sequences import SequenceStats, looks_like_sequence
from qtool.backends.onnxruntime.providers import Providers
from qtool.backends.onnxruntime.providers import check_choice as check_provider
from qtool.errors import QtoolError, UsageError
from qtool.io.data import open_data
from qtool.io.hashing import sha256_file
from qtool.io.labels import read_labels
from qtool.io.model import InputSpec, model_sha256
from qtool.io.outputs import guard_outputs
from qtool.io.prefetch import Prefetcher
from qtool.versions import tool_versions

log = logging.getLogger(__name__)


@dataclass
class CompareOptions:
    num_samples: int | None = None
    batch_size: int | None = None
    preprocess: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)  # [inputs] table: batch axes
    loader_script: str | None = None
    labels: str | None = None
    task: str | None = None          # "classification" (implied by labels) or "sequence"
                                     # (implied by ctc_blank); None: sequence when detected
    logits: str | None = None        # the scored output (default: the first that fits the task)
    ctc_blank: int | None = None     # sequences: decode greedily with this blank class
    metric_script: str | None = None
    gates: Gates = field(default_factory=Gates)
    provider: str = "auto"           # onnxruntime's execution providers for ONNX models

    @property
    def classification(self) -> bool:
        return self.task == "classification" or self.labels is not None

    @property
    def sequence(self) -> bool:
        return self.task == "sequence" or self.ctc_blank is not None

    def validate(self) -> CompareOptions:
        check_provider(self.provider)
        if self.task is not None and self.task not in COMPARE_TASKS:
            raise UsageError(f"unknown task {self.task!r}; choose one of "
                             f"{', '.join(COMPARE_TASKS)}")
        for name in ("num_samples", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be a positive integer")
        if self.ctc_blank is not None and self.ctc_blank < 0:
            raise UsageError("--ctc-blank is a class index >= 0")
        if self.classification and self.sequence:
            raise UsageError("--ctc-blank and --task sequence score a sequence output; "
                             "--labels and --task classification a classifier: choose one")
        self.gates.validate()
        if self.gates.needs_labels and self.labels is None:
            raise UsageError("--max-top1-drop needs labels (--labels FILE)")
        if self.gates.min_agreement is not None and not self.classification:
            raise UsageError("--min-agreement needs --task classification or --labels FILE")
        return self


@dataclass
class CompareResult:
    reference: dict
    candidate: dict
    data: str
    samples: int
    batches: int
    outputs: dict[str, OutputStats]
    classification: ClassificationStats | None
    gate_results: list[GateResult]
    seconds: float
    skipped_outputs: list[str] = field(default_factory=list)
    sequence: SequenceStats | None = None
    metrics: dict[str, float] = field(default_factory=dict)   # the metric script's numbers
    metric_script: str | None = None

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.gate_results)

    def failure(self) -> str | None:
        return failure_message(self.gate_results)

    def to_dict(self) -> dict:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "data": self.data,
            "samples": self.samples,
            "batches": self.batches,
            "outputs": {name: stats.to_dict() for name, stats in self.outputs.items()},
            "outputs_not_compared": list(self.skipped_outputs),
            "classification": self.classification.to_dict() if self.classification else None,
            "sequence": self.sequence.to_dict() if self.sequence else None,
            "metric_script": self.metric_script,
            "metrics": {name: json_number(value) for name, value in self.metrics.items()},
            "gates": [result.to_dict() for result in self.gate_results],
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "tools": tool_versions(),
        }

    def render_text(self) -> str:
        batches = f"{self.batches} batch{'es' if self.batches != 1 else ''}"
        lines = [f"compared {self.samples} samples ({batches}) in {self.seconds:.2f}s",
                 f"  reference  {self.reference['path']}",
                 f"  candidate  {self.candidate['path']}",
                 f"  data       {self.data}"]
        rows = [("output", "sqnr_db", "cosine", "max_abs_err", "mean_abs_err")]
        for name, stats in self.outputs.items():
            rows.append((name, format_number(stats.sqnr_db), format_number(stats.cosine, 6),
                         format_number(stats.max_abs_error), format_number(stats.mean_abs_error)))
        lines.append("")
        lines.extend(table(rows))
        for name, stats in self.outputs.items():
            if stats.mismatched:
                lines.append(f"warning: {name}: {stats.mismatched} NaN/Inf values differ between "
                             f"the models")
        cls = self.classification
        if cls is not None:
            lines.append("")
            lines.append(f"classification ({cls.output}, {cls.samples} samples): top-1 agreement "
                         f"{percent(cls.agreement)}")
            if cls.disagreements:
                lines.append("  " + describe_disagreements(cls.disagreements, cls.flip_margins,
                                                           cls.median_top1_margin))
            if cls.labelled:
                rows = [("", "top-1", "top-5")]
                for which in ("reference", "candidate"):
                    rows.append((which, percent(cls.accuracy(which, 1)),
                                 percent(cls.accuracy(which, 5))))
                lines.extend(table(rows))
                lines.append(f"top-1 drop: {cls.top1_drop:.2f} points")
        if self.sequence is not None:
            lines.append("")
            lines.extend(describe_sequence(self.sequence))
        if self.metric_script is not None:
            lines.append("")
            lines.append(f"metrics of {self.metric_script}:")
            rows = [(name, format_number(value, 6)) for name, value in self.metrics.items()]
            lines.extend("  " + line for line in (table(rows) if rows else ["none"]))
        if self.gate_results:
            lines.append("")
            lines.extend(result.describe() for result in self.gate_results)
            lines.append("gate passed" if self.passed else "gate FAILED")
        return "\n".join(lines)


def describe_sequence(seq: SequenceStats) -> list[str]:
    lines = [(f"sequence ({seq.output}, {seq.samples} samples, {seq.positions} positions): "
              f"position agreement {percent(seq.agreement)}")]
    if seq.disagreements:
        lines.append("  " + describe_disagreements(seq.disagreements, list(seq.flip_margins),
                                                   seq.median_top1_margin, "positions"))
    if seq.blank is not None:
        lines.append(f"  CTC greedy decoding (blank {seq.blank}): same sequence "
                     f"{seq.same_sequences}/{seq.samples} ({percent(seq.same_sequence)}), "
                     f"token error rate {percent(seq.token_error_rate)} ({seq.edits} edits over "
                     f"{seq.reference_tokens} reference tokens)")
    return lines


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def table(rows: list[tuple]) -> list[str]:
    """Left-aligned first column, right-aligned numbers."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [str(row[0]).ljust(widths[0])]
        cells += [str(cell).rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return lines


def describe_model(path: str | os.PathLike) -> dict:
    kind = model_kind(path)
    digest = model_sha256(path) if kind == "onnx" else sha256_file(path)
    return {"path": str(path), "kind": kind, "sha256": digest}


def merge_specs(reference: list[InputSpec], candidate: list[InputSpec]) -> list[InputSpec]:
    """Input specs both models accept: same names and dtypes; a static dim of either wins, then a
    dimension name (it tells the batch axis; TensorRT engines keep none)."""
    theirs = {spec.name: spec for spec in candidate}
    missing = [spec.name for spec in reference if spec.name not in theirs]
    extra = [name for name in theirs if name not in {spec.name for spec in reference}]
    if missing or extra:
        raise QtoolError("the models take different inputs: reference "
                         f"{', '.join(s.name for s in reference)}; candidate "
                         f"{', '.join(s.name for s in candidate)}")
    merged = []
    for spec in reference:
        other = theirs[spec.name]
        if np.dtype(spec.dtype) != np.dtype(other.dtype):
            raise QtoolError(f"input {spec.name!r} is {spec.dtype} in the reference but "
                             f"{other.dtype} in the candidate")
        if len(spec.shape) != len(other.shape):
            raise QtoolError(f"input {spec.name!r} has rank {len(spec.shape)} in the reference "
                             f"but {len(other.shape)} in the candidate")
        dims = []
        for axis, (a, b) in enumerate(zip(spec.shape, other.shape)):
            if isinstance(a, int) and isinstance(b, int) and a != b:
                raise QtoolError(f"input {spec.name!r} axis {axis} is {a} in the reference but "
                                 f"{b} in the candidate")
            dims.append(a if isinstance(a, int) else b if isinstance(b, int) else a or b)
        merged.append(InputSpec(spec.name, spec.dtype, tuple(dims)))
    return merged


class LabelStream:
    """Hands out the labels of each batch in data order; checks the counts add up."""

    def __init__(self, labels: np.ndarray | None, path: str | None):
        self.labels = labels
        self.path = path
        self.offset = 0

    def take(self, count: int) -> np.ndarray | None:
        if self.labels is None:
            return None
        end = self.offset + count
        if end > len(self.labels):
            raise QtoolError(f"labels {self.path} has {len(self.labels)} entries but the data "
                             f"has more samples")
        batch = self.labels[self.offset:end]
        self.offset = end
        return batch

    def finish(self) -> None:
        if self.labels is not None and self.offset != len(self.labels):
            raise QtoolError(f"labels {self.path} has {len(self.labels)} entries but the data "
                             f"has {self.offset} samples")


def common_outputs(reference: list[str], candidate: list[str]) -> tuple[list[str], list[str]]:
    """(outputs both models have, in reference order; outputs only one has)."""
    common = [name for name in reference if name in candidate]
    if not common:
        raise QtoolError("the models share no output name: reference "
                         f"{', '.join(reference)}; candidate {', '.join(candidate)}")
    only = [name for name in reference if name not in candidate]
    only += [name for name in candidate if name not in reference]
    return common, only


def check_before_inference(options: CompareOptions,
                           output: str | os.PathLike | None = None) -> MetricScript | None:
    """Everything that can fail before any model runs: options and gates, where the report goes
    (the output guard: a regular file in a folder that exists or can be made), the metric
    script's import and functions. Returns the loaded metric script."""
    options.validate()
    guard_outputs([output])
    return MetricScript(options.metric_script) if options.metric_script else None


def sequence_stats(options: CompareOptions, names: list[str],
                   reference: dict) -> SequenceStats | None:
    """The sequence output to score, from the first batch's reference outputs: the named or
    first rank-3 output under --task sequence, the first that looks like one (sequences.py)
    when no task is given, none for classifiers."""
    if options.classification:
        return None
    if options.sequence:
        chosen = options.logits or next((n for n in names if reference[n].ndim == 3), None)
        if chosen is None:
            shapes = ", ".join(f"{n} {list(reference[n].shape)}" for n in names)
            raise QtoolError(f"no output has shape [batch, positions, classes] for --task "
                             f"sequence (outputs: {shapes})")
        return SequenceStats(chosen, options.ctc_blank)
    for name in [options.logits] if options.logits else names:
        if looks_like_sequence(reference[name]):
            log.info("output %r holds per-position probabilities %s: compared as a sequence",
                     name, list(reference[name].shape))
            return SequenceStats(name)
    return None


def check_first_batch(gates: Gates, classifier: ClassificationStats | None,
                      sequence: SequenceStats | None, script: MetricScript | None) -> None:
    """After the first batch, before the rest: the task's output exists for the flips gate, and
    every name the metric gates read is measured (the script's result() type checked with it)."""
    if gates.max_flips_above_margin is not None and classifier is None and sequence is None:
        raise UsageError("--max-flips-above-margin needs a classification or sequence output "
                         "(--task classification, --task sequence or --labels FILE)")
    measured = dict(sequence.named_numbers()) if sequence is not None else {}
    if script is not None:
        numbers = script.result(" after the first batch (to check the metric names)")
        clash = sorted(set(numbers) & set(measured))
        if clash:
            raise QtoolError(f"metric script {script.path}: result() names {', '.join(clash)}, "
                             f"which the sequence comparison measures already; rename it")
        measured.update(numbers)
    missing = [name for name in gates.metric_names if name not in measured]
    if missing:
        raise UsageError(f"--min-metric/--max-metric {', '.join(missing)}: no metric of that "
                         f"name (measured: {', '.join(measured) or 'none'})")


def compare_models(reference: str | os.PathLike, candidate: str | os.PathLike,
                   data: str | os.PathLike | None, options: CompareOptions,
                   on_batch: Callable[[int], None] | None = None,
                   on_start: Callable[[int | None], None] | None = None,
                   output: str | os.PathLike | None = None) -> CompareResult:
    """Run both models on every batch of `data` and accumulate the metrics; nothing is written.
    `output` is where the caller will write the report: its folder is checked before any
    inference."""
    script = check_before_inference(options, output)
    if data is None and options.loader_script is None:
        raise UsageError("give comparison data with --data PATH (or --data-loader-script FILE)")
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        providers = Providers(options.provider)
        ref = stack.enter_context(open_runner(reference, providers))
        cand = stack.enter_context(open_runner(candidate, providers))
        info = (describe_model(reference), describe_model(candidate))  # files checked by now
        specs = merge_specs(ref.input_specs, cand.input_specs)
        names, skipped = common_outputs(ref.output_names, cand.output_names)
        source = open_data(data, specs, preprocess=options.preprocess or None,
                           inputs=options.inputs, batch_size=options.batch_size, num_samples=options.num_samples,
                           loader_script=options.loader_script)
        labels = LabelStream(read_labels(options.labels, source) if options.labels else None,
                             options.labels)
        if options.logits is not None and options.logits not in names:
            raise QtoolError(f"output {options.logits!r} is not an output of both models "
                             f"(they share {', '.join(names)})")
        classifier = (ClassificationStats(options.logits or names[0]) if options.classification
                      else None)
        if on_start is not None:
            on_start(source.num_samples)
        outputs = {name: OutputStats(name) for name in names}
        sequence = None
        samples = batches = 0
        for feeds in Prefetcher(source):
            count = source.layout.length(feeds, f"batch {batches}")
            ref_out = ref.run(feeds)
            cand_out = cand.run(feeds)
            if batches == 0:
                sequence = sequence_stats(options, names, ref_out)
            for name in names:
                outputs[name].update(ref_out[name], cand_out[name])
            if classifier is not None:
                classifier.update(ref_out[classifier.output], cand_out[classifier.output],
                                  labels.take(count))
            if sequence is not None:
                sequence.update(ref_out[sequence.output], cand_out[sequence.output])
            if script is not None:
                script.update(ref_out, cand_out, feeds, batches)
            if batches == 0:
                check_first_batch(options.gates, classifier, sequence, script)
            samples += count
            batches += 1
            if on_batch is not None:
                on_batch(count)
        labels.finish()
    if batches == 0:
        raise QtoolError("no batches to compare: the data is empty")
    metrics = script.result() if script is not None else {}
    named = {**(sequence.named_numbers() if sequence is not None else {}), **metrics}
    gate_results = evaluate_gates(options.gates, outputs, classifier, sequence, named)
    return CompareResult(
        reference=info[0], candidate=info[1], data=source.describe(), samples=samples,
        batches=batches, outputs=outputs, classification=classifier, gate_results=gate_results,
        seconds=time.perf_counter() - start, skipped_outputs=skipped, sequence=sequence,
        metrics=metrics, metric_script=None if script is None else str(script.path),
    )
