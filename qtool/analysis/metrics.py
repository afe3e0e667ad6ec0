"""Streaming accuracy metrics: one accumulator per output, fed batch by batch.

Only running sums are kept (float64), never the outputs themselves, so memory does not grow with
the data set and the result is the same however the data is batched (up to float64 rounding).

Per output, over every element of every sample (the whole output stream seen as one vector):
  sqnr_db         10 log10(sum ref^2 / sum (ref - cand)^2); +inf when identical, -inf when the
                  reference is all zeros and the candidate is not
  cosine          sum(ref * cand) / sqrt(sum ref^2 * sum cand^2); 1 when both are all zeros,
                  0 when exactly one is
  max_abs_error   max |ref - cand|
  mean_abs_error  mean |ref - cand|

Non-finite values: a position where reference and candidate hold the same NaN/Inf agrees and
is left out of every sum. A position where only one of them is non-finite (or they differ, NaN
versus Inf) is a mismatch: it is counted, makes max_abs_error +inf and sqnr_db -inf (the
candidate is arbitrarily wrong there), and is left out of the cosine and mean error.

Classification (logits [N, C], or [N, C, 1, ...]): samples are ranked by a stable descending
order, ties going to the lower class index, so top-1 is numpy's argmax and a label is in the top
k when fewer than k classes come before it.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

import numpy as np

from qtool.errors import QtoolError


def json_number(value: float | None):
    """A float for JSON, which has no Infinity or NaN: "inf"/"-inf" strings, NaN as null."""
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def format_number(value: float | None, digits: int = 4) -> str:
    """A metric for tables: 'inf', '-inf', 'n/a' or a number with `digits` significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


# Disagreement margins listed in text (smallest first; the JSON has them all).
MARGINS_SHOWN = 5
# Elements summed per step: a large batch's float64 temporaries stay a few times 2 MiB, never
# several copies of the whole output (a 64-line recognizer batch is 17 million elements; at 8
# lines per batch this took compare's peak RSS from 315 to 291 MB against 8 MiB steps).
CHUNK = 1 << 18


def describe_disagreements(count: int, margins: list[float], median_margin: float | None,
                           over: str = "samples") -> str:
    """'N disagreements; there the reference's top-1 led the candidate's pick by m1, m2, ...
    (its median top-1 margin over all samples: M)': margins far below M are near-ties that any
    rounding may flip, margins near it are confident predictions lost."""
    text = f"{count} disagreement{'s' if count != 1 else ''}"
    margins = sorted(margins)
    if margins:
        shown = ", ".join(format_number(m, 3) for m in margins[:MARGINS_SHOWN])
        if len(margins) > MARGINS_SHOWN:
            shown += f", ... ({len(margins) - MARGINS_SHOWN} more)"
        text += f"; there the reference's top-1 led the candidate's pick by {shown}"
    if median_margin is not None:
        text += f" (its median top-1 margin over all {over}: {format_number(median_margin, 3)})"
    return text


def sqnr_db(signal_energy: float, noise_energy: float) -> float:
    if noise_energy == 0:
        return math.inf
    if signal_energy == 0:
        return -math.inf
    return 10.0 * math.log10(signal_energy / noise_energy)


def cosine_similarity(dot: float, ref_energy: float, cand_energy: float) -> float:
    if ref_energy == 0 and cand_energy == 0:
        return 1.0
    if ref_energy == 0 or cand_energy == 0:
        return 0.0
    value = dot / math.sqrt(ref_energy * cand_energy)
    return max(-1.0, min(1.0, value))  # rounding can overshoot by an ulp


