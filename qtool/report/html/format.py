"""Text and cell formatting shared by the report's sections: escaping, numbers, metric names."""

from __future__ import annotations

import html
import math

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


def kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{esc(key)}</th><td>{value}</td></tr>" for key, value in rows)
    return f'<table class="kv">{body}</table>'


def metric_text(metrics: dict[str, float]) -> str:
    """Escaped "label value, ..." text."""
    return esc(", ".join(f"{metric_label(key)} {fmt(value, 5)}" for key, value in metrics.items()))
