"""The Weight scales section: per-channel scale spread and flagged channels of each weighted
layer."""

from __future__ import annotations

import math

from qtool.report.data import ReportData
from qtool.report.html.format import esc, esc_name, fmt, sort_value
from qtool.report.html.images import Figures, data_uri
from qtool.report.weight_layers import LayerScales


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


def layers_section(data: ReportData, figures: Figures) -> str:
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