class OutputStats:
    """Running sums comparing one output of a candidate model against the reference."""

    def __init__(self, name: str):
        self.name = name
        self.elements = 0          # positions compared (finite in both)
        self.ref_energy = 0.0      # sum ref^2
        self.cand_energy = 0.0     # sum cand^2
        self.dot = 0.0             # sum ref * cand
        self.noise_energy = 0.0    # sum (ref - cand)^2
        self.abs_error = 0.0       # sum |ref - cand|
        self.max_abs = 0.0         # max |ref - cand|
        self.mismatched = 0        # non-finite in one model only (or NaN versus Inf)
        self.shape: tuple | None = None  # per-sample shape of the first batch

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        ref = np.asarray(ref)
        cand = np.asarray(cand)
        if ref.shape != cand.shape:
            raise QtoolError(f"output {self.name!r}: the reference gives shape {list(ref.shape)}, "
                             f"the candidate {list(cand.shape)}")
        if self.shape is None:
            self.shape = tuple(ref.shape[1:])
        ref, cand = ref.ravel(), cand.ravel()
        for start in range(0, ref.size, CHUNK):
            self._add(ref[start:start + CHUNK], cand[start:start + CHUNK])

    def _add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        ref = ref.astype(np.float64, copy=False)
        cand = cand.astype(np.float64, copy=False)
        finite = np.isfinite(ref) & np.isfinite(cand)
        if not finite.all():
            odd = ~finite
            same = (np.isnan(ref[odd]) & np.isnan(cand[odd])) | (ref[odd] == cand[odd])
            self.mismatched += int(np.count_nonzero(~same))
            ref, cand = ref[finite], cand[finite]
        diff = ref - cand
        self.elements += int(ref.size)
        self.ref_energy += float(np.dot(ref, ref))
        self.cand_energy += float(np.dot(cand, cand))
        self.dot += float(np.dot(ref, cand))
        self.noise_energy += float(np.dot(diff, diff))
        if diff.size:
            absolute = np.abs(diff)
            self.abs_error += float(absolute.sum())
            self.max_abs = max(self.max_abs, float(absolute.max()))

    @property
    def sqnr_db(self) -> float:
        if self.mismatched:
            return -math.inf
        return sqnr_db(self.ref_energy, self.noise_energy)

    @property
    def cosine(self) -> float:
        return cosine_similarity(self.dot, self.ref_energy, self.cand_energy)

    @property
    def max_abs_error(self) -> float:
        return math.inf if self.mismatched else self.max_abs

    @property
    def mean_abs_error(self) -> float:
        return self.abs_error / self.elements if self.elements else 0.0

    def to_dict(self) -> dict:
        return {
            "sqnr_db": json_number(self.sqnr_db),
            "cosine": json_number(self.cosine),
            "max_abs_error": json_number(self.max_abs_error),
            "mean_abs_error": json_number(self.mean_abs_error),
            "elements": self.elements,
            "nonfinite_mismatches": self.mismatched,
        }


def as_logits(values: np.ndarray, name: str) -> np.ndarray:
    """[N, C] (or [N, C, 1, ...]) scores -> [N, C]; anything else is not a classifier output."""
    values = np.asarray(values)
    if values.ndim < 2:
        raise QtoolError(f"output {name!r} has shape {list(values.shape)}; classification needs "
                         f"scores of shape [batch, classes]")
    flat = values.reshape(values.shape[0], -1)
    if flat.shape[1] != values.shape[1]:
        hint = ("; scores per position [batch, positions, classes] are --task sequence"
                if values.ndim == 3 else " (trailing axes of size 1 are fine)")
        raise QtoolError(f"output {name!r} has shape {list(values.shape)}; classification needs "
                         f"scores of shape [batch, classes]{hint}")
    return flat


