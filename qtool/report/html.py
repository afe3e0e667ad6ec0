"""Render the report as one self-contained HTML page: inline CSS, a few lines of inline JS for
sorting and filtering tables, figures as data: URIs. Nothing is fetched when it is opened.

Machine-readable hooks (for scripts and tests): every tensor row is a <tr data-tensor="NAME"
data-amax="REPR"> with the chosen amax as Python's repr (round-trips exactly), and every method
row of its threshold table a <tr data-method="METHOD" data-amax="REPR">. Weighted layers are
<tr data-layer="NODE">, sensitivity rows <tr data-ranked="NODE">, compare rows
<tr data-output="NAME">.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field

from qtool import __version__
from qtool.analysis.metrics import describe_disagreements
from qtool.report.data import ReportData
from qtool.report.figures import CHOSEN_CLIP_COLOUR, method_colour
from qtool.report.results import number
from qtool.report.tensors import TensorSummary
from qtool.report.weight_layers import LayerScales

# A tensor deserves a look when its chosen threshold clips more than this share of the values
# or its estimated SQNR falls below this many dB (rough guides for 8-bit activations).
ATTENTION_CLIPPED = 0.01
ATTENTION_SQNR_DB = 20.0
SENSITIVITY_BARS = 40
# Column titles for the metric keys of the compare and sensitivity results.
METRIC_LABELS = {
    "sqnr_db": "SQNR (dB)",
    "cosine": "cosine",
    "max_abs_error": "max |error|",
    "mean_abs_error": "mean |error|",
    "elements": "elements",
    "nonfinite_mismatches": "NaN/Inf mismatches",
    "top1_agreement_percent": "top-1 agreement (%)",
    "top1_percent": "top-1 (%)",
    "top1_drop_points": "top-1 drop (points)",
}


def metric_label(key: str) -> str:
    return METRIC_LABELS.get(key, key)


@dataclass
class Figures:
    """PNG bytes per figure: histograms by tensor name, the layer and sensitivity charts."""

    histograms: dict[str, bytes] = field(default_factory=dict)
    scales: bytes | None = None
    sensitivity: bytes | None = None


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def esc_name(name: str) -> str:
    """An escaped tensor or node name that may wrap after / . _ : (long ONNX names)."""
    text = esc(name)
    for mark in ("/", ".", "_", ":"):
        text = text.replace(mark, mark + "<wbr>")
    return text


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}g}"


def fmt_percent(fraction: float) -> str:
    if fraction == 0:
        return "0%"
    if fraction < 1e-5:
        return "<0.001%"
    return f"{100 * fraction:.3g}%"


def fmt_db(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.1f} dB"


def sort_value(value: float | None) -> str:
    """data-v of a numeric cell; empty (sorted last) when unknown."""
    if value is None or math.isnan(value):
        return ""
    if math.isinf(value):
        return "1e308" if value > 0 else "-1e308"
    return repr(float(value))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def tensor_anchors(data: ReportData) -> dict[str, str]:
    """Fragment id of each tensor's row (by position: names may hold any character)."""
    return {tensor.name: f"tensor-{index}" for index, tensor in enumerate(data.tensors, 1)}


def needs_attention(tensor: TensorSummary) -> bool:
    chosen = tensor.chosen
    if chosen is None:
        return False
    return chosen.clipped > ATTENTION_CLIPPED or chosen.sqnr_db < ATTENTION_SQNR_DB


