"""Codes, findings and the report's summary."""

from __future__ import annotations

from qtool.quantize.check import CODES


def test_every_code_has_a_known_severity():
    assert {severity for severity, _ in CODES.values()} <= {"error", "warning", "info"}
