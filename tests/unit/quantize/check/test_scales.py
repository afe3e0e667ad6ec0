"""Scales and zero-points: constant, positive, symmetric, per-channel only on weights and along
their output channels, and equal on a Q and its DQ."""

from __future__ import annotations

import numpy as np
import pytest

from qtool.quantize.check import check_model
from tests.helpers.qdq_graphs import F, clean_model, found, simple


def test_nonzero_zero_point_is_an_error_on_q_and_dq():
    assert found(clean_model(act_zp=3)) == {("zero-point-nonzero", "x_q"), ("zero-point-nonzero", "x_dq")}


@pytest.mark.parametrize("bad", [0.0, -0.5, np.nan, np.inf])
def test_invalid_scale(bad):
    findings = check_model(clean_model(act_scale=bad, checked=False)).findings
    assert {(f.code, f.node) for f in findings} == {("scale-invalid", "x_q"), ("scale-invalid", "x_dq")}
    assert all(f.severity == "error" for f in findings)


def test_one_bad_channel_in_a_per_channel_scale():
    def build(b):
        w = b.const("w", np.ones((3, 2, 1, 1), np.float32))
        b.qdq(w, "w", scale=np.array([0.1, 0.0, 0.2], np.float32), zero_point=np.zeros(3, np.int8), axis=0)
        b.node("Conv", [b.qdq("x", "x"), "w_deq"], "y", name="conv")
    report = check_model(simple(build, inputs=(("x", F, [1, 2, 4, 4]),)))
    [q_finding, dq_finding] = report.findings
    assert (q_finding.code, q_finding.node, dq_finding.node) == ("scale-invalid", "w_q", "w_dq")
    assert "1 of 3, first at index 1" in q_finding.message


def test_per_channel_scale_on_an_activation():
    def build(b):
        x = b.qdq("x", "x", scale=np.full(4, 0.1, np.float32), zero_point=np.zeros(4, np.int8), axis=1)
        b.node("Conv", [x, b.weight("w", (2, 4, 1, 1))], "y", name="conv")
    assert found(simple(build)) == {("per-channel-activation", "x_q"), ("per-channel-activation", "x_dq")}


def test_missing_axis_is_a_warning_when_axis_1_is_right():
    def build(b):  # Gemm without transB: weight [K, N], output channels on axis 1 = ONNX default
        w = b.weight("w", (4, 3), axis=1, explicit_axis=False)
        b.node("Gemm", [b.qdq("x", "x"), w], "y", name="fc")
    report = check_model(simple(build, inputs=(("x", F, [2, 4]),)))
    assert {(f.severity, f.code, f.node) for f in report.findings} == {
        ("warning", "per-channel-implicit-axis", "w_q"), ("warning", "per-channel-implicit-axis", "w_dq")}


def test_missing_axis_on_a_conv_weight_is_also_the_wrong_axis():
    def build(b):  # square weight so axis 1 is shape-valid, but it is the input-channel axis
        w = b.weight("w", (4, 4, 1, 1), axis=1, explicit_axis=False)
        b.node("Conv", [b.qdq("x", "x"), w], "y", name="conv")
    assert found(simple(build)) == {
        ("per-channel-implicit-axis", "w_q"), ("per-channel-implicit-axis", "w_dq"),
        ("per-channel-wrong-axis", "w_dq")}


@pytest.mark.parametrize("op, attrs, shape, good, bad", [
    ("Conv", {}, (4, 4, 1, 1), 0, 1),
    ("ConvTranspose", {}, (4, 4, 1, 1), 1, 0),
    ("Gemm", {"transB": 1}, (4, 4), 0, 1),
    ("Gemm", {}, (4, 4), 1, 0),
    ("MatMul", {}, (4, 4), 1, 0),
])
def test_weight_axis_must_be_the_output_channels(op, attrs, shape, good, bad):
    def model_with(axis):
        def build(b):
            b.node(op, [b.qdq("x", "x"), b.weight("w", shape, axis=axis)], "y", name="op", **attrs)
        x_shape = [1, 4, 3, 3] if op.startswith("Conv") else [2, 4]
        return simple(build, inputs=(("x", F, x_shape),))
    assert found(model_with(good)) == set()
    report = check_model(model_with(bad))
    assert {(f.code, f.node) for f in report.findings} == {("per-channel-wrong-axis", "w_dq")}
    assert f"axis {bad}" in report.findings[0].message and f"axis {good}" in report.findings[0].message


def test_scale_length_must_match_the_axis():
    def build(b):
        b.node("Conv", [b.qdq("x", "x"), b.weight("w", (4, 4, 1, 1), scales=3)], "y", name="conv")
    assert found(simple(build)) == {("scale-shape-mismatch", "w_q"), ("scale-shape-mismatch", "w_dq")}


def test_zero_point_size_must_match_the_scale():
    def build(b):
        w = b.const("w", np.ones((2, 4, 1, 1), np.float32))
        b.qdq(w, "w", scale=np.array([0.1, 0.2], np.float32), zero_point=np.int8(0), axis=0)
        b.node("Conv", [b.qdq("x", "x"), "w_deq"], "y", name="conv")
    assert found(simple(build)) == {("zero-point-shape", "w_q"), ("zero-point-shape", "w_dq")}


def test_scale_computed_from_data_is_not_constant():
    def build(b):
        scale = b.node("ReduceMax", ["x"], "amax", keepdims=0)
        b.const("zp", np.int8(0))
        b.node("QuantizeLinear", ["x", scale, "zp"], "xq", name="x_q")
        b.node("DequantizeLinear", ["xq", scale, "zp"], "xd", name="x_dq")
        b.node("Conv", ["xd", b.weight("w", (2, 4, 1, 1))], "y", name="conv")
    assert found(simple(build)) == {("qparams-not-constant", "x_q"), ("qparams-not-constant", "x_dq")}


def test_scale_folded_from_constants_is_accepted():
    def build(b):
        b.node("Div", [b.const("amax", np.float32(6.35)), b.const("levels", np.float32(127))], "s")
        b.const("zp", np.int8(0))
        b.node("QuantizeLinear", ["x", "s", "zp"], "xq", name="x_q")
        b.node("DequantizeLinear", ["xq", "s", "zp"], "xd", name="x_dq")
        b.node("Conv", ["xd", b.weight("w", (2, 4, 1, 1))], "y", name="conv")
    assert found(simple(build)) == set()


def test_quantize_and_dequantize_with_different_scales():
    def build(b):
        b.node("Conv", [b.qdq("x", "x", scale=0.1, dq_scale=0.2), b.weight("w", (2, 4, 1, 1))], "y", name="conv")
    findings = check_model(simple(build)).findings
    assert {(f.code, f.node) for f in findings} == {("qdq-pair-mismatch", "x_dq")}
    assert "scale 0.1 vs 0.2" in findings[0].message
