"""Sequence outputs: per-position scores [batch, positions, classes] (text recognizers, token
taggers), compared position by position and, with a CTC blank, as decoded sequences.

Per position the two models' argmax (ties to the lower class, as numpy's argmax) agree or not.
Where they differ, the reference's own margin is kept, as for classifiers: how much higher it
scored its top-1 class than the class the candidate picked, next to its median top-1 margin over
all positions. Flips far below the median are near-ties; flips near it are real losses.

With a CTC blank index both outputs are decoded greedily (best class per position, repeats
merged, blanks dropped) and compared per sample: the share decoded to the same sequence, and the
token (character) error rate, the candidate's edit distance to the reference's sequence over the
reference's sequence lengths. Only counts are kept across batches, plus one float per position
(the reference's top-1 margin, for its median) and one per disagreement.

Automatic detection (no --task): an output is a sequence when it is [batch, positions, classes]
with more than one position and more than two classes, and every position of the first batch is a
probability distribution (softmax: non-negative, summing to 1) or its logarithm (log-softmax).
Raw logits, hidden states and detector heads are not; name the task for them.
"""

from __future__ import annotations

import math
from array import array

import numpy as np

from qtool.analysis.metrics import CHUNK, json_number
from qtool.errors import QtoolError

SUM_TOLERANCE = 1e-3  # float32 softmax sums over tens of thousands of classes drift this far


def as_sequence_scores(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 3:
        raise QtoolError(f"output {name!r} has shape {list(values.shape)}; a sequence needs "
                         f"scores of shape [batch, positions, classes]")
    return values


def looks_like_sequence(values: np.ndarray) -> bool:
    """The automatic detection rule of the module docstring."""
    values = np.asarray(values)
    if values.ndim != 3 or values.shape[1] < 2 or values.shape[2] < 3 or values.shape[0] < 1:
        return False
    if not np.issubdtype(values.dtype, np.floating) or not np.isfinite(values).all():
        return False
    scores = values.astype(np.float64)
    if scores.min() >= 0:
        sums = scores.sum(axis=2)
    elif scores.max() <= 0:
        sums = np.exp(scores).sum(axis=2)
    else:
        return False
    return bool(np.all(np.abs(sums - 1.0) <= SUM_TOLERANCE))


def ctc_greedy(best: np.ndarray, blank: int) -> list[np.ndarray]:
    """Greedy CTC decoding of best-class indices [batch, positions]: one index array per sample,
    repeats merged, then blanks dropped."""
    best = np.asarray(best)
    keep = best != blank
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]
    return [row[mask] for row, mask in zip(best, keep)]


def edit_distance(a, b) -> int:
    """Levenshtein distance (insertions, deletions, substitutions of one token each)."""
    a, b = list(a), list(b)
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]


class SequenceStats:
    """Running counts comparing one sequence output of a candidate with the reference's."""

    def __init__(self, output: str, blank: int | None = None):
        self.output = output
        self.blank = blank
        self.samples = 0
        self.positions = 0
        self.agree = 0
        self.flip_margins = array("d")   # per differing position, in the output's units
        self.top1_margins = array("d")   # per position: the reference's top-1 minus top-2
        self.same_sequences = 0          # with a blank: samples decoded to the same sequence
        self.edits = 0                   # summed edit distances, candidate against reference
        self.reference_tokens = 0        # summed decoded reference lengths

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        ref = as_sequence_scores(ref, self.output)
        cand = as_sequence_scores(cand, self.output)
        if ref.shape != cand.shape:
            raise QtoolError(f"output {self.output!r}: the reference gives shape "
                             f"{list(ref.shape)}, the candidate {list(cand.shape)}")
        classes = ref.shape[2]
        if self.blank is not None and not 0 <= self.blank < classes:
            raise QtoolError(f"--ctc-blank {self.blank} is outside output {self.output!r}'s "
                             f"{classes} classes")
        ref_best, cand_best = ref.argmax(axis=2), cand.argmax(axis=2)
        self.samples += ref.shape[0]
        self.positions += ref_best.size
        differ = ref_best != cand_best
        self.agree += int(ref_best.size - np.count_nonzero(differ))
        scores = ref.reshape(-1, classes)
        rows = np.flatnonzero(differ.ravel())
        led = (scores[rows, ref_best.ravel()[rows]].astype(np.float64)
               - scores[rows, cand_best.ravel()[rows]].astype(np.float64))
        self.flip_margins.frombytes(led.tobytes())
        step = max(1, CHUNK // classes)  # positions per step: bounded temporaries
        for start in range(0, len(scores) if classes > 1 else 0, step):
            best_two = np.partition(scores[start:start + step], -2, axis=1)[:, -2:]
            best_two = best_two.astype(np.float64)
            self.top1_margins.frombytes((best_two[:, 1] - best_two[:, 0]).tobytes())
        if self.blank is None:
            return
        for a, b in zip(ctc_greedy(ref_best, self.blank), ctc_greedy(cand_best, self.blank)):
            self.reference_tokens += len(a)
            if np.array_equal(a, b):
                self.same_sequences += 1
            else:
                self.edits += edit_distance(a.tolist(), b.tolist())

    @property
    def agreement(self) -> float | None:
        """Per-position argmax agreement in percent."""
        return 100.0 * self.agree / self.positions if self.positions else None

    @property
    def disagreements(self) -> int:
        return self.positions - self.agree

    @property
    def median_top1_margin(self) -> float | None:
        return float(np.median(np.frombuffer(self.top1_margins))) if self.top1_margins else None

    @property
    def same_sequence(self) -> float | None:
        """Samples decoded to the same sequence, in percent (needs a blank)."""
        if self.blank is None or not self.samples:
            return None
        return 100.0 * self.same_sequences / self.samples

    @property
    def token_error_rate(self) -> float | None:
        """Edit distance over reference tokens, in percent (None without a blank or tokens)."""
        if self.blank is None or not self.reference_tokens:
            return None
        return 100.0 * self.edits / self.reference_tokens

    def named_numbers(self) -> dict[str, float]:
        """The numbers --min-metric / --max-metric can gate; NaN where there is nothing to
        measure yet (no reference token at all: no token error rate), which fails a gate."""
        numbers = {"position_agreement_percent": self.agreement}
        if self.blank is not None:
            numbers.update(same_sequence_percent=self.same_sequence,
                           token_error_rate_percent=self.token_error_rate)
        return {name: math.nan if value is None else value for name, value in numbers.items()}

    def to_dict(self) -> dict:
        result = {"output": self.output, "samples": self.samples, "positions": self.positions,
                  "position_agreement_percent": self.agreement,
                  "disagreements": self.disagreements,
                  "disagreement_margins": [json_number(m) for m in sorted(self.flip_margins)],
                  "median_top1_margin": json_number(self.median_top1_margin)}
        if self.blank is not None:
            result["ctc"] = {"blank": self.blank, "same_sequence_percent": self.same_sequence,
                             "same_sequences": self.same_sequences,
                             "token_error_rate_percent": self.token_error_rate,
                             "edits": self.edits, "reference_tokens": self.reference_tokens}
        return result
