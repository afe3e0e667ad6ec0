"""Bias correction in quantize_model: shifts against slow reference loops, the exact graph after
correction, the effect on onnxruntime outputs, and the cases that must change nothing."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from qtool.backends.onnxruntime.runner import OnnxRunner
from qtool.io.model import MIN_OPSET, ensure_opset
from qtool.placement import make_plan
from qtool.quantize.api import placement_options, quantize_model
from qtool.quantize.bias import conv_shift, matmul_shift, weight_error
from qtool.quantize.insert import insert_qdq
from qtool.quantize.options import QuantizeOptions
from tests.helpers.onnx_graphs import build, check_and_run, init, value

# ---------------------------------------------------------------------------------------------
# Slow references


def ref_weight_error(w: np.ndarray, axis: int | None) -> np.ndarray:
    """W - DQ(Q(W)) channel by channel: scale = fp32(max|w| / 127), half-to-even, clamp, fp32 DQ."""
    w = np.asarray(w, np.float32)
    moved = w[np.newaxis] if axis is None else np.moveaxis(w, axis, 0)
    out = np.empty(moved.shape, np.float64)
    for c in range(moved.shape[0]):
        channel = moved[c]
        scale = np.float32(float(np.abs(channel).max()) / 127.0)
        scale = max(scale, np.float32(1e-12))
        q = np.clip(np.rint(channel / scale), -128, 127)
        out[c] = channel.astype(np.float64) - (q.astype(np.float32) * scale).astype(np.float64)
    return out[0] if axis is None else np.moveaxis(out, 0, axis)


def ref_conv_shift(dw: np.ndarray, mean: np.ndarray, group: int) -> np.ndarray:
    out_channels, per_group_in = dw.shape[0], dw.shape[1]
    per_group_out = out_channels // group
    kernel = dw.reshape(out_channels, per_group_in, -1)
    shift = np.zeros(out_channels)
    for o in range(out_channels):
        for c in range(per_group_in):
            for k in range(kernel.shape[2]):
                shift[o] += kernel[o, c, k] * mean[(o // per_group_out) * per_group_in + c]
    return shift


def ref_gemm_shift(db: np.ndarray, mean: np.ndarray, trans_b: int, alpha: float) -> np.ndarray:
    """alpha * sum_k mean[k] * dB'[k, n] with B' = B or B^T."""
    depth, width = (db.shape[1], db.shape[0]) if trans_b else db.shape
    shift = np.zeros(width)
    for n in range(width):
        for k in range(depth):
            shift[n] += mean[k] * (db[n, k] if trans_b else db[k, n])
    return alpha * shift


def corrected(original: np.ndarray, shift: np.ndarray, divisor: float = 1.0) -> np.ndarray:
    """The bias the rule writes: float64 sum, broadcast against [N], one rounding to float32."""
    total = np.asarray(original, np.float64) + shift / divisor
    shape = np.broadcast_shapes(np.shape(original), shift.shape)
    return np.broadcast_to(total, shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Helpers


def inits(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def node(model, name) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def attrs(n) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in n.attribute}


def means_for(rng, length, axis, offset=2.0):
    return (axis, rng.normal(loc=offset, size=length))


def pre_change(model, amax, options=None) -> onnx.ModelProto:
    """What quantize_model produced before bias correction existed: plan + insertion."""
    work = ensure_opset(copy.deepcopy(model), MIN_OPSET)
    plan = make_plan(work, amax, placement_options((options or QuantizeOptions()).validate()))
    insert_qdq(work, plan, (options or QuantizeOptions()).weights)
    return work


def rng_weight(rng, shape):
    # per-channel magnitudes over decades, so rounding errors differ a lot between channels
    scales = 10.0 ** rng.uniform(-2, 1, size=(shape[0],) + (1,) * (len(shape) - 1))
    return (rng.normal(size=shape) * scales).astype(np.float32)


def conv_model(group, out_channels, in_channels, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    w = rng_weight(rng, (out_channels, in_channels // group, 3, 3))
    b = rng.normal(size=out_channels).astype(np.float32)
    inputs = ["x", "w", "b"] if bias else ["x", "w"]
    nodes = [helper.make_node("Conv", inputs, ["y"], name="conv", group=group, pads=[1, 1, 1, 1])]
    initializers = [init("w", w)] + ([init("b", b)] if bias else [])
    return build(nodes, [value("x", [1, in_channels, 5, 5])],
                 [value("y", [1, out_channels, 5, 5])], initializers), w, b


# ---------------------------------------------------------------------------------------------
# Shifts against the reference loops


def test_weight_error_matches_reference_per_channel_and_per_tensor():
    rng = np.random.default_rng(1)
    w = rng_weight(rng, (5, 3, 2, 2))
    for axis in (0, None):
        np.testing.assert_array_equal(weight_error(w, axis), ref_weight_error(w, axis))
    np.testing.assert_array_equal(weight_error(w.reshape(5, 12).T, 1),
                                  ref_weight_error(w.reshape(5, 12).T, 1))


@pytest.mark.parametrize("group,out_channels,in_channels", [(1, 6, 4), (2, 6, 4), (4, 4, 4)],
                         ids=["group1", "grouped", "depthwise"])
def test_conv_shift(group, out_channels, in_channels):
    model, w, b = conv_model(group, out_channels, in_channels)
    rng = np.random.default_rng(2)
    means = {"x": means_for(rng, in_channels, 1)}
    quantized, summary = quantize_model(model, {"x": 3.0}, channel_means=means)
    dw = ref_weight_error(w, 0)
    shift = ref_conv_shift(dw, means["x"][1], group)
    np.testing.assert_allclose(conv_shift(dw, means["x"][1], group), shift, rtol=1e-12, atol=1e-15)
    assert np.abs(shift).max() > 1e-4  # a real correction, not a no-op
    np.testing.assert_array_equal(inits(quantized)["b"], corrected(b, shift))
    assert summary.bias_correction.status == "applied"
    assert summary.bias_correction.corrected == ["conv"] and summary.bias_correction.skipped == []


def test_conv_without_bias_gets_one():
    model, w, _ = conv_model(4, 4, 4, bias=False)
    means = {"x": means_for(np.random.default_rng(3), 4, 1)}
    quantized, _ = quantize_model(model, {"x": 3.0}, channel_means=means)
    conv = node(quantized, "conv")
    assert len(conv.input) == 3 and conv.input[2] == "conv_bias"
    shift = ref_conv_shift(ref_weight_error(w, 0), means["x"][1], 4)
    np.testing.assert_array_equal(inits(quantized)["conv_bias"], shift.astype(np.float32))
    check_and_run(quantized, {"x": np.ones((1, 4, 5, 5), np.float32)})


def test_per_tensor_weights_use_the_per_tensor_error():
    model, w, b = conv_model(1, 6, 4)
    means = {"x": means_for(np.random.default_rng(4), 4, 1)}
    quantized, _ = quantize_model(model, {"x": 3.0}, QuantizeOptions(per_tensor_weights=True),
                                  channel_means=means)
    shift = ref_conv_shift(ref_weight_error(w, None), means["x"][1], 1)
    np.testing.assert_array_equal(inits(quantized)["b"], corrected(b, shift))


def gemm_model(trans_a, trans_b, alpha, beta, c_shape, m=3, k=5, n=4, seed=0):
    rng = np.random.default_rng(seed)
    b = rng_weight(rng, (n, k) if trans_b else (k, n))
    if trans_b == 0:
        b = np.ascontiguousarray(rng_weight(rng, (n, k)).T)  # channel magnitudes along N
    inputs = ["a", "w"]
    initializers = [init("w", b)]
    c = None
    if c_shape is not None:
        c = rng.normal(size=c_shape).astype(np.float32)
        inputs.append("c")
        initializers.append(init("c", c))
    extra = {}
    if alpha is not None:
        extra["alpha"] = alpha
    if beta is not None:
        extra["beta"] = beta
    nodes = [helper.make_node("Gemm", inputs, ["y"], name="fc", transA=trans_a, transB=trans_b,
                              **extra)]
    model = build(nodes, [value("a", [k, m] if trans_a else [m, k])], [value("y", [m, n])],
                  initializers)
    return model, b, c


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("alpha,beta,c_shape", [
    (None, None, (4,)), (0.5, 2.0, (4,)), (1.5, -0.25, (1, 4)), (2.0, 0.5, (3, 4)),
    (1.0, 1.0, ()), (0.75, None, None), (1.0, 0.5, None)])
def test_gemm_shift(trans_a, trans_b, alpha, beta, c_shape):
    model, b, c = gemm_model(trans_a, trans_b, alpha, beta, c_shape)
    rng = np.random.default_rng(5)
    means = {"a": means_for(rng, 5, 0 if trans_a else 1)}
    quantized, summary = quantize_model(model, {"a": 3.0}, channel_means=means)
    assert summary.bias_correction.corrected == ["fc"]
    shift = ref_gemm_shift(ref_weight_error(b, 0 if trans_b else 1), means["a"][1], trans_b,
                           1.0 if alpha is None else alpha)
    db = ref_weight_error(b, 0 if trans_b else 1)
    np.testing.assert_allclose((1.0 if alpha is None else alpha) * matmul_shift(
        db.T if trans_b else db, means["a"][1]), shift, rtol=1e-12, atol=1e-15)
    assert np.abs(shift).max() > 1e-4
    divisor = 1.0 if beta is None else beta
    fc = node(quantized, "fc")
    if c is None:
        assert fc.input[2] == "fc_bias"
        np.testing.assert_array_equal(inits(quantized)["fc_bias"],
                                      corrected(np.zeros(4, np.float32), shift, divisor))
    else:
        expected = corrected(c, shift, divisor)
        assert expected.shape == np.broadcast_shapes(c.shape, (4,))  # [] -> [4], [1,4] and [3,4] kept
        assert fc.input[2] == "c"
        np.testing.assert_array_equal(inits(quantized)["c"], expected)
    assert attrs(fc).get("beta") == beta  # untouched
    check_and_run(quantized, {"a": np.ones((5, 3) if trans_a else (3, 5), np.float32)})


@pytest.mark.parametrize("c_shape", [None, (1, 4)])
def test_gemm_beta_zero_becomes_one_with_the_shift_as_c(c_shape):
    model, b, c = gemm_model(0, 1, 1.5, 0.0, c_shape)
    means = {"a": means_for(np.random.default_rng(6), 5, 1)}
    quantized, summary = quantize_model(model, {"a": 3.0}, channel_means=means)
    assert summary.bias_correction.corrected == ["fc"]
    shift = ref_gemm_shift(ref_weight_error(b, 0), means["a"][1], 1, 1.5)
    fc = node(quantized, "fc")
    assert attrs(fc)["beta"] == 1.0
    name = "fc_bias" if c is None else "c"
    shape = (4,) if c is None else (1, 4)
    np.testing.assert_array_equal(inits(quantized)[name], np.broadcast_to(shift, shape).astype(np.float32))


def test_gemm_beta_zero_with_infinite_c_is_skipped():
    model, _, _ = gemm_model(0, 1, 1.0, 0.0, (4,))
    model.graph.initializer[1].CopyFrom(init("c", np.array([1, np.inf, 0, 2], np.float32)))
    means = {"a": means_for(np.random.default_rng(6), 5, 1)}
    quantized, summary = quantize_model(model, {"a": 3.0}, channel_means=means)
    assert [(s.node, s.reason) for s in summary.bias_correction.skipped] == [("fc", "unsupported_bias")]
    assert quantized.SerializeToString() == pre_change(model, {"a": 3.0}).SerializeToString()


def test_gemm_with_runtime_c_is_skipped():
    rng = np.random.default_rng(7)
    w = rng_weight(rng, (4, 5))
    model = build([helper.make_node("Gemm", ["a", "w", "c"], ["y"], name="fc", transB=1)],
                  [value("a", [3, 5]), value("c", [4])], [value("y", [3, 4])], [init("w", w)])
    means = {"a": means_for(rng, 5, 1)}
    quantized, summary = quantize_model(model, {"a": 3.0}, channel_means=means)
    (skip,) = summary.bias_correction.skipped
    assert (skip.node, skip.reason) == ("fc", "no_constant_bias") and "'c'" in skip.detail
    assert quantized.SerializeToString() == pre_change(model, {"a": 3.0}).SerializeToString()


def matmul_model(add=True, c_shape=(4,), seed=0):
    rng = np.random.default_rng(seed)
    w = np.ascontiguousarray(rng_weight(rng, (4, 5)).T)  # [K=5, N=4]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm")]
    initializers = [init("w", w)]
    c = None
    output = "mm"
    if add:
        c = rng.normal(size=c_shape).astype(np.float32)
        nodes.append(helper.make_node("Add", ["mm", "c"], ["y"], name="add"))
        initializers.append(init("c", c))
        output = "y"
    return build(nodes, [value("x", [2, 3, 5])], [value(output, [2, 3, 4])], initializers), w, c


@pytest.mark.parametrize("c_shape", [(4,), (1, 1, 4), (), (3, 1), (2, 3, 4)])
def test_matmul_add_shift(c_shape):
    model, w, c = matmul_model(c_shape=c_shape)
    means = {"x": means_for(np.random.default_rng(8), 5, -1)}
    quantized, summary = quantize_model(model, {"x": 3.0}, channel_means=means)
    assert summary.bias_correction.corrected == ["mm"]
    shift = ref_gemm_shift(ref_weight_error(w, 1), means["x"][1], 0, 1.0)
    assert np.abs(shift).max() > 1e-4
    np.testing.assert_array_equal(inits(quantized)["c"], corrected(c, shift))
    check_and_run(quantized, {"x": np.ones((2, 3, 5), np.float32)})


def test_matmul_alone_is_skipped():
    model, _, _ = matmul_model(add=False)
    means = {"x": means_for(np.random.default_rng(8), 5, -1)}
    quantized, summary = quantize_model(model, {"x": 3.0}, channel_means=means)
    assert summary.bias_correction.corrected == []
    assert [(s.node, s.reason) for s in summary.bias_correction.skipped] == [("mm", "no_constant_bias")]
    assert quantized.SerializeToString() == pre_change(model, {"x": 3.0}).SerializeToString()


def test_matmul_into_add_of_a_non_broadcasting_constant_is_skipped():
    # Only an invalid model can hold one (a valid Add constant ends in 1 or N): refused, not broken.
    model, _, _ = matmul_model(c_shape=(4,))
    model.graph.initializer[1].CopyFrom(init("c", np.ones(3, np.float32)))
    means = {"x": means_for(np.random.default_rng(8), 5, -1)}
    quantized, summary = quantize_model(model, {"x": 3.0}, channel_means=means)
    assert [(s.node, s.reason) for s in summary.bias_correction.skipped] == [("mm", "unsupported_bias")]
    assert quantized.SerializeToString() == pre_change(model, {"x": 3.0}).SerializeToString()


def test_conv_transpose_is_skipped_with_a_reason():
    rng = np.random.default_rng(9)
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up")]
    model = build(nodes, [value("x", [1, 2, 4, 4])], [value("y", [1, 3, 6, 6])],
                  [init("w", rng.normal(size=(2, 3, 3, 3)).astype(np.float32)),
                   init("b", np.zeros(3, np.float32))])
    quantized, summary = quantize_model(model, {"x": 3.0}, channel_means={"x": (1, np.ones(2))})
    assert [(s.node, s.reason) for s in summary.bias_correction.skipped] == [("up", "unsupported_op")]
    assert quantized.SerializeToString() == pre_change(model, {"x": 3.0}).SerializeToString()


# ---------------------------------------------------------------------------------------------
# The exact graph after correction


def graph_without_values(model, changed: set[str]) -> tuple:
    """Nodes (serialized) and initializers, with the values of `changed` initializers dropped."""
    nodes = [n.SerializeToString() for n in model.graph.node]
    rest = [(t.name, t.data_type, tuple(t.dims),
             None if t.name in changed else numpy_helper.to_array(t).tobytes())
            for t in model.graph.initializer]
    return nodes, rest, [v.SerializeToString() for v in model.graph.input]


def two_convs(shared_bias: bool, seed=0):
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2", "b1" if shared_bias else "b2"], ["y"], name="conv2")]
    initializers = [init("w1", rng_weight(rng, (4, 3, 1, 1))), init("b1", rng.normal(size=4).astype(np.float32)),
                    init("w2", rng_weight(rng, (4, 4, 1, 1)))]
    if not shared_bias:
        initializers.append(init("b2", rng.normal(size=4).astype(np.float32)))
    return build(nodes, [value("x", [1, 3, 2, 2])], [value("y", [1, 4, 2, 2])], initializers)


def quantize_two_convs(shared_bias: bool, seed: int):
    """two_convs quantized with bias correction: (model, means, amax, quantized), after checking
    that both convs were corrected and the input model is untouched."""
    model = two_convs(shared_bias=shared_bias)
    before = model.SerializeToString()
    rng = np.random.default_rng(seed)
    means = {"x": means_for(rng, 3, 1), "r": means_for(rng, 4, 1)}
    amax = {"x": 3.0, "r": 4.0}
    quantized, summary = quantize_model(model, amax, channel_means=means)
    assert model.SerializeToString() == before
    assert summary.bias_correction.corrected == ["conv1", "conv2"]
    return model, means, amax, quantized


def test_only_bias_values_change_and_the_input_is_untouched():
    model, _, amax, quantized = quantize_two_convs(shared_bias=False, seed=10)
    reference = pre_change(model, amax)
    assert graph_without_values(quantized, {"b1", "b2"}) == graph_without_values(reference, {"b1", "b2"})
    for name in ("b1", "b2"):
        assert not np.array_equal(inits(quantized)[name], inits(reference)[name])


def test_shared_bias_gets_a_new_initializer_for_all_but_the_last_user():
    model, means, amax, quantized = quantize_two_convs(shared_bias=True, seed=11)
    values = inits(model)
    b1 = values["b1"]
    shift1 = ref_conv_shift(ref_weight_error(values["w1"], 0), means["x"][1], 1)
    shift2 = ref_conv_shift(ref_weight_error(values["w2"], 0), means["r"][1], 1)
    assert node(quantized, "conv1").input[2] == "b1_corrected"
    assert node(quantized, "conv2").input[2] == "b1"
    out = inits(quantized)
    np.testing.assert_array_equal(out["b1_corrected"], corrected(b1, shift1))
    np.testing.assert_array_equal(out["b1"], corrected(b1, shift2))
    reference = pre_change(model, amax)
    got_nodes, got_inits, _ = graph_without_values(quantized, {"b1", "b1_corrected"})
    ref_nodes, ref_inits, _ = graph_without_values(reference, {"b1"})
    assert sorted(got_inits) == sorted(ref_inits + [("b1_corrected", onnx.TensorProto.FLOAT, (4,), None)])
    conv1 = node(quantized, "conv1")
    ref_conv1 = copy.deepcopy(node(reference, "conv1"))
    ref_conv1.input[2] = "b1_corrected"
    assert conv1 == ref_conv1
    assert [n for n in got_nodes if n != conv1.SerializeToString()] == [
        n for n in ref_nodes if n != node(reference, "conv1").SerializeToString()]


def test_bias_read_by_a_graph_output_is_copied():
    model, w, b = conv_model(1, 6, 4)
    model.graph.output.append(value("b", [6]))
    means = {"x": means_for(np.random.default_rng(12), 4, 1)}
    quantized, _ = quantize_model(model, {"x": 3.0}, channel_means=means)
    assert node(quantized, "conv").input[2] == "b_corrected"
    np.testing.assert_array_equal(inits(quantized)["b"], b)
    shift = ref_conv_shift(ref_weight_error(w, 0), means["x"][1], 1)
    np.testing.assert_array_equal(inits(quantized)["b_corrected"], corrected(b, shift))


def test_constant_node_bias_and_old_ir_initializer_inputs():
    model, w, b = conv_model(1, 6, 4)
    # the bias as a Constant node
    model.graph.initializer.pop()
    model.graph.node.insert(0, helper.make_node("Constant", [], ["b"], name="bias_const",
                                                value=init("b", b)))
    means = {"x": means_for(np.random.default_rng(13), 4, 1)}
    quantized, summary = quantize_model(model, {"x": 3.0}, channel_means=means)
    assert summary.bias_correction.corrected == ["conv"]
    shift = ref_conv_shift(ref_weight_error(w, 0), means["x"][1], 1)
    const = node(quantized, "bias_const")
    np.testing.assert_array_equal(numpy_helper.to_array(attrs(const)["value"]), corrected(b, shift))
    check_and_run(quantized, {"x": np.ones((1, 4, 5, 5), np.float32)})

    # IR 3: initializers are graph inputs too; a new bias is declared as one
    old, w, _ = conv_model(2, 6, 4, bias=False)
    old.ir_version = 3
    old.graph.input.append(value("w", list(w.shape)))
    quantized, summary = quantize_model(old, {"x": 3.0},
                                        channel_means={"x": means_for(np.random.default_rng(14), 4, 1)})
    assert summary.bias_correction.corrected == ["conv"]
    assert "conv_bias" in {v.name for v in quantized.graph.input}
    check_and_run(quantized, {"x": np.ones((1, 4, 5, 5), np.float32)})


def test_constant_node_weight():
    model, w, b = conv_model(1, 6, 4)
    del model.graph.initializer[0]  # "w"
    model.graph.node.insert(0, helper.make_node("Constant", [], ["w"], name="weight_const",
                                                value=init("w", w)))
    means = {"x": means_for(np.random.default_rng(19), 4, 1)}
    quantized, summary = quantize_model(model, {"x": 3.0}, channel_means=means)
    assert summary.bias_correction.corrected == ["conv"]
    shift = ref_conv_shift(ref_weight_error(w, 0), means["x"][1], 1)
    np.testing.assert_array_equal(inits(quantized)["b"], corrected(b, shift))


def test_int8_weights_get_the_same_correction():
    model, _, _ = conv_model(2, 6, 4)
    means = {"x": means_for(np.random.default_rng(15), 4, 1)}
    fp32, _ = quantize_model(model, {"x": 3.0}, channel_means=means)
    int8, _ = quantize_model(model, {"x": 3.0}, QuantizeOptions(weights="int8"), channel_means=means)
    np.testing.assert_array_equal(inits(int8)["b"], inits(fp32)["b"])


# ---------------------------------------------------------------------------------------------
# Nothing changes without usable means


def test_no_means_mismatch_or_disabled_give_the_output_of_before():
    model, _, _ = conv_model(2, 6, 4)
    amax = {"x": 3.0}
    reference = pre_change(model, amax).SerializeToString()
    rng = np.random.default_rng(16)
    good = {"x": means_for(rng, 4, 1)}

    out, summary = quantize_model(model, amax)
    assert out.SerializeToString() == reference and summary.bias_correction.status == "no_channel_means"
    out, summary = quantize_model(model, amax, QuantizeOptions(bias_correction=False), channel_means=good)
    assert out.SerializeToString() == reference and summary.bias_correction.status == "disabled"
    assert summary.to_dict()["bias_correction"]["corrected"] == 0
    cases = {
        "wrong axis": ({"x": (0, good["x"][1])}, "channel_means_mismatch"),
        "wrong length": ({"x": (1, np.ones(3))}, "channel_means_mismatch"),
        "2-D mean": ({"x": (1, np.ones((2, 2)))}, "channel_means_mismatch"),
        "other tensor": ({"y": good["x"]}, "no_channel_means"),
        "not finite": ({"x": (1, np.array([1.0, np.nan, 0.0, 1.0]))}, "not_finite"),
    }
    for label, (means, reason) in cases.items():
        out, summary = quantize_model(model, amax, channel_means=means)
        assert out.SerializeToString() == reference, label
        assert summary.bias_correction.status == "applied"
        assert [(s.node, s.reason) for s in summary.bias_correction.skipped] == [("conv", reason)], label


def test_bias_correction_option_is_validated_and_recorded():
    from qtool.errors import UsageError

    with pytest.raises(UsageError, match="bias_correction"):
        QuantizeOptions(bias_correction="yes").validate()
    assert QuantizeOptions().to_dict()["bias_correction"] is True


def test_summary_text_lists_corrected_and_skipped():
    model = two_convs(shared_bias=False)
    means = {"x": means_for(np.random.default_rng(17), 3, 1), "r": (1, np.ones(5))}
    _, summary = quantize_model(model, {"x": 3.0, "r": 4.0}, channel_means=means)
    text = summary.render_text()
    assert "bias-corrected 1 nodes; not corrected 1: channel_means_mismatch 1" in text
    assert "conv2 (Conv): channel_means_mismatch" in summary.render_text(verbose=True)
    data = summary.to_dict()["bias_correction"]
    assert data["corrected"] == 1 and data["corrected_nodes"] == ["conv1"]
    assert data["skipped_by_reason"] == {"channel_means_mismatch": 1}
    _, summary = quantize_model(model, {"x": 3.0, "r": 4.0})
    assert "bias correction: no channel means" in summary.render_text()


# ---------------------------------------------------------------------------------------------
# The effect: mean output error of the QDQ model, measured with onnxruntime


def branches_model(seed=0):
    """Three independent branches: Conv(x), Gemm(a), MatMul(v)+Add, with wide-range weights."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["cy"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Gemm", ["a", "gw", "gb"], ["gy"], name="fc", transB=1),
             helper.make_node("MatMul", ["v", "mw"], ["mm"], name="mm"),
             helper.make_node("Add", ["mm", "mb"], ["my"], name="add")]
    initializers = [init("cw", rng_weight(rng, (8, 6, 3, 3))), init("cb", rng.normal(size=8).astype(np.float32)),
                    init("gw", rng_weight(rng, (8, 16))), init("gb", rng.normal(size=8).astype(np.float32)),
                    init("mw", np.ascontiguousarray(rng_weight(rng, (8, 16)).T)),
                    init("mb", rng.normal(size=8).astype(np.float32))]
    return build(nodes, [value("x", ["N", 6, 6, 6]), value("a", ["N", 16]), value("v", ["N", 5, 16])],
                 [value("cy", ["N", 8, 6, 6]), value("gy", ["N", 8]), value("my", ["N", 5, 8])],
                 initializers)


