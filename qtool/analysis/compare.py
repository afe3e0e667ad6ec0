"""Compare two models on the same data: per-output error metrics, classification accuracy and
agreement, sequence agreement (CTC decoding), a user's metric script, and accuracy gates. The
library behind `qtool compare` and the pipeline's compare step.

Both models see every batch in turn; only running sums are kept (see metrics.py, sequences.py),
so memory stays flat however large the data set is. Either model may be ONNX or a TensorRT engine.

Fail fast: whatever can be checked is checked before any inference (options, gates, the report's
folder, the metric script's import and functions: check_before_inference) or on the first batch
(the task's output shapes, the names the metric gates read: check_first_batch), never after the
whole data set has run.

The result and its text live in compare_result.py; pairing the two models' inputs, outputs and
labels in compare_setup.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable

from qtool.analysis.compare_options import CompareOptions
from qtool.analysis.compare_result import CompareResult
from qtool.analysis.compare_setup import LabelStream, common_outputs, describe_model, merge_specs
from qtool.analysis.gates import Gates, evaluate_gates
from qtool.analysis.metric_script import MetricScript
from qtool.analysis.metrics import ClassificationStats, OutputStats
from qtool.analysis.runners import open_runner
from qtool.analysis.sequences import SequenceStats, looks_like_sequence
from qtool.backends.onnxruntime.providers import Providers
from qtool.errors import QtoolError, UsageError
from qtool.io.data import open_data
from qtool.io.labels import read_labels
from qtool.io.outputs import guard_outputs
from qtool.io.prefetch import Prefetcher

__all__ = [
    "CompareOptions", "check_before_inference", "check_first_batch", "compare_models",
    "merge_specs", "sequence_stats",
]

log = logging.getLogger(__name__)


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
        tally = MetricTally(options, names, classifier, script)
        for feeds in Prefetcher(source):
            count = source.layout.length(feeds, f"batch {tally.batches}")
            tally.update(feeds, ref.run(feeds), cand.run(feeds), count, labels)
            if on_batch is not None:
                on_batch(count)
        labels.finish()
    if tally.batches == 0:
        raise QtoolError("no batches to compare: the data is empty")
    metrics = script.result() if script is not None else {}
    sequence = tally.sequence
    named = {**(sequence.named_numbers() if sequence is not None else {}), **metrics}
    gate_results = evaluate_gates(options.gates, tally.outputs, classifier, sequence, named)
    return CompareResult(
        reference=info[0], candidate=info[1], data=source.describe(), samples=tally.samples,
        batches=tally.batches, outputs=tally.outputs, classification=classifier,
        gate_results=gate_results, seconds=time.perf_counter() - start, skipped_outputs=skipped,
        sequence=sequence, metrics=metrics,
        metric_script=None if script is None else str(script.path),
    )


class MetricTally:
    """Every running metric of one comparison, updated batch by batch: per-output errors, the
    classifier, the sequence output (chosen on the first batch) and the metric script."""

    def __init__(self, options: CompareOptions, names: list[str],
                 classifier: ClassificationStats | None, script: MetricScript | None):
        self.options = options
        self.names = names
        self.outputs = {name: OutputStats(name) for name in names}
        self.classifier = classifier
        self.sequence: SequenceStats | None = None
        self.script = script
        self.samples = self.batches = 0

    def update(self, feeds: dict, ref_out: dict, cand_out: dict, count: int,
               labels: LabelStream) -> None:
        first = self.batches == 0
        if first:
            self.sequence = sequence_stats(self.options, self.names, ref_out)
        for name in self.names:
            self.outputs[name].update(ref_out[name], cand_out[name])
        if self.classifier is not None:
            self.classifier.update(ref_out[self.classifier.output],
                                   cand_out[self.classifier.output], labels.take(count))
        if self.sequence is not None:
            self.sequence.update(ref_out[self.sequence.output], cand_out[self.sequence.output])
        if self.script is not None:
            self.script.update(ref_out, cand_out, feeds, self.batches)
        if first:
            check_first_batch(self.options.gates, self.classifier, self.sequence, self.script)
        self.samples += count
        self.batches += 1
