"""Accuracy gates: thresholds on compare metrics that pass or fail a candidate model.

    min_sqnr       dB, every compared output
    min_cosine     every compared output
    max_top1_drop  percentage points, reference top-1 minus candidate top-1 (needs labels)
    min_agreement  percent, top-1 agreement of the two models (needs a classification output)
    max_flips_above_margin  N:M, at most N top-1 disagreements (per sample for a classifier, per
                   position for a sequence) where the reference's top-1 led the candidate's
                   pick by more than M: near-ties flip by chance, confident predictions should
                   not
    min_metric / max_metric  NAME=VALUE, a named number of the metric script or of the sequence
                   comparison (position_agreement_percent, same_sequence_percent,
                   token_error_rate_percent)

A metric that cannot be computed (NaN) fails its gate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from qtool.analysis.metrics import ClassificationStats, OutputStats, format_number, json_number
from qtool.analysis.sequences import SequenceStats
from qtool.errors import UsageError

GATE_NAMES = ("min_sqnr", "min_cosine", "max_top1_drop", "min_agreement",
              "max_flips_above_margin", "min_metric", "max_metric")

MetricBound = tuple[str, float]  # (metric name, threshold)


def parse_metric_bound(text: str, option: str) -> MetricBound:
    """'NAME=VALUE' -> (NAME, VALUE)."""
    name, sep, value = str(text).partition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not name.strip() or not math.isfinite(number):
        raise UsageError(f"{option} takes NAME=VALUE with a finite number, got {text!r}")
    return name.strip(), number


def parse_flips_bound(text: str) -> tuple[int, float]:
    """'N:M' -> (N disagreements at most, M the margin above which they count)."""
    count, sep, margin = str(text).partition(":")
    try:
        bound = (int(count), float(margin))
    except ValueError:
        bound = None
    if not sep or bound is None or bound[0] < 0 or not math.isfinite(bound[1]) or bound[1] < 0:
        raise UsageError(f"--max-flips-above-margin takes N:M (N a count >= 0, M a margin >= 0 "
                         f"in the output's units), got {text!r}")
    return bound


@dataclass(frozen=True)
class Gates:
    min_sqnr: float | None = None
    min_cosine: float | None = None
    max_top1_drop: float | None = None
    min_agreement: float | None = None
    max_flips_above_margin: tuple[int, float] | None = None
    min_metric: tuple[MetricBound, ...] = ()
    max_metric: tuple[MetricBound, ...] = ()

    def validate(self) -> Gates:
        for name in ("min_sqnr", "min_cosine", "max_top1_drop", "min_agreement"):
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
        return any(getattr(self, name) not in (None, ()) for name in GATE_NAMES)

    @property
    def metric_names(self) -> list[str]:
        """The named numbers the metric gates read."""
        return list(dict.fromkeys(name for name, _ in self.min_metric + self.max_metric))

    @property
    def needs_labels(self) -> bool:
        return self.max_top1_drop is not None

    @property
    def needs_classification(self) -> bool:
        return self.max_top1_drop is not None or self.min_agreement is not None

    def to_dict(self) -> dict:
        result = {}
        for name in GATE_NAMES:
            value = getattr(self, name)
            if name in ("min_metric", "max_metric"):
                value = dict(value) or None
            elif name == "max_flips_above_margin" and value is not None:
                value = f"{value[0]}:{value[1]:g}"
            if value is not None:
                result[name] = value
        return result


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
                   classification: ClassificationStats | None,
                   sequence: SequenceStats | None = None,
                   metrics: Mapping[str, float] | None = None) -> list[GateResult]:
    """Every gate's verdict; `metrics` are the named numbers the metric gates read."""
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
    if gates.max_flips_above_margin is not None:
        count, margin = gates.max_flips_above_margin
        scored = classification if classification is not None else sequence
        if scored is None:
            raise UsageError("--max-flips-above-margin needs a classification or sequence "
                             "output (--task classification, --task sequence or --labels FILE)")
        flips = sum(1 for value in scored.flip_margins if not value <= margin)  # NaN counts
        results.append(GateResult("max_flips_above_margin",
                                  f"flips_above_margin_{margin:g}[{scored.output}]", flips, count,
                                  flips <= count))
    for gate, bounds in (("min_metric", gates.min_metric), ("max_metric", gates.max_metric)):
        for name, threshold in bounds:
            value = (metrics or {}).get(name)
            if value is None:
                raise UsageError(f"--{gate.replace('_', '-')} {name}: no metric of that name "
                                 f"(measured: {', '.join(metrics or {}) or 'none'})")
            passed = (_at_least(value, threshold) if gate == "min_metric"
                      else _at_least(-value, -threshold))
            results.append(GateResult(gate, name, value, threshold, passed))
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
