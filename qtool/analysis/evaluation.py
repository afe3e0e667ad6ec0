"""A fixed evaluation set replayed against many candidate models: the input batches, the FP32
model's outputs on them and the labels, held in memory.

Sensitivity and the fallback search run dozens of candidates on the same samples; reading and
preprocessing the data and running the FP32 model once, not once per candidate, is part of the
saving. The rest comes from stopping a candidate early: with accuracy gates, a candidate stops
as soon as the samples left could no longer make it pass (a sure failure, never a guess):

  min_sqnr       the noise seen so far only grows: 10 log10(all reference energy / noise so far)
                 bounds the final SQNR from above
  min_agreement  at best every remaining sample agrees
  max_top1_drop  at best every remaining sample is classified correctly

For classifiers the samples are replayed in order of the FP32 model's top-1 margin (smallest
first), so the samples a quantized model is most likely to flip come first and a failing
candidate is caught after a few batches. The set is meant to be small (a sensitivity sample, an
evaluation subset); a byte budget keeps a mistaken huge data set from exhausting memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from qtool.analysis.gates import GateResult, Gates, evaluate_gates, failure_message
from qtool.analysis.metrics import ClassificationStats, OutputStats, as_logits, json_number
from qtool.errors import QtoolError
from qtool.io.batch_axes import BatchLayout
from qtool.io.prefetch import Prefetcher

DEFAULT_BUDGET = 2 << 30  # bytes of inputs + reference outputs kept in memory

Feeds = dict[str, np.ndarray]
Batch = tuple[Feeds, dict[str, np.ndarray], "np.ndarray | None"]


@dataclass
class Evaluation:
    """One candidate's metrics against the FP32 reference on an evaluation set."""

    outputs: dict[str, OutputStats]
    classification: ClassificationStats | None
    seconds: float
    samples: int
    total_samples: int
    stopped: str | None = None     # why the candidate was stopped early (a sure gate failure)

    @property
    def sqnr_db(self) -> float:
        """The worst output's SQNR."""
        return min(stats.sqnr_db for stats in self.outputs.values())

    @property
    def cosine(self) -> float:
        return min(stats.cosine for stats in self.outputs.values())

    @property
    def agreement(self) -> float | None:
        return self.classification.agreement if self.classification else None

    def gates(self, gates: Gates) -> list[GateResult]:
        return evaluate_gates(gates, self.outputs, self.classification)

    def failure(self, gates: Gates) -> str | None:
        """Why the gates fail (None: they pass); an early stop is a failure."""
        if self.stopped:
            return self.stopped
        message = failure_message(self.gates(gates))
        return message.removeprefix("accuracy gate failed: ") if message else None

    def summary(self) -> dict:
        result = {"sqnr_db": json_number(self.sqnr_db), "cosine": json_number(self.cosine)}
        cls = self.classification
        if cls is not None:
            result["top1_agreement_percent"] = cls.agreement
            if cls.labelled:
                result["top1_percent"] = cls.accuracy("candidate", 1)
                result["top1_drop_points"] = cls.top1_drop
        if self.samples != self.total_samples:
            result["samples"] = self.samples  # stopped early: metrics of these samples only
        return result


