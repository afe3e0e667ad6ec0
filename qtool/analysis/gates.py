"""Accuracy gates: thresholds on compare metrics that pass or fail a candidate model.

    min_sqnr       dB, every compared output
    min_cosine     every compared output
    max_top1_drop  percentage points, reference top-1 minus candidate top-1 (needs labels)
    min_agreement  percent, top-1 agreement of the two models (needs a classification output)

A metric that cannot be computed (NaN) fails its gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qtool.analysis.metrics import ClassificationStats, OutputStats, format_number, json_number
from qtool.errors import UsageError

GATE_NAMES = ("min_sqnr", "min_cosine", "max_top1_drop", "min_agreement")


@dataclass(frozen=True)
class Gates:
    min_sqnr: float | None = None
    min_cosine: float | None = None
    max_top1_drop: float | None = None
    min_agreement: float | None = None

    def validate(self) -> Gates:
        for name in GATE_NAMES:
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise UsageError(f"--{name.replace('_', '-')} must be a finite number")
        if self.min_cosine is not None and not -1 <= self.min_cosine <= 1:
            raise UsageError(f"--min-cosine must be in [-1, 1], got {self.min_cosine}")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 100:
            raise UsageError(f"--min-agreement is a percentage in [0, 100], got {self.min_agreement}")
        return self

    @property
    def any(self) -> bool:
        return any(getattr(self, name) is not None for name in GATE_NAMES)

    @property
    def needs_labels(self) -> bool:
        return self.max_top1_drop is not None

    @property
    def needs_classification(self) -> bool:
        return self.max_top1_drop is not None or self.min_agreement is not None

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in GATE_NAMES if getattr(self, name) is not None}


@dataclass(frozen=True)
class GateResult:
    gate: str             # one of GATE_NAMES
    metric: str           # what was measured, e.g. "sqnr_db[logits]"
    value: float | None
    threshold: float
    passed: bool

    def describe(self) -> str:
        op = "<=" if self.gate.startswith("max_") else ">="
        verdict = "ok" if self.passed else "FAILED"
        return (f"{verdict}: {self.metric} = {format_number(self.value, 6)} "
                f"(--{self.gate.replace('_', '-')}: {op} {format_number(self.threshold, 6)})")

    def to_dict(self) -> dict:
        return {"gate": self.gate, "metric": self.metric, "value": json_number(self.value),
                "threshold": self.threshold, "passed": self.passed}


def _at_least(value: float | None, threshold: float) -> bool:
    return value is not None and not math.isnan(value) and value >= threshold


def evaluate_gates(gates: Gates, outputs: dict[str, OutputStats],
                   classification: ClassificationStats | None) -> list[GateResult]:
    results = []
    for name, stats in outputs.items():
        if gates.min_sqnr is not None:
            value = stats.sqnr_db
            results.append(GateResult("min_sqnr", f"sqnr_db[{name}]", value, gates.min_sqnr,
                                      _at_least(value, gates.min_sqnr)))
        if gates.min_cosine is not None:
            value = stats.cosine
            results.append(GateResult("min_cosine", f"cosine[{name}]", value, gates.min_cosine,
                                      _at_least(value, gates.min_cosine)))
    if gates.max_top1_drop is not None:
        drop = classification.top1_drop if classification is not None else None
        if drop is None:
            raise UsageError("--max-top1-drop needs labels (--labels FILE)")
        results.append(GateResult("max_top1_drop", "top1_drop_points", drop, gates.max_top1_drop,
                                  _at_least(-drop, -gates.max_top1_drop)))
    if gates.min_agreement is not None:
        if classification is None:
            raise UsageError("--min-agreement needs a classification output "
                             "(--task classification or --labels FILE)")
        value = classification.agreement
        results.append(GateResult("min_agreement", "top1_agreement_percent", value,
                                  gates.min_agreement, _at_least(value, gates.min_agreement)))
    return results


def failure_message(results: list[GateResult]) -> str | None:
    """One line naming every failed gate, or None when all passed."""
    failed = [result for result in results if not result.passed]
    if not failed:
        return None
    parts = []
    for result in failed:
        op = ">" if result.gate.startswith("max_") else "<"
        parts.append(f"{result.metric} {format_number(result.value, 6)} {op} "
                     f"{format_number(result.threshold, 6)} (--{result.gate.replace('_', '-')})")
    return "accuracy gate failed: " + "; ".join(parts)
