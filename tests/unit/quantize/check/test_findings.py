"""Codes, findings and the report's summary."""

from __future__ import annotations

import onnx

from qtool.quantize.check import CODES, CheckReport, Finding
from qtool.quantize.check.findings import MODEL, finding, format_values, names


def test_every_code_has_a_known_severity():
    assert {severity for severity, _ in CODES.values()} <= {"error", "warning", "info"}


def test_a_finding_takes_its_severity_from_its_code_and_names_its_node():
    node = onnx.helper.make_node("Conv", ["x", "w"], ["c"])
    made = finding("partially-quantized", node, "why")
    assert made == Finding("warning", "partially-quantized", "c", "why")
    assert finding("no-qdq", MODEL, "none").node == "<model>"
    assert made.format() == "warning partially-quantized        c: why"
    assert names([node, onnx.helper.make_node("Relu", ["c"], ["r"], name="relu")]) == (
        "Conv 'c', Relu 'relu'")


def test_values_are_shown_up_to_a_limit():
    assert format_values([0.5, 0.25]) == "0.5, 0.25"
    assert format_values(list(range(6))) == "0, 1, 2, 3, ... (6 values)"


def test_report_counts_and_verdicts():
    warning = Finding("warning", "no-qdq", MODEL, "none")
    info = Finding("info", "qdq-dtype-low-precision", "q", "fp8")
    report = CheckReport((warning, info), qdq_nodes=1)
    assert report.counts() == {"error": 0, "warning": 1, "info": 1}
    assert report.passed() and not report.passed(strict=True)
    assert report.summary() == "check passed: 0 errors, 1 warning, 1 info in 1 Q/DQ nodes"
    assert report.summary(strict=True) == (
        "check FAILED (strict): 0 errors, 1 warning, 1 info in 1 Q/DQ nodes")
    assert CheckReport((info,), 2).passed(strict=True)