CSS = """
:root{--fg:#1d232a;--muted:#5b6570;--line:#d9dee3;--bg:#f6f8fa;--bad:#b3261e;--ok:#1b7f3b}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
 margin:0;padding:0 28px 40px}
header{border-bottom:1px solid var(--line);padding:18px 0 10px;margin-bottom:8px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:0}
.sub,.muted{color:var(--muted)}
nav{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:1px solid var(--line);
 z-index:2}
nav a{margin-right:16px;color:#0b5cad;text-decoration:none}
section{margin:18px 0}
details>summary{cursor:pointer;padding:6px 0}
details>summary h2{display:inline}
table{border-collapse:collapse;margin:8px 0}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--bg);font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv th{background:none;color:var(--muted);font-weight:500}
table.sortable th[data-sort]{cursor:pointer}
table.sortable th[data-sort]::after{content:" ⇅";color:#9aa4ae;font-weight:400}
table.sortable th[data-dir=asc]::after{content:" ▲";color:var(--fg)}
table.sortable th[data-dir=desc]::after{content:" ▼";color:var(--fg)}
table.main>tbody>tr:hover{background:#fbfcfd}
table.methods{margin:0}
table.methods td{border:0;padding:1px 6px;font-size:12.5px}
table.methods tr.chosen td{font-weight:700}
code,.name{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;
 overflow-wrap:anywhere}
td.name{max-width:300px;min-width:160px}
.scroll{overflow-x:auto;max-width:100%}
details.flags summary{padding:0}
details.flags ul{margin:2px 0;padding-left:18px;font-size:12.5px}
.sw{display:inline-block;width:14px;height:4px;vertical-align:middle;margin-right:5px}
.sw.chosen{height:7px}
.bad{color:var(--bad);font-weight:600}
.badge{display:inline-block;border-radius:3px;padding:0 6px;font-size:12px;font-weight:600;
 color:#fff}
.badge.ok{background:var(--ok)}.badge.fail{background:var(--bad)}.badge.kept{background:#8a5a00}
.note{background:#fff8e1;border-left:4px solid #e0a800;padding:6px 10px;margin:6px 0}
.legend span{margin-right:14px;white-space:nowrap}
input.filter{padding:4px 8px;width:320px;margin:4px 0;font:inherit}
img.fig{display:block;border:1px solid var(--line);background:#fff}
footer{margin-top:30px;color:var(--muted);font-size:12px}
"""

