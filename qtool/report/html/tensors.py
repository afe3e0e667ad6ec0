"""The Activation thresholds section: one row per calibrated tensor, with its histogram and
every method's threshold."""

from __future__ import annotations

from qtool.report.data import ReportData
from qtool.report.figures import CHOSEN_CLIP_COLOUR, method_colour
from qtool.report.html.attention import ATTENTION_CLIPPED, ATTENTION_SQNR_DB
from qtool.report.html.format import esc, esc_name, fmt, fmt_db, fmt_percent, sort_value
from qtool.report.html.images import Figures, data_uri
from qtool.report.tensors import TensorSummary


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


def tensors_section(data: ReportData, figures: Figures) -> str:
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
