"""The Compare section: per-output metrics, classification and sequence agreement, gates."""

from __future__ import annotations

import math

from qtool.analysis.metrics import describe_disagreements
from qtool.report.data import ReportData
from qtool.report.html.format import esc, fmt, kv_table, metric_label
from qtool.report.html.summary import gates_cell


def compare_section(data: ReportData) -> str:
    view = data.compare
    metrics: list[str] = []
    for values in view.outputs.values():
        metrics += [key for key in values if key not in metrics]
    head = "".join(f'<th class="num">{esc(metric_label(key))}</th>' for key in metrics)
    rows = []
    for name, values in view.outputs.items():
        cells = "".join(f'<td class="num">{esc(fmt(values.get(key, math.nan), 6))}</td>'
                        for key in metrics)
        rows.append(f'<tr data-output="{esc(name)}"><td><code>{esc(name)}</code></td>{cells}</tr>')
    info = [("Reference", f"<code>{esc(view.reference)}</code>"),
            ("Candidate", f"<code>{esc(view.candidate)}</code>")]
    if view.data:
        info.append(("Data", esc(view.data)))
    if view.samples is not None:
        info.append(("Samples", str(view.samples)))
    if view.not_compared:
        info.append(("Not compared", ", ".join(f"<code>{esc(n)}</code>" for n in view.not_compared)))
    parts = [kv_table(info),
             (f"<table><thead><tr><th>Output</th>{head}</tr></thead><tbody>{''.join(rows)}"
             "</tbody></table>")]
    if view.classification:
        parts.append(kv_table(_classification_rows(view.classification)))
    if view.sequence:
        parts.append(kv_table(_sequence_rows(view.sequence)))
    if view.metrics:
        parts.append(kv_table([(f"metric {name}", esc(fmt(value, 6)))
                               for name, value in view.metrics.items()]))
    if view.gates:
        parts.append(f"<p>{gates_cell(view)}</p>")
    return ('<section id="compare"><details open><summary><h2>Compare</h2></summary>'
            + "".join(parts) + "</details></section>")


def _disagreements_cell(cls: dict, over: str = "samples") -> str:
    margins = [m for m in cls.get("disagreement_margins") or [] if isinstance(m, (int, float))]
    median = cls.get("median_top1_margin")
    return esc(describe_disagreements(int(cls["disagreements"]), margins,
                                      median if isinstance(median, (int, float)) else None, over))


def _percent(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.2f}%"
    return "n/a"


def _classification_rows(cls: dict) -> list[tuple[str, str]]:
    """Top-1 agreement, each model's top-1/top-5 and the drop, for a classifier output."""
    lines = [("Classifier output", f"<code>{esc(cls.get('output', '?'))}</code>"),
             ("Top-1 agreement", _percent(cls.get("top1_agreement_percent")))]
    for which in ("reference", "candidate"):
        if isinstance(cls.get(which), dict):
            lines.append((f"{which.capitalize()} top-1 / top-5",
                          (f"{_percent(cls[which].get('top1_percent'))} / "
                          f"{_percent(cls[which].get('top5_percent'))}")))
    if cls.get("top1_drop_points") is not None:
        lines.append(("Top-1 drop", f"{esc(fmt(cls['top1_drop_points'], 4))} points"))
    if cls.get("disagreements"):
        lines.append(("Disagreements", _disagreements_cell(cls)))
    return lines


def _sequence_rows(seq: dict) -> list[tuple[str, str]]:
    """Per-position agreement and, for CTC outputs, whole-sequence agreement and token errors."""
    lines = [("Sequence output", f"<code>{esc(seq.get('output', '?'))}</code>"),
             ("Position agreement", _percent(seq.get("position_agreement_percent")))]
    if seq.get("disagreements"):
        lines.append(("Disagreements", _disagreements_cell(seq, "positions")))
    ctc = seq.get("ctc")
    if isinstance(ctc, dict):
        lines.append((f"Same sequence (CTC, blank {ctc.get('blank')})",
                      _percent(ctc.get("same_sequence_percent"))))
        lines.append(("Token error rate", _percent(ctc.get("token_error_rate_percent"))))
    return lines