# Click a header with data-sort ("num" or "text") to sort its table's body rows by the cells'
# data-v (or their text); inputs with data-filter hide rows whose data-key lacks the text.
JS = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('thead th[data-sort]').forEach(function(th){
    th.addEventListener('click',function(){
      var col=Array.prototype.indexOf.call(th.parentNode.children,th);
      var numeric=th.dataset.sort==='num';
      var dir=th.dataset.dir==='desc'?'asc':(th.dataset.dir==='asc'?'desc':(numeric?'desc':'asc'));
      table.querySelectorAll('thead th').forEach(function(o){delete o.dataset.dir;});
      th.dataset.dir=dir;
      var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      function key(row){var c=row.cells[col];var v=c.dataset.v!==undefined?c.dataset.v:c.textContent;
        return numeric?(v===''?NaN:parseFloat(v)):v.toLowerCase();}
      rows.sort(function(a,b){var x=key(a),y=key(b);
        if(numeric){if(isNaN(x))return isNaN(y)?0:1;if(isNaN(y))return -1;return dir==='asc'?x-y:y-x;}
        return dir==='asc'?x.localeCompare(y):y.localeCompare(x);});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
document.querySelectorAll('input[data-filter]').forEach(function(input){
  input.addEventListener('input',function(){
    var text=input.value.toLowerCase();
    document.querySelectorAll('#'+input.dataset.filter+' > tbody > tr').forEach(function(row){
      row.style.display=(row.dataset.key||'').toLowerCase().indexOf(text)>=0?'':'none';
    });
  });
});
"""


def render_html(data: ReportData, figures: Figures) -> str:
    calib = data.calibration
    title = calib.model_file or (data.model.path.name if data.model else "model")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>qtool report: {esc(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        "<header>",
        f"<h1>Quantization report: {esc(title)}</h1>",
        (f'<div class="sub">calibration <code>{esc(_calib_name(data))}</code> · method '
        f"<b>{esc(calib.method)}</b> · {calib.num_samples} samples · qtool {esc(__version__)}</div>"),
        "</header>",
        _nav(data),
        _summary(data),
        _tensors(data, figures),
    ]
    if data.layers is not None:
        parts.append(_layers(data, figures))
    if data.sensitivity is not None:
        parts.append(_sensitivity(data, figures))
    if data.compare is not None:
        parts.append(_compare(data))
    parts.append(_footer(data))
    parts.append(f"<script>{JS}</script></body></html>")
    return "\n".join(parts) + "\n"


def _calib_name(data: ReportData) -> str:
    path = data.calibration.path
    return path.name if path is not None else "calibration"


def _nav(data: ReportData) -> str:
    links = [("summary", "Summary"), ("tensors", "Activation thresholds")]
    if data.layers is not None:
        links.append(("layers", "Weight scales"))
    if data.sensitivity is not None:
        links.append(("sensitivity", "Sensitivity"))
    if data.compare is not None:
        links.append(("compare", "Compare"))
    return "<nav>" + "".join(f'<a href="#{key}">{esc(text)}</a>' for key, text in links) + "</nav>"


def _kv(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{esc(key)}</th><td>{value}</td></tr>" for key, value in rows)
    return f'<table class="kv">{body}</table>'


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


def _summary(data: ReportData) -> str:
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
        rows.append(("Accuracy gates", _gates_cell(data.compare)))
    if data.sensitivity is not None and data.sensitivity.fallback is not None:
        kept = data.sensitivity.kept
        rows.append(("Kept in high precision (sensitivity fallback)",
                     ", ".join(f"<code>{esc(name)}</code>" for name in kept) if kept else "none"))
    tools = ", ".join(f"{key} {value}" for key, value in calib.tools.items())
    rows.append(("Calibrated with", esc(tools) or "unknown"))
    notes = "".join(f'<div class="note">{esc(note)}</div>' for note in data.notes)
    if data.histograms_missing:
        notes += f'<div class="note">{esc(data.histograms_missing)}</div>'
    return f'<section id="summary"><h2>Summary</h2>{_kv(rows)}{notes}</section>'


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


def _gates_cell(compare) -> str:
    items = []
    for gate in compare.gates:
        badge = '<span class="badge ok">pass</span>' if gate.passed else \
            '<span class="badge fail">FAIL</span>'
        op = "≤" if gate.gate.startswith("max_") else "≥"
        items.append(f"{badge} <code>{esc(gate.metric)}</code> = {esc(fmt(gate.value, 5))} "
                     f"(needs {op} {esc(fmt(gate.threshold, 5))})")
    return "<br>".join(items)


def _legend(methods: list[str], chosen: str) -> str:
    spans = []
    for method in methods:
        mark = " chosen" if method == chosen else ""
        label = f"{method} (chosen)" if method == chosen else method
        spans.append(f'<span><i class="sw{mark}" style="background:{method_colour(method)}">'
                     f"</i>{esc(label)}</span>")
    spans.append(f'<span><i class="sw" style="background:{CHOSEN_CLIP_COLOUR};opacity:.25">'
                 "</i>clipped by the chosen amax</span>")
    return '<div class="legend">' + "".join(spans) + "</div>"


def _tensors(data: ReportData, figures: Figures) -> str:
    calib = data.calibration
    with_hist = bool(data.tensors) and bool(data.tensors[0].points)
    methods = [point.method for point in data.tensors[0].points] if with_hist else []
    head = ['<th class="num" data-sort="num">#</th>', '<th data-sort="text">Tensor</th>']
    if with_hist:
        head.append("<th>|x| histogram (log count)</th>")
    head += [f'<th class="num" data-sort="num">amax ({esc(calib.method)})</th>',
             '<th class="num" data-sort="num">max |x|</th>']
    if with_hist:
        head += ['<th class="num" data-sort="num">clipped</th>',
                 '<th class="num" data-sort="num">est. SQNR</th>',
                 "<th>all methods: amax · clipped · est. SQNR</th>"]
    rows = [_tensor_row(index, tensor, figures, with_hist)
            for index, tensor in enumerate(data.tensors, 1)]
    intro = ""
    if with_hist:
        intro = (
            "<p class=\"muted\">Clipped: share of the calibration values above the threshold. "
            "Est. SQNR: signal-to-quantization-noise ratio of symmetric INT8 with scale "
            "amax/127, estimated from the histogram (values at bin centres). Red: more than "
            f"{fmt_percent(ATTENTION_CLIPPED)} clipped or below {ATTENTION_SQNR_DB:g} dB. "
            "Click a column header to sort.</p>" + _legend(methods, calib.method))
    return (
        '<section id="tensors"><details open><summary>'
        f"<h2>Activation thresholds ({len(data.tensors)} tensors)</h2></summary>{intro}"
        '<input class="filter" type="search" placeholder="filter by tensor name" '
        'data-filter="tensor-table">'
        '<div class="scroll"><table id="tensor-table" class="sortable main"><thead><tr>'
        + "".join(head) + "</tr></thead><tbody>" + "".join(rows)
        + "</tbody></table></div></details></section>")


def _tensor_row(index: int, tensor: TensorSummary, figures: Figures, with_hist: bool) -> str:
    pooled = tensor.rule == "bounded" and tensor.count == 0  # its max came from pooling alone
    details = ["max of a bounded activation" if pooled else f"{tensor.count:,} values"]
    if tensor.nan or tensor.inf:
        details.append(f'<span class="bad">{tensor.nan} NaN, {tensor.inf} Inf</span>')
    cells = [
        f'<td class="num" data-v="{index}">{index}</td>',
        (f'<td class="name" data-v="{esc(tensor.name)}"><span class="name">{esc_name(tensor.name)}'
        f'</span><div class="muted">{" · ".join(details)}</div></td>'),
    ]
    if with_hist:
        png = figures.histograms.get(tensor.name)
        image = (f'<img class="fig" loading="lazy" decoding="async" width="320" height="160" '
                 f'alt="|x| histogram of {esc(tensor.name)}" src="{data_uri(png)}">'
                 if png else '<span class="muted">no histogram'
                 + (" (not needed: amax is the max)" if pooled else "") + "</span>")
        cells.append(f"<td>{image}</td>")
    cells.append(f'<td class="num" data-v="{sort_value(tensor.amax)}">{fmt(tensor.amax, 5)}</td>')
    cells.append(f'<td class="num" data-v="{sort_value(tensor.abs_max)}">'
                 f"{fmt(tensor.abs_max, 5)}</td>")
    chosen = tensor.chosen
    if with_hist:
        if chosen is None:
            cells += ["<td></td>", "<td></td>", "<td></td>"]
        else:
            clip_class = " bad" if chosen.clipped > ATTENTION_CLIPPED else ""
            sqnr_class = " bad" if chosen.sqnr_db < ATTENTION_SQNR_DB else ""
            cells.append(f'<td class="num{clip_class}" data-v="{sort_value(chosen.clipped)}">'
                         f"{fmt_percent(chosen.clipped)}</td>")
            cells.append(f'<td class="num{sqnr_class}" data-v="{sort_value(chosen.sqnr_db)}">'
                         f"{fmt_db(chosen.sqnr_db)}</td>")
            cells.append(f"<td>{_methods_table(tensor)}</td>")
    return (f'<tr id="tensor-{index}" data-tensor="{esc(tensor.name)}" data-key="{esc(tensor.name)}" '
            f'data-amax="{esc(repr(float(tensor.amax)))}">' + "".join(cells) + "</tr>")


def _methods_table(tensor: TensorSummary) -> str:
    rows = []
    for point in tensor.points:
        css = ' class="chosen"' if point.chosen else ""
        swatch = f'<i class="sw{" chosen" if point.chosen else ""}" ' \
                 f'style="background:{method_colour(point.method)}"></i>'
        rows.append(
            f'<tr{css} data-method="{esc(point.method)}" data-amax="{esc(repr(point.amax))}">'
            f"<td>{swatch}{esc(point.method)}</td><td class=\"num\">{fmt(point.amax, 5)}</td>"
            f'<td class="num">{fmt_percent(point.clipped)}</td>'
            f'<td class="num">{fmt_db(point.sqnr_db)}</td></tr>')
    return '<table class="methods">' + "".join(rows) + "</table>"


def _flag_cell(layer: LayerScales) -> str:
    """Counts per reason, with the channels (and their scale and max |w|) behind a <details>."""
    if not layer.flagged:
        return "0"
    reasons: dict[str, int] = {}
    for flag in layer.flagged:
        reasons[flag.reason] = reasons.get(flag.reason, 0) + 1
    summary = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
    items = "".join(f"<li>ch {flag.channel}: {esc(flag.reason)}, scale {fmt(flag.scale)}, "
                    f"max |w| {fmt(flag.channel_amax)}</li>" for flag in layer.flagged)
    return (f'<details class="flags"><summary class="bad">{esc(summary)}</summary>'
            f"<ul>{items}</ul></details>")


def _layers(data: ReportData, figures: Figures) -> str:
    analysis = data.layers
    rows = []
    for index, layer in enumerate(analysis.layers, 1):
        low, median, high = layer.spread()
        ratio = high / low if low > 0 else math.inf
        axis = "per-tensor" if layer.axis is None else f"axis {layer.axis}"
        rows.append(
            f'<tr data-layer="{esc(layer.node)}" data-key="{esc(layer.node)} {esc(layer.op_type)}">'
            f'<td class="num" data-v="{index}">{index}</td>'
            f'<td class="name" data-v="{esc(layer.node)}"><span class="name">{esc_name(layer.node)}'
            f'</span><div class="muted">weight <code>{esc_name(layer.weight)}</code></div></td>'
            f"<td>{esc(layer.op_type)}</td><td>{axis}</td>"
            f'<td class="num" data-v="{layer.channels}">{layer.channels}</td>'
            f'<td class="num" data-v="{sort_value(low)}">{fmt(low)}</td>'
            f'<td class="num" data-v="{sort_value(median)}">{fmt(median)}</td>'
            f'<td class="num" data-v="{sort_value(high)}">{fmt(high)}</td>'
            f'<td class="num" data-v="{sort_value(ratio)}">{fmt(ratio, 3)}</td>'
            f'<td data-v="{len(layer.flagged)}">{_flag_cell(layer)}</td></tr>')
    source = ("read from the model's weight DequantizeLinear nodes" if analysis.source == "qdq"
              else "as <code>qtool quantize</code> would write them for this FP32 model")
    figure = ""
    if figures.scales is not None:
        figure = (f'<img class="fig" loading="lazy" alt="weight scale range per layer" '
                  f'src="{data_uri(figures.scales)}">')
    table = (
        '<div class="scroll"><table id="layer-table" class="sortable main"><thead><tr>'
        '<th class="num" data-sort="num">#</th><th data-sort="text">Layer</th>'
        '<th data-sort="text">Op</th><th>Scales</th><th class="num" data-sort="num">Channels</th>'
        '<th class="num" data-sort="num">min scale</th>'
        '<th class="num" data-sort="num">median</th><th class="num" data-sort="num">max</th>'
        '<th class="num" data-sort="num">max/min</th>'
        '<th data-sort="num">flagged channels</th></tr></thead><tbody>'
        + "".join(rows) + "</tbody></table></div>") if rows else "<p>No quantized weighted layers.</p>"
    kept = ""
    if analysis.kept:
        kept_rows = "".join(f"<tr><td><code>{esc(k.node)}</code></td><td>{esc(k.op_type)}</td>"
                            f"<td>{esc(k.reason)}</td></tr>" for k in analysis.kept)
        kept = ("<h3>Left in high precision</h3><table><thead><tr><th>Node</th><th>Op</th>"
                f"<th>Why</th></tr></thead><tbody>{kept_rows}</tbody></table>")
    return (
        '<section id="layers"><details open><summary>'
        f"<h2>Weight scales per layer ({len(analysis.layers)} weights)</h2></summary>"
        f'<p class="muted">Per-channel scales {source}. The figure shows, per layer number, the '
        "range from the smallest to the largest channel scale (log axis) and the median (dot); "
        "red: layers with flagged channels (all-zero weights, a scale below "
        "1e-3 × the layer's median, or, with one per-tensor scale, weights that all round "
        f"to 0).</p>{figure}{table}{kept}</details></section>")


def _metric_cells(metrics: dict[str, float], columns: list[str]) -> str:
    return "".join(f'<td class="num" data-v="{sort_value(metrics.get(key))}">'
                   f"{esc(fmt(metrics.get(key, math.nan), 5))}</td>" for key in columns)


def _sensitivity(data: ReportData, figures: Figures) -> str:
    view = data.sensitivity
    info = []
    if view.samples is not None:
        info.append(("Samples", str(view.samples) + (f" ({esc(view.data)})" if view.data else "")))
    if view.all_quantized:
        info.append(("All layers quantized", _metric_text(view.all_quantized)))
    if view.fallback is not None:
        target = view.fallback.get("target") or {}
        target_text = ", ".join(f"{key} {value}" for key, value in target.items()) or "?"
        verdict = ('<span class="badge ok">met</span>' if view.fallback.get("passed")
                   else '<span class="badge fail">not met</span>')
        info.append(("Fallback target", f"{esc(target_text)} {verdict}"))
        final = view.fallback.get("final")
        if isinstance(final, dict):
            metrics = {key: value for key, value in final.items()
                       if key not in ("phase", "excluded", "passed", "failed")}
            info.append(("With the kept layers", _metric_text(
                {key: number(value) for key, value in metrics.items()})))
    kept = ", ".join(f"<code>{esc(name)}</code>" for name in view.kept)
    info.append(("Kept in high precision",
                 f"{len(view.kept)}: {kept}" if view.kept else "none"))
    figure = ""
    if figures.sensitivity is not None:
        shown = min(len(view.layers), SENSITIVITY_BARS)
        caption = (f"the {shown} most sensitive of {len(view.layers)} layers"
                   if shown < len(view.layers) else f"all {shown} layers")
        figure = (f'<p class="muted">Output SQNR versus FP32 with only that layer quantized: '
                  f"lower means more sensitive ({caption}). Dashed line: every layer quantized. "
                  "Red: kept in high precision.</p>"
                  f'<img class="fig" loading="lazy" alt="sensitivity ranking" '
                  f'src="{data_uri(figures.sensitivity)}">')
    head = "".join(f'<th class="num" data-sort="num">{esc(metric_label(key))}</th>'
                   for key in view.columns)
    rows = []
    for layer in view.layers:
        badge = ' <span class="badge kept">kept</span>' if view.is_kept(layer.name) else ""
        rows.append(
            f'<tr data-ranked="{esc(layer.name)}" data-key="{esc(layer.name)}">'
            f'<td class="num" data-v="{layer.rank}">{layer.rank}</td>'
            f'<td class="name" data-v="{esc(layer.name)}"><code>{esc_name(layer.name)}</code>'
            f"{badge}</td><td>{esc(layer.op_type or '')}</td>"
            f"{_metric_cells(layer.metrics, view.columns)}</tr>")
    return (
        '<section id="sensitivity"><details open><summary><h2>Sensitivity</h2></summary>'
        f"{_kv(info)}{figure}"
        '<div class="scroll"><table id="sensitivity-table" class="sortable main"><thead><tr>'
        '<th class="num" data-sort="num">Rank</th><th data-sort="text">Layer</th><th>Op</th>'
        f"{head}</tr></thead><tbody>" + "".join(rows)
        + "</tbody></table></div></details></section>")


def _metric_text(metrics: dict[str, float]) -> str:
    """Escaped "label value, ..." text."""
    return esc(", ".join(f"{metric_label(key)} {fmt(value, 5)}" for key, value in metrics.items()))


def _compare(data: ReportData) -> str:
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
    parts = [_kv(info),
             (f"<table><thead><tr><th>Output</th>{head}</tr></thead><tbody>{''.join(rows)}"
             "</tbody></table>")]
    cls = view.classification
    if cls:
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
        parts.append(_kv(lines))
    seq = view.sequence
    if seq:
        lines = [("Sequence output", f"<code>{esc(seq.get('output', '?'))}</code>"),
                 ("Position agreement", _percent(seq.get("position_agreement_percent")))]
        if seq.get("disagreements"):
            lines.append(("Disagreements", _disagreements_cell(seq, "positions")))
        ctc = seq.get("ctc")
        if isinstance(ctc, dict):
            lines.append((f"Same sequence (CTC, blank {ctc.get('blank')})",
                          _percent(ctc.get("same_sequence_percent"))))
            lines.append(("Token error rate", _percent(ctc.get("token_error_rate_percent"))))
        parts.append(_kv(lines))
    if view.metrics:
        parts.append(_kv([(f"metric {name}", esc(fmt(value, 6)))
                          for name, value in view.metrics.items()]))
    if view.gates:
        parts.append(f"<p>{_gates_cell(view)}</p>")
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


def _footer(data: ReportData) -> str:
    return (f"<footer>Written by qtool {esc(__version__)}. Self-contained: no network access "
            "is needed to view this page.</footer>")