@pytest.mark.parametrize("per_tensor", [True, False], ids=["per-tensor", "per-channel"])
def test_correction_brings_the_mean_output_closer_to_fp32(per_tensor):
    model = branches_model()
    rng = np.random.default_rng(18)
    # a different non-zero mean per channel, as after a ReLU or a normalisation
    offsets = {"x": rng.uniform(1, 4, size=(1, 6, 1, 1)), "a": rng.uniform(1, 4, size=(1, 16)),
               "v": rng.uniform(1, 4, size=(1, 1, 16))}
    shapes = {"x": (6, 6, 6), "a": (16,), "v": (5, 16)}

    def sample(count):
        return {name: (rng.normal(size=(count,) + shapes[name]) + offsets[name]).astype(np.float32)
                for name in shapes}

    calib, held_out = sample(64), sample(64)
    means = {"x": (1, calib["x"].astype(np.float64).mean(axis=(0, 2, 3))),
             "a": (1, calib["a"].astype(np.float64).mean(axis=0)),
             "v": (-1, calib["v"].astype(np.float64).mean(axis=(0, 1)))}
    amax = {name: float(np.abs(data).max()) for name, data in calib.items()}
    options = QuantizeOptions(per_tensor_weights=per_tensor)
    plain, _ = quantize_model(model, amax, options)
    fixed, summary = quantize_model(model, amax, options, channel_means=means)
    assert summary.bias_correction.corrected == ["conv", "fc", "mm"]

    with OnnxRunner(model) as runner:
        ref = runner.run(held_out)
    with OnnxRunner(plain) as runner:
        before = runner.run(held_out)
    with OnnxRunner(fixed) as runner:
        after = runner.run(held_out)
    reduce = {"cy": (0, 2, 3), "gy": (0,), "my": (0, 1)}
    for name, axes in reduce.items():
        # interior pixels only for the conv: the rule ignores padding
        cut = (slice(None), slice(None), slice(1, -1), slice(1, -1)) if name == "cy" else ...
        err_before = (before[name][cut] - ref[name][cut]).astype(np.float64).mean(axis=axes)
        err_after = (after[name][cut] - ref[name][cut]).astype(np.float64).mean(axis=axes)
        rms_before = float(np.sqrt(np.mean(err_before ** 2)))
        rms_after = float(np.sqrt(np.mean(err_after ** 2)))
        # measured: 9x to 60x smaller
        assert rms_after < 0.2 * rms_before, (name, rms_before, rms_after)
