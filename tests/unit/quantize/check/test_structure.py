"""Q/DQ structure: no Q/DQ at all, integer types TensorRT cannot run, per-channel Q/DQ below
opset 13, a Q without its DQ and an activation DQ without its Q."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from qtool.quantize.check import check_model
from tests.helpers.qdq_graphs import Builder, F, clean_model, found, simple


def test_model_without_qdq_is_a_warning():
    b = Builder()
    b.node("Relu", ["x"], "y", name="relu")
    model = b.model([helper.make_tensor_value_info("x", F, [2])], [helper.make_tensor_value_info("y", F, [2])])
    report = check_model(model)
    assert [(f.severity, f.code, f.node) for f in report.findings] == [("warning", "no-qdq", "<model>")]
    assert report.passed() and not report.passed(strict=True)


def test_unsigned_zero_point_is_an_unsupported_dtype():
    assert found(clean_model(act_zp_dtype=np.uint8)) == {
        ("qdq-dtype-unsupported", "x_q"), ("qdq-dtype-unsupported", "x_dq")}


def test_quantize_without_zero_point_means_uint8():
    model = clean_model(act_zp=None)
    assert found(model) == {("qdq-dtype-unsupported", "x_q"), ("qdq-dtype-unsupported", "x_dq")}
    message = next(f.message for f in check_model(model).findings if f.node == "x_q")
    assert "ONNX default" in message


def test_int32_bias_dequantize_is_unsupported():
    def build(b):
        bias = b.const("bias_int", np.array([5, -3], np.int32))
        b.node("DequantizeLinear", [bias, b.const("bias_scale", np.float32(0.001))], "bias", name="bias_dq")
        b.node("Conv", [b.qdq("x", "x"), b.weight("w", (2, 4, 1, 1)), "bias"], "y", name="conv")
    assert found(simple(build)) == {("qdq-dtype-unsupported", "bias_dq")}


def test_fp8_is_reported_as_info():
    def build(b):
        zp = helper.make_tensor("x_zp8", TensorProto.FLOAT8E4M3FN, [], [0.0])
        b.inits.append(zp)
        b.const("x_s", np.float32(0.5))
        b.node("QuantizeLinear", ["x", "x_s", "x_zp8"], "xq", name="x_q")
        b.node("DequantizeLinear", ["xq", "x_s", "x_zp8"], "xd", name="x_dq")
        b.node("Conv", ["xd", b.weight("w", (2, 4, 1, 1))], "y", name="conv")
    report = check_model(simple(build, opset=19))
    assert {(f.severity, f.code, f.node) for f in report.findings} == {
        ("info", "qdq-dtype-low-precision", "x_q"), ("info", "qdq-dtype-low-precision", "x_dq")}
    assert report.passed(strict=True)


def test_per_channel_below_opset_13():
    def build(b):
        b.node("Conv", [b.qdq("x", "x"), b.weight("w", (2, 4, 1, 1))], "y", name="conv")
    assert found(simple(build, opset=10)) == {("opset-per-channel", "w_q"), ("opset-per-channel", "w_dq")}
    assert found(simple(build, opset=13)) == set()


def test_quantize_not_followed_by_dequantize():
    def build(b):
        b.const("s", np.float32(0.1))
        b.const("zp", np.int8(0))
        b.node("QuantizeLinear", ["x", "s", "zp"], "xq", name="x_q")
        b.node("Cast", ["xq"], "y", name="cast", to=F)
    assert found(simple(build)) == {("dangling-quantize", "x_q")}


def test_quantize_output_is_a_graph_output():
    def build(b):
        b.const("s", np.float32(0.1))
        b.const("zp", np.int8(0))
        b.node("QuantizeLinear", ["x", "s", "zp"], "y", name="x_q")
    assert found(simple(build, outputs=(("y", TensorProto.INT8, None),))) == {("dangling-quantize", "x_q")}


def test_dequantize_of_an_integer_graph_input():
    def build(b):
        b.node("DequantizeLinear", ["xi", b.const("s", np.float32(0.1)), b.const("zp", np.int8(0))],
               "xd", name="x_dq")
        b.node("Conv", ["xd", b.weight("w", (2, 4, 1, 1))], "y", name="conv")
    model = simple(build, inputs=(("xi", TensorProto.INT8, [1, 4, 3, 3]),))
    assert found(model) == {("dangling-dequantize", "x_dq")}
