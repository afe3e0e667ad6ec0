"""The Sensitivity section: the per-layer ranking, its chart and the fallback's outcome."""

from __future__ import annotations

import math

from qtool.report.data import ReportData
from qtool.report.html.format import (
    esc,
    esc_name,
    fmt,
    kv_table,
    metric_label,
    metric_text,
    sort_value,
)
from qtool.report.html.images import Figures, data_uri
from qtool.report.results import number

SENSITIVITY_BARS = 40


def _metric_cells(metrics: dict[str, float], columns: list[str]) -> str:
    return "".join(f'<td class="num" data-v="{sort_value(metrics.get(key))}">'
                   f"{esc(fmt(metrics.get(key, math.nan), 5))}</td>" for key in columns)


def sensitivity_section(data: ReportData, figures: Figures) -> str:
    view = data.sensitivity
    info = []
    if view.samples is not None:
        info.append(("Samples", str(view.samples) + (f" ({esc(view.data)})" if view.data else "")))
    if view.all_quantized:
        info.append(("All layers quantized", metric_text(view.all_quantized)))
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
            info.append(("With the kept layers", metric_text(
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
        f"{kv_table(info)}{figure}"
        '<div class="scroll"><table id="sensitivity-table" class="sortable main"><thead><tr>'
        '<th class="num" data-sort="num">Rank</th><th data-sort="text">Layer</th><th>Op</th>'
        f"{head}</tr></thead><tbody>" + "".join(rows)
        + "</tbody></table></div></details></section>")
