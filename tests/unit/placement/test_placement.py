"""Exact Q/DQ structure after `quantize_model` for each TensorRT placement rule."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from qtool.errors import QtoolError
from qtool.quantize.api import quantize_model
from qtool.quantize.options import QuantizeOptions
from qtool.quantize.scales import MIN_SCALE
from tests.helpers.onnx_graphs import (
    build,
    check_and_run,
    init,
    node_inputs,
    qdq_pairs,
    ref_scale,
    ref_weight_scales,
    value,
)
from tests.helpers.placement_models import (
    attention,
    concat_model,
    constant_node_conv,
    conv_bn_relu,
    conv_transpose,
    identity_residual,
    pooled_attention,
    pooling_model,
    three_convs,
    two_conv_residual,
    weights,
)

RNG = np.random.default_rng(7)


def assert_activation(pair, amax, consumers):
    assert pair["axis"] is None
    assert pair["scale"].shape == () and pair["scale"].dtype == np.float32
    assert pair["scale"] == ref_scale(amax)
    assert pair["zero_point"].shape == () and pair["zero_point"].dtype == np.int8
    assert pair["zero_point"] == 0
    assert pair["consumers"] == sorted(consumers)


def assert_weight(pair, w, axis, consumers):
    assert pair["axis"] == axis
    np.testing.assert_array_equal(pair["scale"], ref_weight_scales(w, axis))
    assert pair["scale"].dtype == np.float32
    assert pair["zero_point"].dtype == np.int8 and not pair["zero_point"].any()
    assert pair["zero_point"].shape == pair["scale"].shape
    assert pair["consumers"] == sorted(consumers)


def run_quantize(model, amax, **options):
    quantized, summary = quantize_model(model, amax, QuantizeOptions(**options))
    onnx.checker.check_model(quantized, full_check=True)
    return quantized, summary


# ---- weighted ops -------------------------------------------------------------------------


def test_conv_bn_relu_quantizes_conv_inputs_only():
    model, w = conv_bn_relu()
    quantized, summary = run_quantize(model, {"x": 2.5, "conv": 9.0, "bn": 4.0})
    pairs = qdq_pairs(quantized)
    assert set(pairs) == {"x", "w"}  # no Q/DQ on conv output, BN or ReLU (no fusion simulated)
    assert_activation(pairs["x"], 2.5, [("conv", 0)])
    assert_weight(pairs["w"], w, 0, [("conv", 1)])
    assert node_inputs(quantized, "conv")[2] == "b"  # bias stays FP32
    assert node_inputs(quantized, "bn")[0] == "conv"
    assert summary.quantized == {"Conv": 1}
    assert summary.activation_pairs == 1 and summary.weights_per_channel == 1
    assert [op.op_type for op in quantized.graph.node] == [
        "QuantizeLinear", "DequantizeLinear", "QuantizeLinear", "DequantizeLinear",
        "Conv", "BatchNormalization", "Relu"]
    names = [op.name for op in quantized.graph.node[:4]]
    assert names == ["x_QuantizeLinear", "x_DequantizeLinear", "w_QuantizeLinear", "w_DequantizeLinear"]
    check_and_run(quantized, {"x": RNG.normal(size=(1, 3, 6, 6)).astype(np.float32)})


def test_gemm_weight_axis_follows_trans_b():
    w0, w1 = weights(8, 5), weights(3, 5)  # transB=0: [K, N] -> axis 1; transB=1: [N, K] -> axis 0
    nodes = [
        helper.make_node("Gemm", ["x", "w0", "c0"], ["h"], name="fc0"),
        helper.make_node("Gemm", ["h", "w1"], ["y"], name="fc1", transB=1),
    ]
    model = build(nodes, [value("x", [2, 8])], [value("y", [2, 3])],
                  [init("w0", w0), init("c0", weights(5)), init("w1", w1)])
    quantized, summary = run_quantize(model, {"x": 1.0, "h": 3.0})
    pairs = qdq_pairs(quantized)
    assert set(pairs) == {"x", "h", "w0", "w1"}
    assert_weight(pairs["w0"], w0, 1, [("fc0", 1)])
    assert_weight(pairs["w1"], w1, 0, [("fc1", 1)])
    assert_activation(pairs["h"], 3.0, [("fc1", 0)])
    assert node_inputs(quantized, "fc0")[2] == "c0"
    assert summary.quantized == {"Gemm": 2}
    check_and_run(quantized, {"x": weights(2, 8)})


def test_gemm_with_activation_b_quantizes_both_per_tensor():
    nodes = [helper.make_node("Gemm", ["a", "b"], ["y"], name="fc", transB=1)]
    model = build(nodes, [value("a", [2, 4]), value("b", [3, 4])], [value("y", [2, 3])])
    pairs = qdq_pairs(run_quantize(model, {"a": 1.0, "b": 2.0})[0])
    assert_activation(pairs["a"], 1.0, [("fc", 0)])
    assert_activation(pairs["b"], 2.0, [("fc", 1)])


ATTENTION_AMAX = {"x": 3.0, "q": 5.0, "k": 6.0, "kt": 6.0, "v": 4.0, "scores": 30.0, "probs": 1.0}


def test_attention_quantizes_both_activation_matmul_inputs():
    model, (wq, wk, wv) = attention()
    quantized, summary = run_quantize(model, ATTENTION_AMAX)
    pairs = qdq_pairs(quantized)
    assert set(pairs) == {"x", "wq", "wk", "wv", "q", "kt", "probs", "v"}
    assert_activation(pairs["x"], 3.0, [("q_proj", 0), ("k_proj", 0), ("v_proj", 0)])  # one shared pair
    assert_activation(pairs["q"], 5.0, [("qk", 0)])
    assert_activation(pairs["kt"], 6.0, [("qk", 1)])
    assert_activation(pairs["probs"], 1.0, [("pv", 0)])
    assert_activation(pairs["v"], 4.0, [("pv", 1)])
    for name, w in (("wq", wq), ("wk", wk), ("wv", wv)):
        assert_weight(pairs[name], w, 1, [(name.replace("w", "") + "_proj", 1)])
    assert node_inputs(quantized, "softmax") == ["scores"]  # MatMul outputs stay unquantized
    assert summary.quantized == {"MatMul": 5}


def test_matmul_higher_rank_and_vector_weights():
    w3, w1 = weights(2, 4, 3), weights(3)
    nodes = [helper.make_node("MatMul", ["x", "w3"], ["h"], name="batched"),
             helper.make_node("MatMul", ["h", "w1"], ["y"], name="vector")]
    model = build(nodes, [value("x", [2, 5, 4])], [value("y", [2, 5])], [init("w3", w3), init("w1", w1)])
    quantized, summary = run_quantize(model, {"x": 1.0, "h": 2.0})
    pairs = qdq_pairs(quantized)
    assert_weight(pairs["w3"], w3, None, [("batched", 1)])  # batched [..., K, N]: per tensor
    assert_weight(pairs["w1"], w1, None, [("vector", 1)])
    assert [(f.tensor, f.reason) for f in summary.weight_fallbacks] == [
        ("w3", "3-D MatMul operand: per-channel scales need a 2-D one"),
        ("w1", "1-D MatMul operand has no output-channel axis")]
    check_and_run(quantized, {"x": weights(2, 5, 4)})


def test_conv_transpose_axis_and_fallbacks():
    model, w = conv_transpose(group=1)
    quantized, summary = run_quantize(model, {"x": 1.5})
    assert_weight(qdq_pairs(quantized)["w"], w, 1, [("deconv", 1)])
    assert summary.weight_fallbacks == []
    check_and_run(quantized, {"x": weights(1, 4, 5, 5)})

    forced, summary = run_quantize(model, {"x": 1.5}, conv_transpose_per_tensor=True)
    assert_weight(qdq_pairs(forced)["w"], w, None, [("deconv", 1)])
    assert summary.weight_fallbacks == [] and summary.weights_per_tensor == 1

    grouped, w2 = conv_transpose(group=2)
    quantized, summary = run_quantize(grouped, {"x": 1.5})
    assert_weight(qdq_pairs(quantized)["w"], w2, None, [("deconv", 1)])
    assert [f.tensor for f in summary.weight_fallbacks] == ["w"]
    assert "grouped ConvTranspose" in summary.weight_fallbacks[0].reason
    check_and_run(quantized, {"x": weights(1, 4, 5, 5)})


def test_per_tensor_weights_option():
    model, w = conv_bn_relu()
    quantized, summary = run_quantize(model, {"x": 2.5}, per_tensor_weights=True)
    assert_weight(qdq_pairs(quantized)["w"], w, None, [("conv", 1)])
    assert summary.weights_per_tensor == 1 and summary.weights_per_channel == 0
    assert summary.weight_fallbacks == []


def test_weight_shared_by_ops_with_different_axes_gets_one_per_tensor_pair():
    w = weights(4, 4)  # Gemm transB=1 wants axis 0, MatMul wants axis 1
    nodes = [helper.make_node("Gemm", ["x", "w"], ["a"], name="fc", transB=1),
             helper.make_node("MatMul", ["a", "w"], ["y"], name="mm")]
    model = build(nodes, [value("x", [2, 4])], [value("y", [2, 4])], [init("w", w)])
    quantized, summary = run_quantize(model, {"x": 1.0, "a": 2.0})
    assert_weight(qdq_pairs(quantized)["w"], w, None, [("fc", 1), ("mm", 1)])
    assert [f.tensor for f in summary.weight_fallbacks] == ["w"]


def test_all_zero_channel_gets_the_tiny_scale():
    w = weights(3, 2, 1, 1)
    w[1] = 0.0
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    model = build(nodes, [value("x", [1, 2, 2, 2])], [value("y", [1, 3, 2, 2])], [init("w", w)])
    scale = qdq_pairs(run_quantize(model, {"x": 1.0})[0])["w"]["scale"]
    assert scale[1] == MIN_SCALE and scale[0] == ref_weight_scales(w, 0)[0]
    zero_act = qdq_pairs(run_quantize(model, {"x": 0.0})[0])["x"]["scale"]
    assert zero_act == MIN_SCALE


# ---- residual adds ------------------------------------------------------------------------


RESIDUAL_AMAX = {"x": 1.0, "r": 2.0, "b2": 3.0, "b2r": 3.0, "c2": 3.5}


def test_identity_skip_quantized_so_add_fuses_into_conv():
    quantized, summary = run_quantize(identity_residual(), RESIDUAL_AMAX)
    pairs = qdq_pairs(quantized)
    assert set(pairs) == {"x", "w1", "r", "w2"}
    # one pair for r, shared by conv2 and the Add's residual input; the conv branch stays float
    assert_activation(pairs["r"], 2.0, [("add", 1), ("conv2", 0)])
    assert node_inputs(quantized, "add")[0] == "b2"
    assert summary.quantized == {"Conv": 2, "Add": 1}
    check_and_run(quantized, {"x": weights(1, 4, 5, 5)})


@pytest.mark.parametrize("variant", ["extra_consumer", "relu_between"])
def test_add_without_fusing_conv_gets_no_qdq(variant):
    model = identity_residual(**{variant: True})
    quantized, summary = run_quantize(model, RESIDUAL_AMAX)
    pairs = qdq_pairs(quantized)
    assert pairs["r"]["consumers"] == [("conv2", 0)]
    assert "add" not in {c for p in pairs.values() for c, _ in p["consumers"]}
    skip = next(s for s in summary.skipped if s.node == "add")
    assert skip.reason == "not_residual"


@pytest.mark.parametrize("downsample_first, quantized_branch, slot",
                         [(False, "bb", 0), (True, "bd", 1)])
def test_conv_on_both_branches_later_conv_fuses(downsample_first, quantized_branch, slot):
    model = two_conv_residual(downsample_first)
    amax = {"x": 1.0, "ra": 2.0, "bb": 3.0, "bd": 4.0}
    quantized, summary = run_quantize(model, amax)
    pairs = qdq_pairs(quantized)
    assert set(pairs) == {"x", "ra", "wa", "wb", "wd", quantized_branch}
    assert_activation(pairs[quantized_branch], amax[quantized_branch], [("add", slot)])
    assert summary.quantized == {"Conv": 3, "Add": 1}
    check_and_run(quantized, {"x": weights(1, 2, 5, 5)})


def test_add_of_constant_or_broadcast_is_not_residual():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Add", ["c", "bias"], ["d"], name="bias_add"),
             helper.make_node("Conv", ["d", "w"], ["e"], name="conv2"),
             helper.make_node("Add", ["e", "s"], ["y"], name="broadcast_add")]
    model = build(nodes, [value("x", [1, 2, 3, 3]), value("s", [1, 2, 1, 1])], [value("y", [1, 2, 3, 3])],
                  [init("w", weights(2, 2, 1, 1)), init("bias", weights(1, 2, 1, 1))])
    quantized, summary = run_quantize(model, {"x": 1.0, "d": 1.0, "s": 1.0})
    assert set(qdq_pairs(quantized)) == {"x", "d", "w"}
    reasons = {s.node: (s.reason, s.detail) for s in summary.skipped}
    assert reasons["bias_add"] == ("not_residual", "adds a constant")
    assert reasons["broadcast_add"] == ("not_residual", "inputs have different shapes (broadcast)")


# ---- pooling and concat -------------------------------------------------------------------


def test_average_pool_input_quantized_max_pool_left_alone():
    amax = {"x": 1.0, "r": 2.0, "avg": 1.5, "mx": 2.0, "y2": 5.0}
    model = pooling_model()
    quantized, summary = run_quantize(model, amax)
    pairs = qdq_pairs(quantized)
    assert set(pairs) == {"x", "w", "r", "avg", "mx", "y2"}
    assert_activation(pairs["r"], 2.0, [("avgpool", 0)])
    assert node_inputs(quantized, "maxpool") == ["r"]
    assert_activation(pairs["mx"], 2.0, [("conv_max", 0)])
    assert_activation(pairs["y2"], 5.0, [("gap", 0)])
    assert_weight(pairs["w"], numpy_init(model, "w"), 0,
                  [("conv", 1), ("conv_avg", 1), ("conv_max", 1)])
    assert summary.quantized == {"Conv": 3, "AveragePool": 1, "GlobalAveragePool": 1}
    check_and_run(quantized, {"x": weights(1, 3, 4, 4)})


def test_pool_of_a_conv_output_read_in_float_stays_float():
    """The conv must write c in float for Mul and Add, so a Q for the pool could not fuse into
    it: TensorRT would run it alone over all of c. The pool stays float; its output is
    quantized for the next conv, and qtool check --strict finds nothing."""
    from qtool.quantize.check import check_model

    amax = {"x": 1.0, "c": 4.0, "p": 2.0, "m": 3.0, "y": 6.0}
    quantized, summary = run_quantize(pooled_attention(), amax)
    pairs = qdq_pairs(quantized)
    assert set(pairs) == {"x", "w", "p", "w_se"}
    assert node_inputs(quantized, "gap") == ["c"]
    assert_activation(pairs["p"], 2.0, [("conv_se", 0)])
    assert summary.quantized == {"Conv": 2}
    skipped = {s.node: (s.reason, s.detail) for s in summary.skipped}
    assert skipped["gap"] == ("not_needed", ("its input is also read in float by Mul 'mul', "
                                             "Add 'add': the Q could not fuse into the op "
                                             "producing it and would run alone"))
    assert not check_model(quantized).findings
    check_and_run(quantized, {"x": weights(1, 3, 4, 4)})


def test_pool_of_a_conv_output_that_a_quantized_conv_reads_is_quantized():
    from qtool.quantize.check import check_model

    amax = {"x": 1.0, "c": 4.0, "p": 2.0, "m": 3.0, "y": 6.0}
    quantized, summary = run_quantize(pooled_attention(conv_reader=True), amax)
    pairs = qdq_pairs(quantized)
    assert_activation(pairs["c"], 4.0, [("conv_reader", 0), ("gap", 0)])
    assert summary.quantized == {"Conv": 3, "GlobalAveragePool": 1}
    assert not check_model(quantized).findings


def numpy_init(model, name):
    return onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def test_concat_of_two_convs_shares_the_largest_amax():
    amax = {"x": 1.0, "a": 2.0, "b": 3.5, "cat": 3.0}
    quantized, summary = run_quantize(concat_model(consumer=True), amax)
    pairs = qdq_pairs(quantized)
    assert set(pairs) == {"x", "wa", "wb", "wc", "a", "b", "cat"}
    assert_activation(pairs["a"], 3.5, [("concat", 0)])
    assert_activation(pairs["b"], 3.5, [("concat", 1)])
    assert_activation(pairs["cat"], 3.5, [("conv_c", 0)])
    assert summary.shared_scale_groups == [["cat", "a", "b"]]
    assert summary.quantized == {"Conv": 3, "Concat": 1}
    check_and_run(quantized, {"x": weights(1, 3, 3, 3)})


def test_concat_feeding_nothing_quantized_gets_no_qdq():
    quantized, summary = run_quantize(concat_model(consumer=False), {"x": 1.0, "a": 2.0, "b": 3.0})
    assert set(qdq_pairs(quantized)) == {"x", "wa", "wb"}
    assert [(s.node, s.reason) for s in summary.skipped] == [("concat", "not_needed")]


def test_nested_concats_share_one_scale():
    nodes = [
        helper.make_node("Concat", ["p", "q"], ["pq"], name="inner", axis=1),
        helper.make_node("Concat", ["pq", "r"], ["cat"], name="outer", axis=1),
        helper.make_node("Conv", ["cat", "w"], ["y"], name="conv"),
    ]
    model = build(nodes, [value(n, [1, 1, 2, 2]) for n in "pqr"], [value("y", [1, 2, 2, 2])],
                  [init("w", weights(2, 3, 1, 1))])
    amax = {"p": 1.0, "q": 4.0, "r": 2.0, "pq": 4.0, "cat": 4.0}
    quantized, summary = run_quantize(model, amax)
    pairs = qdq_pairs(quantized)
    assert set(pairs) == {"p", "q", "r", "pq", "cat", "w"}
    assert {float(pairs[n]["scale"]) for n in "pqr"} == {float(ref_scale(4.0))}
    assert sorted(map(sorted, summary.shared_scale_groups)) == [["cat", "p", "pq", "q", "r"]]


# ---- weight storage forms -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_constant_node_weights(mode):
    model, w = constant_node_conv()
    quantized, _ = run_quantize(model, {"x": 1.0}, weights=mode)
    pair = qdq_pairs(quantized)["w" if mode == "fp32" else "w_quantized"]
    assert_weight(pair, w, 0, [("conv", 1)])
    ops = [n.op_type for n in quantized.graph.node]
    if mode == "fp32":
        assert ops == ["QuantizeLinear", "DequantizeLinear", "Constant", "QuantizeLinear",
                       "DequantizeLinear", "Conv"]
    else:  # the INT8 copy replaces the Constant node
        assert ops == ["QuantizeLinear", "DequantizeLinear", "DequantizeLinear", "Conv"]
        assert pair["stored_int8"].dtype == np.int8
    x = weights(1, 3, 2, 2)
    check_and_run(quantized, {"x": x})


@pytest.mark.parametrize("mode", ["fp32", "int8"])
@pytest.mark.parametrize("ir_version", [3, 8])
def test_old_ir_initializers_listed_as_inputs(mode, ir_version):
    w = weights(2, 3, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    model = build(nodes, [value("x", [1, 3, 2, 2]), value("w", [2, 3, 1, 1])], [value("y", [1, 2, 2, 2])],
                  [init("w", w)], ir_version=ir_version)
    quantized, _ = run_quantize(model, {"x": 1.0}, weights=mode)
    pairs = qdq_pairs(quantized)
    assert_weight(pairs["w" if mode == "fp32" else "w_quantized"], w, 0, [("conv", 1)])
    inputs = [v.name for v in quantized.graph.input]
    inits = {t.name for t in quantized.graph.initializer}
    if mode == "int8":
        assert "w" not in inputs and "w" not in inits  # the FP32 copy is gone entirely
    if ir_version < 4:  # IR 3 requires every initializer to be a graph input
        assert inits <= set(inputs)
    check_and_run(quantized, {"x": weights(1, 3, 2, 2)})


def test_int8_weights_keep_fp32_copy_when_another_op_reads_it():
    w = weights(2, 2)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"], name="mm"),
             helper.make_node("Add", ["a", "w"], ["y"], name="add_w")]
    model = build(nodes, [value("x", [2, 2])], [value("y", [2, 2])], [init("w", w)])
    quantized, _ = run_quantize(model, {"x": 1.0}, weights="int8")
    assert node_inputs(quantized, "add_w") == ["a", "w"]
    assert "w" in {t.name for t in quantized.graph.initializer}


# ---- what is never quantized --------------------------------------------------------------

def test_integer_tensors_never_quantized():
    nodes = [
        helper.make_node("MatMul", ["i", "j"], ["ij"], name="int_mm"),
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Concat", ["shape", "extra"], ["cat"], name="int_concat", axis=0),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="float_mm"),
        helper.make_node("Cast", ["ij"], ["ij_f"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["y", "ij_f"], ["z"], name="mixed"),
    ]
    model = build(nodes,
                  [value("x", [2, 3]), value("i", [3, 3], TensorProto.INT32),
                   value("j", [3, 3], TensorProto.INT32)],
                  [value("z", [2, 3]), value("cat", [3], TensorProto.INT64)],
                  [init("w", weights(3, 3)), init("extra", np.array([7], np.int64))])
    amax = {"x": 1.0, "i": 5.0, "j": 5.0, "y": 2.0}  # even an amax cannot make an int tensor quantized
    quantized, summary = run_quantize(model, amax, op_types=("MatMul", "Concat"))
    assert set(qdq_pairs(quantized)) == {"x", "w"}
    reasons = {s.node: s.reason for s in summary.skipped}
    assert reasons == {"int_mm": "integer_input", "int_concat": "not_needed", "mixed": "no_calibration"}
    assert "int32" in next(s.detail for s in summary.skipped if s.node == "int_mm")


def test_missing_calibration_leaves_the_whole_node_unquantized():
    model, _ = conv_bn_relu()
    quantized, summary = run_quantize(model, {"conv": 1.0})
    assert qdq_pairs(quantized) == {}  # neither the input nor the weight
    assert [(s.node, s.reason) for s in summary.skipped] == [("conv", "no_calibration")]
    assert summary.total_quantized == 0


def test_float16_activation_is_reported_not_quantized():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    model = build(nodes, [value("x", [2, 2], TensorProto.FLOAT16)], [value("y", [2, 2], TensorProto.FLOAT16)],
                  [init("w", weights(2, 2).astype(np.float16))])
    _, summary = run_quantize(model, {"x": 1.0})
    assert [(s.node, s.reason) for s in summary.skipped] == [("mm", "unsupported_type")]


# ---- exclusions ---------------------------------------------------------------------------


def test_exclude_by_plain_name_regex_and_op_type():
    amax = {"x": 1.0, "a": 1.0, "b": 1.0}
    quantized, summary = run_quantize(three_convs(), amax,
                                      exclude=("/blocks.0/conv[1]", "head_.*", "nothing_here"))
    assert set(qdq_pairs(quantized)) == {"a", "w"}
    assert {s.node: s.detail for s in summary.skipped} == {
        "/blocks.0/conv[1]": "matches exclude pattern '/blocks.0/conv[1]'",
        "head_conv": "matches exclude pattern 'head_.*'"}
    assert summary.unmatched_excludes == ["nothing_here"]
    assert summary.quantized == {"Conv": 1}

    quantized, summary = run_quantize(three_convs(), amax, exclude_op_types=("Conv",))
    assert qdq_pairs(quantized) == {}
    assert {s.reason for s in summary.skipped} == {"excluded_op_type"}


def test_regex_must_match_the_whole_name():
    _, summary = run_quantize(three_convs(), {"x": 1.0, "a": 1.0, "b": 1.0}, exclude=("conv",))
    assert summary.skipped == [] and summary.unmatched_excludes == ["conv"]


def test_excluding_the_conv_disables_the_residual_add():
    quantized, summary = run_quantize(identity_residual(), RESIDUAL_AMAX, exclude=("conv2",))
    pairs = qdq_pairs(quantized)
    assert set(pairs) == {"x", "w1"}
    assert {s.node: s.reason for s in summary.skipped} == {"conv2": "excluded_name", "add": "not_residual"}


def test_op_types_restrict_what_is_quantized():
    quantized, summary = run_quantize(pooling_model(), {"x": 1.0, "r": 2.0, "avg": 1.5, "mx": 2.0},
                                      op_types=("Conv",))
    assert "r" not in qdq_pairs(quantized)
    assert {s.node: s.detail for s in summary.skipped} == {
        "avgpool": "op type not selected", "gap": "op type not selected"}


def test_unknown_op_type_is_a_usage_error():
    with pytest.raises(QtoolError, match="cannot be quantized"):
        quantize_model(three_convs(), {}, QuantizeOptions(op_types=("Relu",)))
    with pytest.raises(QtoolError, match="weights must be one of"):
        quantize_model(three_convs(), {}, QuantizeOptions(weights="int4"))


# ---- model-level behaviour ----------------------------------------------------------------

def test_input_model_is_not_modified():
    model, _ = conv_bn_relu()
    before = model.SerializeToString()
    quantize_model(model, {"x": 1.0}, QuantizeOptions(weights="int8"))
    assert model.SerializeToString() == before


def test_already_quantized_model_is_refused():
    model, _ = conv_bn_relu()
    quantized, _ = quantize_model(model, {"x": 1.0})
    with pytest.raises(QtoolError, match="already quantized.*qtool check"):
        quantize_model(quantized, {"x": 1.0})


def test_old_opset_is_upgraded_to_13():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    model = build(nodes, [value("x", [1, 2, 2, 2])], [value("y", [1, 2, 2, 2])],
                  [init("w", weights(2, 2, 1, 1))], opset=11, ir_version=6)
    quantized, summary = run_quantize(model, {"x": 1.0})
    assert (summary.opset_in, summary.opset_out) == (11, 13)
    assert qdq_pairs(quantized)["w"]["axis"] == 0
    check_and_run(quantized, {"x": weights(1, 2, 2, 2)})


def test_invalid_amax_is_a_user_error():
    model, _ = conv_bn_relu()
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(QtoolError, match="calibrated amax of 'x'"):
            quantize_model(model, {"x": bad})


def test_new_names_never_collide_with_existing_ones():
    nodes = [helper.make_node("Identity", ["x"], ["x_scale"], name="x_QuantizeLinear"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
             helper.make_node("Add", ["y", "x_scale"], ["z"], name="add")]
    model = build(nodes, [value("x", [2, 2])], [value("z", [2, 2])], [init("w", weights(2, 2))])
    quantized, _ = run_quantize(model, {"x": 1.0})
    q = next(n for n in quantized.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    assert q.name == "x_QuantizeLinear_1" and q.input[1] == "x_scale_1"
    check_and_run(quantized, {"x": weights(2, 2)})


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_recent_opsets_are_kept_and_run(opset):
    w = weights(2, 3, 1, 1)
    model = build([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
                  [value("x", [1, 3, 2, 2])], [value("y", [1, 2, 2, 2])], [init("w", w)],
                  opset=opset, ir_version=10 if opset >= 21 else 8)
    quantized, summary = run_quantize(model, {"x": 1.0}, weights="int8")
    assert summary.opset_in == summary.opset_out == opset
    assert_weight(qdq_pairs(quantized)["w_quantized"], w, 0, [("conv", 1)])
    check_and_run(quantized, {"x": weights(1, 3, 2, 2)})


def test_sparse_constant_weight_is_reported_not_read():
    sparse = helper.make_sparse_tensor(
        helper.make_tensor("values", TensorProto.FLOAT, [1], [2.0]),
        helper.make_tensor("indices", TensorProto.INT64, [1], [3]), [2, 2])
    nodes = [helper.make_node("Constant", [], ["w"], name="w_const", sparse_value=sparse),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    model = build(nodes, [value("x", [2, 2])], [value("y", [2, 2])])
    quantized, summary = run_quantize(model, {"x": 1.0})
    assert qdq_pairs(quantized) == {}
    assert [(s.node, s.reason) for s in summary.skipped] == [("mm", "unsupported_weight")]
