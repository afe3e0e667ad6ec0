"""`check_model`: one planted defect per test, each found with its code and node; a clean
hand-built model has no findings; onnxruntime's own QDQ output is judged as TensorRT would."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from qtool.errors import UsageError
from qtool.quantize.check import CODES, check_model
from tests.helpers.qdq_graphs import Builder, clean_model

F = TensorProto.FLOAT


def found(model: onnx.ModelProto, **kwargs) -> set[tuple[str, str]]:
    """Findings of TensorRT's rules; onnxruntime's own verdict is tested on its own below."""
    kwargs.setdefault("ignore", ("onnxruntime-load",))
    return {(f.code, f.node) for f in check_model(model, **kwargs).findings}


def simple(build, inputs=(("x", F, [1, 4, 6, 6]),), outputs=(("y", F, None),), opset=13):
    """A model from a builder callback: build(b) adds nodes; returns the ModelProto."""
    b = Builder()
    build(b)
    return b.model([helper.make_tensor_value_info(*spec) for spec in inputs],
                   [helper.make_tensor_value_info(*spec) for spec in outputs], opset=opset)


def test_clean_model_has_no_findings():
    report = check_model(clean_model())
    assert report.findings == ()
    assert report.qdq_nodes == 20
    assert report.passed(strict=True)


def test_model_without_qdq_is_a_warning():
    b = Builder()
    b.node("Relu", ["x"], "y", name="relu")
    model = b.model([helper.make_tensor_value_info("x", F, [2])], [helper.make_tensor_value_info("y", F, [2])])
    report = check_model(model)
    assert [(f.severity, f.code, f.node) for f in report.findings] == [("warning", "no-qdq", "<model>")]
    assert report.passed() and not report.passed(strict=True)


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


def test_per_channel_below_opset_13():
    def build(b):
        b.node("Conv", [b.qdq("x", "x"), b.weight("w", (2, 4, 1, 1))], "y", name="conv")
    assert found(simple(build, opset=10)) == {("opset-per-channel", "w_q"), ("opset-per-channel", "w_dq")}
    assert found(simple(build, opset=13)) == set()


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


def test_quantized_conv_output_before_relu():
    assert found(clean_model(relu_before_q=False)) == {("weighted-output-quantized", "c1")}


def test_quantized_weighted_output_reaching_the_graph_output():
    def build(b):
        c = b.node("Conv", [b.qdq("x", "x"), b.weight("w", (2, 4, 1, 1))], "c", name="conv")
        b.node("Identity", [b.qdq(c, "c")], "y")
    findings = check_model(simple(build)).findings
    assert {(f.code, f.node) for f in findings} == {("weighted-output-quantized", "conv")}
    assert "graph output" in findings[0].message


def test_quantized_weighted_output_feeding_the_next_conv_is_fine():
    def build(b):
        c = b.node("Conv", [b.qdq("x", "x"), b.weight("w", (4, 4, 1, 1))], "c", name="conv")
        b.node("Conv", [b.qdq(c, "c"), b.weight("w2", (2, 4, 1, 1))], "y", name="conv2")
    assert found(simple(build)) == set()


def residual_block(b, *, other: str = "Conv", batchnorm: bool = False) -> None:
    """conv -> Q/DQ, read by the next conv and as the residual of an Add whose other input
    comes from `other` (a Conv: the Add fuses there; a Relu: it fuses nowhere)."""
    c = b.node("Conv", [b.qdq("x", "x"), b.weight("w", (4, 4, 1, 1))], "c", name="conv")
    skip = b.qdq(c, "c")
    branch = b.node("Conv", [skip, b.weight("w2", (4, 4, 1, 1))], "c2", name="conv2")
    if other != "Conv":
        branch = b.node(other, [branch], "act", name="act")
    if batchnorm:
        stats = [b.const(f"bn_{k}", np.full(4, v, np.float32))
                 for k, v in (("g", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0))]
        branch = b.node("BatchNormalization", [branch, *stats], "bn", name="bn")
    b.node("Add", [branch, skip], "y", name="add")


@pytest.mark.parametrize("batchnorm", [False, True])
def test_quantized_weighted_output_as_the_residual_of_another_convs_add_is_fine(batchnorm):
    # what the residual rule writes between two blocks (EfficientNet, ResNet): the Add fuses
    # into conv2, with the Q/DQ of conv's output as its residual input
    assert found(simple(lambda b: residual_block(b, batchnorm=batchnorm))) == set()


def test_quantized_weighted_output_feeding_an_add_that_fuses_nowhere():
    findings = check_model(simple(lambda b: residual_block(b, other="Relu"))).findings
    assert {(f.code, f.node) for f in findings} == {("weighted-output-quantized", "conv")}
    assert "Add 'add'" in findings[0].message


def test_weighted_output_also_used_in_float_by_the_next_conv_is_fine():
    # the Q cannot fuse into conv (its float output is needed), but conv2 runs in INT8 only
    # through it: that is TensorRT's rule (quantize every input of a weighted op)
    def build(b):
        c = b.node("Conv", [b.qdq("x", "x"), b.weight("w", (4, 4, 1, 1))], "c", name="conv")
        c2 = b.node("Conv", [b.qdq(c, "c"), b.weight("w2", (4, 4, 1, 1))], "c2", name="conv2")
        b.node("Sub", [c2, c], "y", name="sub")
    assert found(simple(build)) == set()


def attention_block(b, *, pool_quantized: bool, conv_reader: bool = False) -> None:
    """PP-OCRv6's attention: c = conv(x); a = hardsigmoid(conv(global_pool(c))); y = c + c * a.
    The pool reads c through Q/DQ or in float; with `conv_reader` a third conv reads c too."""
    c = b.node("Conv", [b.qdq("x", "x"), b.weight("w", (4, 4, 1, 1))], "c", name="conv")
    pooled = b.node("GlobalAveragePool", [b.qdq(c, "c") if pool_quantized else c], "p", name="gap")
    a = b.node("Conv", [b.qdq(pooled, "p"), b.weight("w2", (4, 4, 1, 1))], "a0", name="conv_se")
    a = b.node("HardSigmoid", [a], "a", name="hsig")
    m = b.node("Mul", [c, a], "m", name="mul")
    y = b.node("Add", [c, m], "y" if not conv_reader else "s", name="add")
    if conv_reader:
        c3 = b.node("Conv", [b.qdq(c, "c3"), b.weight("w3", (4, 4, 1, 1))], "c3", name="conv3")
        b.node("Add", [y, c3], "y", name="sum")


def test_weighted_output_quantized_only_for_a_pool_while_read_in_float():
    findings = check_model(simple(lambda b: attention_block(b, pool_quantized=True))).findings
    assert {(f.code, f.node) for f in findings} == {("weighted-output-quantized", "conv")}
    assert ("also used by Mul 'mul', Add 'add', so the Q runs alone for GlobalAveragePool 'gap' "
            "only") in findings[0].message
    assert found(simple(lambda b: attention_block(b, pool_quantized=False))) == set()
    # a conv reading the output needs its Q anyway
    assert found(simple(lambda b: attention_block(b, pool_quantized=True, conv_reader=True))) == set()


@pytest.mark.parametrize("op", ["Softmax", "Sigmoid", "LayerNormalization", "Mul"])
def test_dequantize_feeding_an_op_without_int8(op):
    def build(b):
        x = b.qdq("x", "x")
        if op == "LayerNormalization":
            b.node(op, [x, b.const("g", np.ones(6, np.float32))], "y", name="op")
        elif op == "Mul":
            b.node(op, [x, x], "y", name="op")
        else:
            b.node(op, [x], "y", name="op")
    findings = check_model(simple(build, opset=17)).findings
    assert {(f.code, f.node) for f in findings} == {("dq-unfused-consumer", "x_dq")}
    assert f"{op} 'op'" in findings[0].message


def test_dequantize_seen_through_reshape_and_relu():
    def build(b):
        flat = b.node("Flatten", [b.qdq("x", "x")], "flat")
        b.node("Softmax", [b.node("Relu", [flat], "relu")], "y", name="softmax")
    assert found(simple(build)) == {("dq-unfused-consumer", "x_dq")}


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


@pytest.mark.parametrize("quantize_input", [True, False])
def test_partially_quantized_weighted_op(quantize_input):
    def build(b):
        x = b.qdq("x", "x") if quantize_input else "x"
        w = b.const("wf", np.ones((2, 4, 1, 1), np.float32)) if quantize_input else b.weight("w", (2, 4, 1, 1))
        b.node("Conv", [x, w], "y", name="conv")
    findings = check_model(simple(build)).findings
    assert {(f.code, f.node) for f in findings} == {("partially-quantized", "conv")}
    assert ("weight 'wf'" in findings[0].message) == quantize_input


def test_concat_inputs_with_different_scales():
    findings = check_model(clean_model(branch_scale=0.2)).findings
    assert {(f.code, f.node) for f in findings} == {("concat-scale-mismatch", "cat")}
    assert "0.1 from 'r2_dq'" in findings[0].message and "0.2 from 'r3_dq'" in findings[0].message


def test_concat_with_an_unquantized_input():
    def build(b):
        b.node("Concat", [b.qdq("x", "x"), "x"], "y", name="cat", axis=1)
    findings = check_model(simple(build)).findings
    assert {(f.code, f.node) for f in findings} == {("concat-scale-mismatch", "cat")}
    assert "not quantized" in findings[0].message


def test_quantize_and_dequantize_with_different_scales():
    def build(b):
        b.node("Conv", [b.qdq("x", "x", scale=0.1, dq_scale=0.2), b.weight("w", (2, 4, 1, 1))], "y", name="conv")
    findings = check_model(simple(build)).findings
    assert {(f.code, f.node) for f in findings} == {("qdq-pair-mismatch", "x_dq")}
    assert "scale 0.1 vs 0.2" in findings[0].message


def test_ignore_and_unknown_codes():
    model = clean_model(act_zp=3, relu_before_q=False)
    assert found(model, ignore=["zero-point-nonzero"]) == {("weighted-output-quantized", "c1")}
    with pytest.raises(UsageError, match="unknown check code 'no-such-code'"):
        check_model(model, ignore=["no-such-code"])


def test_findings_sorted_errors_first_and_report_dict():
    report = check_model(clean_model(act_zp=3, relu_before_q=False))
    assert [f.severity for f in report.findings] == ["error", "error", "warning"]
    data = report.to_dict(strict=False)
    assert data["counts"] == {"error": 2, "warning": 1, "info": 0}
    assert data["passed"] is False
    assert data["findings"][2] == {
        "severity": "warning", "code": "weighted-output-quantized", "node": "c1",
        "message": report.findings[2].message}
    assert report.summary() == "check FAILED: 2 errors, 1 warning, 0 info in 20 Q/DQ nodes"


def test_every_code_has_a_known_severity():
    assert {severity for severity, _ in CODES.values()} <= {"error", "warning", "info"}


def test_input_model_is_not_modified():
    model = clean_model(act_zp=3)
    before = model.SerializeToString()
    check_model(model)
    assert model.SerializeToString() == before


# -- onnxruntime.quantization output -----------------------------------------------------------

def _ort_quantize(tmp_path, **options) -> onnx.ModelProto:
    quantization = pytest.importorskip("onnxruntime.quantization")
    from tests.tiny_models import conv_relu_gemm, save

    source = tmp_path / "fp32.onnx"
    save(conv_relu_gemm(batch=1), source)
    rng = np.random.default_rng(0)
    batches = iter([{"x": rng.normal(size=(1, 2, 6, 6)).astype(np.float32)} for _ in range(4)])

    class Reader(quantization.CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    target = tmp_path / "int8.onnx"
    quantization.quantize_static(str(source), str(target), Reader(),
                                 quant_format=quantization.QuantFormat.QDQ, **options)
    return onnx.load(str(target))


def test_onnxruntime_default_asymmetric_quantization_fails(tmp_path):
    quantization = pytest.importorskip("onnxruntime.quantization")
    model = _ort_quantize(tmp_path, activation_type=quantization.QuantType.QUInt8,
                          weight_type=quantization.QuantType.QUInt8)
    report = check_model(model)
    codes = {f.code for f in report.findings if f.severity == "error"}
    assert {"zero-point-nonzero", "qdq-dtype-unsupported"} <= codes
    activation_qs = [n.name for n in model.graph.node if n.op_type == "QuantizeLinear"]
    flagged = {f.node for f in report.findings if f.code == "qdq-dtype-unsupported"}
    assert set(activation_qs) <= flagged
    assert not report.passed()


def test_onnxruntime_defaults_are_asymmetric(tmp_path):
    report = check_model(_ort_quantize(tmp_path))
    assert "zero-point-nonzero" in {f.code for f in report.findings if f.severity == "error"}
    assert not report.passed()


def test_onnxruntime_symmetric_int8_passes(tmp_path):
    quantization = pytest.importorskip("onnxruntime.quantization")
    model = _ort_quantize(
        tmp_path, activation_type=quantization.QuantType.QInt8, weight_type=quantization.QuantType.QInt8,
        per_channel=True,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    report = check_model(model)
    assert report.count("error") == 0, [f.format() for f in report.findings]
    assert report.passed()