def label_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Position of each label in a stable descending order of its row (0 = top-1).

    = classes scoring higher + classes scoring the same with a lower index.
    """
    rows = np.arange(scores.shape[0])
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        bad = labels[(labels < 0) | (labels >= scores.shape[1])][0]
        raise QtoolError(f"label {int(bad)} is outside the model's {scores.shape[1]} classes")
    own = scores[rows, labels][:, None]
    higher = np.count_nonzero(scores > own, axis=1)
    before = np.arange(scores.shape[1])[None, :] < labels[:, None]
    tied_before = np.count_nonzero((scores == own) & before, axis=1)
    return higher + tied_before


@dataclass
class TopK:
    top1: int = 0
    top5: int = 0


class ClassificationStats:
    """Top-1/top-5 accuracy of both models (with labels) and their top-1 agreement.

    For each disagreement it also keeps the reference's own margin: how much higher the reference
    scored its top-1 class than the class the candidate picked. Next to the reference's usual
    top-1 margin (its median over all samples) that tells near-ties, which any rounding may flip,
    from confident predictions the candidate got wrong.
    """

    def __init__(self, output: str):
        self.output = output
        self.samples = 0
        self.agree = 0
        self.flip_margins: list[float] = []  # per disagreement, in the output's units
        # per sample, the reference's top-1 minus top-2: for the median, the one thing kept per
        # sample (8 bytes each)
        self.top1_margins = array("d")
        self.labelled = 0
        self.reference = TopK()
        self.candidate = TopK()
        self.classes: int | None = None

    def update(self, ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None = None) -> None:
        ref = as_logits(ref, self.output)
        cand = as_logits(cand, self.output)
        if ref.shape != cand.shape:
            raise QtoolError(f"output {self.output!r}: the reference gives shape {list(ref.shape)}, "
                             f"the candidate {list(cand.shape)}")
        self.classes = ref.shape[1]
        self.samples += ref.shape[0]
        ref_top, cand_top = ref.argmax(axis=1), cand.argmax(axis=1)
        self.agree += int(np.count_nonzero(ref_top == cand_top))
        scores = ref.astype(np.float64)
        rows = np.flatnonzero(ref_top != cand_top)
        self.flip_margins += (scores[rows, ref_top[rows]] - scores[rows, cand_top[rows]]).tolist()
        if ref.shape[1] > 1:
            best_two = np.partition(scores, -2, axis=1)[:, -2:]
            self.top1_margins.frombytes((best_two[:, 1] - best_two[:, 0]).tobytes())
        if labels is None:
            return
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (ref.shape[0],):
            raise QtoolError(f"a batch of {ref.shape[0]} samples came with {labels.size} labels")
        self.labelled += ref.shape[0]
        for scores, counts in ((ref, self.reference), (cand, self.candidate)):
            ranks = label_ranks(scores, labels)
            counts.top1 += int(np.count_nonzero(ranks < 1))
            counts.top5 += int(np.count_nonzero(ranks < 5))

    @staticmethod
    def _percent(count: int, total: int) -> float | None:
        return 100.0 * count / total if total else None

    @property
    def agreement(self) -> float | None:
        """Top-1 agreement in percent."""
        return self._percent(self.agree, self.samples)

    @property
    def disagreements(self) -> int:
        return self.samples - self.agree

    @property
    def median_top1_margin(self) -> float | None:
        """The reference's median top-1 margin over all samples (None with one class)."""
        return float(np.median(np.frombuffer(self.top1_margins))) if self.top1_margins else None

    def accuracy(self, which: str, k: int = 1) -> float | None:
        counts = self.reference if which == "reference" else self.candidate
        return self._percent(counts.top1 if k == 1 else counts.top5, self.labelled)

    @property
    def top1_drop(self) -> float | None:
        """Reference top-1 minus candidate top-1, in percentage points."""
        if not self.labelled:
            return None
        # From the counts, so a drop of exactly 1 point is 1.0, not 1.0000000000000142.
        return 100.0 * (self.reference.top1 - self.candidate.top1) / self.labelled

    def to_dict(self) -> dict:
        result = {"output": self.output, "samples": self.samples,
                  "top1_agreement_percent": self.agreement,
                  "disagreements": self.disagreements,
                  "disagreement_margins": [json_number(m) for m in sorted(self.flip_margins)],
                  "median_top1_margin": json_number(self.median_top1_margin)}
        if self.labelled:
            for which in ("reference", "candidate"):
                result[which] = {"top1_percent": self.accuracy(which, 1),
                                 "top5_percent": self.accuracy(which, 5)}
            result["top1_drop_points"] = self.top1_drop
        return result
