"""The Summary section: model, method, calibration, what was quantized, gates."""

from __future__ import annotations

from qtool.report.data import ReportData
from qtool.report.html.attention import (
    ATTENTION_CLIPPED,
    ATTENTION_SQNR_DB,
    needs_attention,
    tensor_anchors,
)
from qtool.report.html.format import esc, fmt, fmt_db, fmt_percent, kv_table
from qtool.report.tensors import TensorSummary


def _auto_cell(record: dict) -> str:
    """Method auto's record: the per-model scores, the winner, what the per-tensor search did."""
    scores = record.get("model_scores", {})
    listed = ", ".join(
        f"{esc(method)} {fmt_db(score['sqnr_db'])}"
        + (f" / {fmt_percent(score['agreement'])} agreement" if "agreement" in score else "")
        for method, score in scores.items())
    text = f"<b>{esc(record.get('model_method', '?'))}</b> per model"
    if listed:
        text += f" (scored output SQNR: {listed})"
    if record.get("reason"):
        text += f"; not scored: {esc(record['reason'])}"
    refined = record.get("refined", [])
    if scores:
        text += (f"; {len(refined)} tensor{'' if len(refined) == 1 else 's'} changed by the "
                 f"per-tensor search, {record.get('sample_runs', 0)} probe sample-runs on "
                 f"{record.get('slice_samples', 0)} held-aside samples")
    return text


def summary_section(data: ReportData) -> str:
    calib = data.calibration
    params = ", ".join(f"{key}={value}" for key, value in calib.params.items())
    rows = [
        ("Model", f"<code>{esc(calib.model_file or '?')}</code>"),
        ("Model sha256", f"<code>{esc(calib.model_sha256)}</code>"),
        ("Method", esc(calib.method) + (f" ({esc(params)})" if params else "")),
        *([("Auto choice", _auto_cell(calib.auto))] if calib.auto else []),
        ("Samples", (f"{calib.num_samples} in {calib.num_batches} "
                    f"batch{'' if calib.num_batches == 1 else 'es'}")),
        ("Histogram bins", esc(calib.bins) if calib.bins else "none"),
        ("Tensors calibrated", str(len(calib.tensors))),
    ]
    attention = [t for t in data.tensors if needs_attention(t)]
    if data.tensors and data.tensors[0].points:
        rows.append(("Tensors to look at", _attention_cell(attention, tensor_anchors(data))))
    if data.model is not None:
        kind = ("Q/DQ model" if data.model.quantized
                else "FP32 model (layers as <code>qtool quantize</code> would place them)")
        rows.append(("Model file", f"<code>{esc(data.model.path.name)}</code> · {kind}"))
        if data.model.quantized:
            rows.append(("Model file sha256", f"<code>{esc(data.model.sha256)}</code>"))
    if data.layers is not None:
        layers = data.layers
        rows.append(("Activation tensors quantized", str(layers.activation_tensors)))
        rows.append(("Nodes on quantized inputs", str(layers.quantized_nodes)))
        rows.append(("Weighted layers quantized",
                     f"{len({layer.node for layer in layers.layers})} of {layers.weighted_nodes}"))
        flagged = layers.flagged_channels
        rows.append(("Flagged weight channels",
                     f'<span class="bad">{flagged}</span>' if flagged else "0"))
    if data.compare is not None and data.compare.gates:
        rows.append(("Accuracy gates", gates_cell(data.compare)))
    if data.sensitivity is not None and data.sensitivity.fallback is not None:
        kept = data.sensitivity.kept
        rows.append(("Kept in high precision (sensitivity fallback)",
                     ", ".join(f"<code>{esc(name)}</code>" for name in kept) if kept else "none"))
    tools = ", ".join(f"{key} {value}" for key, value in calib.tools.items())
    rows.append(("Calibrated with", esc(tools) or "unknown"))
    notes = "".join(f'<div class="note">{esc(note)}</div>' for note in data.notes)
    if data.histograms_missing:
        notes += f'<div class="note">{esc(data.histograms_missing)}</div>'
    return f'<section id="summary"><h2>Summary</h2>{kv_table(rows)}{notes}</section>'


def _attention_cell(attention: list[TensorSummary], anchors: dict[str, str]) -> str:
    if not attention:
        return (f"none (every chosen threshold clips at most {fmt_percent(ATTENTION_CLIPPED)} "
                f"and keeps an estimated SQNR of at least {ATTENTION_SQNR_DB:g} dB)")
    worst = sorted(attention, key=lambda t: t.chosen.sqnr_db)[:8]
    names = ", ".join(f'<a href="#{anchors[t.name]}"><code>{esc(t.name)}</code></a> '
                      f"({fmt_db(t.chosen.sqnr_db)}, {fmt_percent(t.chosen.clipped)} clipped)"
                      for t in worst)
    more = f" and {len(attention) - len(worst)} more" if len(attention) > len(worst) else ""
    return (f'<span class="bad">{len(attention)}</span> with more than '
            f"{fmt_percent(ATTENTION_CLIPPED)} clipped or an estimated SQNR below "
            f"{ATTENTION_SQNR_DB:g} dB: {names}{more}")


def gates_cell(compare) -> str:
    items = []
    for gate in compare.gates:
        badge = '<span class="badge ok">pass</span>' if gate.passed else \
            '<span class="badge fail">FAIL</span>'
        op = "≤" if gate.gate.startswith("max_") else "≥"
        items.append(f"{badge} <code>{esc(gate.metric)}</code> = {esc(fmt(gate.value, 5))} "
                     f"(needs {op} {esc(fmt(gate.threshold, 5))})")
    return "<br>".join(items)