class ReferenceSet:
    """Batches, FP32 outputs and labels of a data source's samples, kept for replay."""

    def __init__(self, reference_run: Callable[[Feeds], Mapping[str, np.ndarray]], source,
                 layout: BatchLayout, *, labels: np.ndarray | None = None, logits: str | None = None,
                 classification: bool = False, budget: int = DEFAULT_BUDGET,
                 option: str = "--num-samples"):
        start = time.perf_counter()
        batches: list[Batch] = []
        counts: list[int] = []
        self.samples = 0
        used = 0
        for feeds in Prefetcher(source):
            count = layout.length(feeds, f"batch {len(batches)}")
            outputs = dict(reference_run(feeds))
            batch_labels = None
            if labels is not None:
                if self.samples + count > len(labels):
                    raise QtoolError(f"{len(labels)} labels for more samples than that")
                batch_labels = labels[self.samples:self.samples + count]
            used += sum(a.nbytes for a in feeds.values()) + sum(a.nbytes for a in outputs.values())
            if used > budget:
                raise QtoolError(f"the samples kept for evaluation take more than "
                                 f"{budget >> 20} MiB of memory; use fewer ({option} N)")
            batches.append((feeds, outputs, batch_labels))
            counts.append(count)
            self.samples += count
        if not batches:
            raise QtoolError("no samples to evaluate: the data is empty")
        if labels is not None and self.samples != len(labels):
            raise QtoolError(f"{len(labels)} labels for {self.samples} samples")
        self.outputs = list(batches[0][1])
        self.logits = None
        if classification or labels is not None:
            self.logits = logits or self.outputs[0]
            if self.logits not in self.outputs:
                raise QtoolError(f"the model has no output {self.logits!r} "
                                 f"(outputs: {', '.join(self.outputs)})")
            batches, counts = _fragile_first(batches, counts, self.logits, layout)
        self.batches = batches
        self.counts = counts  # samples in each batch
        self.labelled = labels is not None
        self.reference_energy = {name: 0.0 for name in self.outputs}
        self.reference_correct = 0
        for _, reference, batch_labels in batches:
            for name in self.outputs:
                values = reference[name].astype(np.float64).ravel()
                values = values[np.isfinite(values)]
                self.reference_energy[name] += float(np.dot(values, values))
            if batch_labels is not None:
                scores = as_logits(reference[self.logits], self.logits)
                self.reference_correct += int(np.count_nonzero(scores.argmax(1) == batch_labels))
        self.seconds = time.perf_counter() - start

    def evaluate(self, run: Callable[[Feeds], Mapping[str, np.ndarray]],
                 gates: Gates | None = None) -> Evaluation:
        """Run a candidate on the kept batches and compare with the FP32 outputs; with `gates`,
        stop as soon as they cannot pass any more."""
        start = time.perf_counter()
        outputs = {name: OutputStats(name) for name in self.outputs}
        classifier = ClassificationStats(self.logits) if self.logits else None
        seen = 0
        stopped = None
        for (feeds, reference, labels), count in zip(self.batches, self.counts):
            candidate = run(feeds)
            for name, stats in outputs.items():
                stats.update(reference[name], candidate[name])
            if classifier is not None:
                classifier.update(reference[self.logits], candidate[self.logits], labels)
            seen += count
            if gates is not None and seen < self.samples:
                stopped = self._sure_failure(gates, outputs, classifier, seen)
                if stopped:
                    break
        return Evaluation(outputs, classifier, time.perf_counter() - start, seen, self.samples,
                          stopped)

    def _sure_failure(self, gates: Gates, outputs: dict[str, OutputStats],
                      classifier: ClassificationStats | None, seen: int) -> str | None:
        left = self.samples - seen
        where = f"after {seen} of {self.samples} samples"
        if gates.min_sqnr is not None:
            for name, stats in outputs.items():
                if stats.mismatched:
                    return f"{where}, {name} has NaN/Inf values the FP32 model does not (--min-sqnr)"
                best = _sqnr_bound(self.reference_energy[name], stats.noise_energy)
                if best < gates.min_sqnr:
                    return (f"{where}, sqnr_db[{name}] can reach at most {best:.6g} < "
                            f"{gates.min_sqnr:g} (--min-sqnr)")
        if classifier is not None and gates.min_agreement is not None:
            best = 100.0 * (classifier.agree + left) / self.samples
            if best < gates.min_agreement:
                return (f"{where}, top1_agreement_percent can reach at most {best:.6g} < "
                        f"{gates.min_agreement:g} (--min-agreement)")
        if classifier is not None and gates.max_top1_drop is not None and self.labelled:
            best = 100.0 * (self.reference_correct - classifier.candidate.top1 - left) / self.samples
            if best > gates.max_top1_drop:
                return (f"{where}, top1_drop_points is at least {best:.6g} > "
                        f"{gates.max_top1_drop:g} (--max-top1-drop)")
        return None

    def reference_accuracy(self) -> float | None:
        """FP32 top-1 in percent (labels needed)."""
        if not self.labelled:
            return None
        return 100.0 * self.reference_correct / self.samples


def _sqnr_bound(signal: float, noise_so_far: float) -> float:
    if noise_so_far == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise_so_far)


def _fragile_first(batches: list[Batch], counts: list[int], logits: str,
                   layout: BatchLayout) -> tuple[list[Batch], list[int]]:
    """Re-batch the samples in order of the FP32 top-1 margin, smallest first (same batch size).

    Left as is when batches differ in anything but their samples (varying sequence lengths,
    unbatched inputs of different values) or an output does not hold the samples on axis 0."""
    first_feeds, first_outputs, _ = batches[0]
    if not layout.batched:
        return batches, counts

    def tails(batch: Batch) -> list[tuple]:
        feeds, outputs, _ = batch
        return ([layout.sample_shape(name, a.shape) for name, a in feeds.items()]
                + [a.shape[1:] for a in outputs.values()])

    if any(tails(batch) != tails(batches[0]) for batch in batches[1:]):
        return batches, counts
    if any(layout.differing_unbatched(first_feeds, batch[0]) for batch in batches[1:]):
        return batches, counts
    if any(a.ndim == 0 or a.shape[0] != count for batch, count in zip(batches, counts)
           for a in batch[1].values()):
        return batches, counts
    feeds = layout.join([b[0] for b in batches])
    outputs = {name: np.concatenate([b[1][name] for b in batches]) for name in first_outputs}
    labels = None
    if batches[0][2] is not None:
        labels = np.concatenate([b[2] for b in batches])
    scores = as_logits(outputs[logits], logits).astype(np.float64)
    if scores.shape[1] < 2:
        return batches, counts
    top2 = np.partition(scores, scores.shape[1] - 2, axis=1)[:, -2:]
    order = np.argsort(top2[:, 1] - top2[:, 0], kind="stable")
    size = counts[0]
    result, sizes = [], []
    for start in range(0, len(order), size):
        index = order[start:start + size]
        picked = {name: a if layout.axis(name) is None
                  else np.ascontiguousarray(np.take(a, index, axis=layout.axis(name)))
                  for name, a in feeds.items()}
        result.append((picked, {name: a[index] for name, a in outputs.items()},
                       None if labels is None else labels[index]))
        sizes.append(len(index))
    return result, sizes


def rank_key(evaluation: Evaluation) -> tuple[float, float]:
    """Most damaging first: lowest SQNR, then lowest cosine (NaN sorts as worst)."""
    sqnr = evaluation.sqnr_db
    cosine = evaluation.cosine
    return (-math.inf if math.isnan(sqnr) else sqnr, -math.inf if math.isnan(cosine) else cosine)
