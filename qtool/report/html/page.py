"""The whole page: head, navigation, the sections present in the data, footer."""

from __future__ import annotations

from qtool import __version__
from qtool.report.data import ReportData
from qtool.report.html.assets import CSS, JS
from qtool.report.html.compare import compare_section
from qtool.report.html.format import esc
from qtool.report.html.images import Figures
from qtool.report.html.layers import layers_section
from qtool.report.html.sensitivity import sensitivity_section
from qtool.report.html.summary import summary_section
from qtool.report.html.tensors import tensors_section


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
        summary_section(data),
        tensors_section(data, figures),
    ]
    if data.layers is not None:
        parts.append(layers_section(data, figures))
    if data.sensitivity is not None:
        parts.append(sensitivity_section(data, figures))
    if data.compare is not None:
        parts.append(compare_section(data))
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


def _footer(data: ReportData) -> str:
    return (f"<footer>Written by qtool {esc(__version__)}. Self-contained: no network access "
            "is needed to view this page.</footer>")
