"""What a comparison measured, as JSON (to_dict) and as the text `qtool compare` prints."""

from __future__ import annotations

from dataclasses import dataclass, field

from qtool.analysis.gates import GateResult, failure_message
from qtool.analysis.metrics import (
    ClassificationStats,
    OutputStats,
    describe_disagreements,
    format_number,
    json_number,
)
from qtool.analysis.sequences import SequenceStats
from qtool.versions import tool_versions


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
