"""Render the report as one self-contained HTML page: inline CSS, a few lines of inline JS for
sorting and filtering tables, figures as data: URIs. Nothing is fetched when it is opened.

Machine-readable hooks (for scripts and tests): every tensor row is a <tr data-tensor="NAME"
data-amax="REPR"> with the chosen amax as Python's repr (round-trips exactly), and every method
row of its threshold table a <tr data-method="METHOD" data-amax="REPR">. Weighted layers are
<tr data-layer="NODE">, sensitivity rows <tr data-ranked="NODE">, compare rows
<tr data-output="NAME">.

Modules: page (the whole document), one module per section (summary, tensors, layers,
sensitivity, compare), format (escaping and number formatting), images (figures inlined as
data: URIs), attention (which tensors deserve a look), assets (the inline CSS and JS).
"""

from __future__ import annotations

from qtool.report.html.attention import needs_attention
from qtool.report.html.format import fmt_percent
from qtool.report.html.images import Figures
from qtool.report.html.page import render_html
from qtool.report.html.sensitivity import SENSITIVITY_BARS

__all__ = ["SENSITIVITY_BARS", "Figures", "fmt_percent", "needs_attention", "render_html"]
