"""SmoothQuant: scales against a slow reference, FP32 outputs unchanged on onnxruntime, flatter
activation channels afterwards, the graph unchanged but for constant values, and the activations
that must stay as they are."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from qtool.quantize.smooth import (
    CANNOT_ABSORB,
    NO_CHANNEL_ABSMAX,
    OTHER_READERS,
    UNSUPPORTED_WEIGHT,
    collect_channel_absmax,
    smooth_model,
    smooth_with_data,
    smoothable_tensors,
    smoothing_scales,
)
from tests.helpers.onnx_graphs import build, init, value
from tests.helpers.rescale import K, assert_same_outputs, batches, inits, layernorm_qkv, skeleton

# ---------------------------------------------------------------------------------------------
# Slow reference


def ref_scales(act_absmax, weights_kn, alpha, max_scale=1e3):
    """Channel by channel: a^alpha / w^(1-alpha) with w the largest |W[j, n]| of all weights."""
    out = np.ones(len(act_absmax))
    for j, a in enumerate(act_absmax):
        w = 0.0
        for weight in weights_kn:
            for n in range(weight.shape[1]):
                w = max(w, abs(float(weight[j, n])))
        if a > 0 and w > 0:
            out[j] = min(max(a ** alpha / w ** (1 - alpha), 1 / max_scale), max_scale)
    return out


def ref_absmax(batches):
    """max |x| of the last axis, element by element."""
    out = None
    for x in batches:
        flat = np.abs(np.asarray(x, np.float64)).reshape(-1, x.shape[-1])
        peak = np.array([max(flat[:, j]) for j in range(flat.shape[1])])
        out = peak if out is None else np.maximum(out, peak)
    return out


# ---------------------------------------------------------------------------------------------
# Helpers


def gemm_gemm(seed=0, trans_first=1, trans_second=0, bias_shape=(K,)):
    """x[6, 12] -> Gemm "h"[6, K] -> Gemm -> y[6, 5]."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=(12, K)).astype(np.float32)
    w0[:, [1, 9]] *= 40.0  # outlier output channels
    c0 = rng.normal(size=bias_shape).astype(np.float32)
    w1 = rng.normal(size=(K, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w0", "c0"], ["h"], name="fc0", transB=trans_first),
        helper.make_node("Gemm", ["h", "w1"], ["y"], name="fc1", transB=trans_second),
    ]
    return build(nodes, [value("x", [6, 12])], [value("y", [6, 5])],
                 [init("w0", w0.T.copy() if trans_first else w0), init("c0", c0),
                  init("w1", w1.T.copy() if trans_second else w1)])


def flatness(absmax):
    """Largest channel max over the median one: 1 is perfectly flat."""
    return float(np.max(absmax) / np.median(absmax))


# ---------------------------------------------------------------------------------------------
# Scales


def test_smoothing_scales_match_the_reference_with_zeros_and_clamping():
    a = np.array([4.0, 0.0, 9.0, 1e8, 1.0])
    w = np.array([1.0, 2.0, 0.0, 1e-8, 4.0])
    for alpha in (0.0, 0.5, 0.8, 1.0):
        got = smoothing_scales(a, w, alpha)
        want = ref_scales(a, [w[:, None]], alpha)
        np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(smoothing_scales(a, w, 0.5), [2.0, 1.0, 1.0, 1e3, 0.5])


# ---------------------------------------------------------------------------------------------
# Rewrites


@pytest.mark.parametrize("decomposed", [False, True])
def test_layernorm_feeding_three_projections(decomposed):
    model = layernorm_qkv(decomposed=decomposed)
    before = model.SerializeToString()
    data = batches(model)
    assert smoothable_tensors(model) == ["h"]
    absmax = collect_channel_absmax(model, data, ["h"])
    out, report = smooth_model(model, absmax, alpha=0.5)
    assert model.SerializeToString() == before
    assert skeleton(out) == skeleton(model)
    assert [(s.tensor, s.consumers, s.channels) for s in report.smoothed] == [
        ("h", ["q_proj", "k_proj", "v_proj"], K)]
    assert report.skipped == []
    original = inits(model)
    s = ref_scales(absmax["h"], [original["wq"], original["wk"], original["wv"]], 0.5)
    np.testing.assert_allclose(report.scales["h"], s, rtol=1e-12)
    got = inits(out)
    for name in ("gamma", "beta"):
        np.testing.assert_allclose(got[name], original[name] / s, rtol=1e-6)
    for name in ("wq", "wk", "wv"):
        np.testing.assert_allclose(got[name], original[name] * s[:, None], rtol=1e-6)
    assert_same_outputs(model, out, data)
    # the activation's channels are flatter: from over 30x the median channel to under 6.5x
    # (alpha 0.5 leaves about the square root of the outliers' x30)
    after = collect_channel_absmax(out, data, ["h"])["h"]
    assert flatness(absmax["h"]) > 30.0
    assert flatness(after) < 6.5


@pytest.mark.parametrize("trans_first, trans_second, bias_shape", [
    (1, 0, (K,)), (0, 1, (1, K)), (1, 1, (6, K))])
def test_gemm_into_gemm(trans_first, trans_second, bias_shape):
    model = gemm_gemm(trans_first=trans_first, trans_second=trans_second, bias_shape=bias_shape)
    data = batches(model)
    absmax = collect_channel_absmax(model, data, smoothable_tensors(model))
    out, report = smooth_model(model, absmax, alpha=0.6)
    assert skeleton(out) == skeleton(model)
    original, got = inits(model), inits(out)
    w1 = original["w1"].T if trans_second else original["w1"]
    s = ref_scales(absmax["h"], [w1], 0.6)
    np.testing.assert_allclose(report.scales["h"], s, rtol=1e-12)
    want_w0 = original["w0"] / (s[:, None] if trans_first else s[None, :])
    np.testing.assert_allclose(got["w0"], want_w0, rtol=1e-6)
    np.testing.assert_allclose(got["c0"], original["c0"] / s, rtol=1e-6)
    assert_same_outputs(model, out, data)
    after = collect_channel_absmax(out, data, ["h"])["h"]
    assert flatness(absmax["h"]) > 38.0 and flatness(after) < 4.0


def test_matmul_with_add_bias_into_matmul_and_the_whole_pre_step():
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(6, K)).astype(np.float32)
    w0[:, 4] *= 50.0
    b0 = rng.normal(size=K).astype(np.float32)
    w1 = rng.normal(size=(K, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["t"], name="mm0"),
             helper.make_node("Add", ["t", "b0"], ["h"], name="bias0"),
             helper.make_node("MatMul", ["h", "w1"], ["y"], name="mm1")]
    model = build(nodes, [value("x", [2, 4, 6])], [value("y", [2, 4, 3])],
                  [init("w0", w0), init("b0", b0), init("w1", w1)])
    data = batches(model)
    out, report = smooth_with_data(model, data)
    assert [(s.tensor, s.producer) for s in report.smoothed] == [("h", "MatMul mm0 + Add bias0")]
    absmax = ref_absmax(probe(model, "h", data))
    s = ref_scales(absmax, [w1], 0.5)
    np.testing.assert_allclose(report.scales["h"], s, rtol=1e-6)
    np.testing.assert_allclose(inits(out)["b0"], b0 / s, rtol=1e-6)
    assert_same_outputs(model, out, data)


def probe(model, tensor, data):
    """The values of `tensor` for each feed, read through an extra graph output."""
    import onnxruntime as ort

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    return [session.run([tensor], feeds)[0] for feeds in data]


def test_a_shape_read_of_the_activation_does_not_block_it():
    model = layernorm_qkv()
    graph = model.graph
    graph.node.append(helper.make_node("Shape", ["h"], ["h_shape"], name="shape"))
    graph.output.append(value("h_shape", [3], onnx.TensorProto.INT64))
    onnx.checker.check_model(model, full_check=True)
    data = batches(model)
    absmax = collect_channel_absmax(model, data, smoothable_tensors(model))
    out, report = smooth_model(model, absmax)
    assert [s.tensor for s in report.smoothed] == ["h"]
    assert_same_outputs(model, out, data)


def test_collect_channel_absmax_matches_numpy_over_batches():
    model = layernorm_qkv()
    data = batches(model, count=3)
    got = collect_channel_absmax(model, data, ["h", "q", "h"])
    want_h = ref_absmax(probe(model, "h", data))
    np.testing.assert_allclose(got["h"], want_h, rtol=1e-7)
    assert set(got) == {"h", "q"} and got["q"].shape == (8,)
    assert collect_channel_absmax(model, data, []) == {}


# ---------------------------------------------------------------------------------------------
# Activations that must stay as they are


def untouched_case(case):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(K, 4)).astype(np.float32)
    initializers = [init("w", w)]
    inputs = [value("x", [3, K])]
    outputs = [value("y", [3, 4])]
    if case == "softmax":
        nodes = [helper.make_node("Softmax", ["x"], ["h"], name="sm", axis=-1),
                 helper.make_node("MatMul", ["h", "w"], ["y"], name="mm")]
        reason = CANNOT_ABSORB
    elif case == "graph_input":
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
        reason = CANNOT_ABSORB
    elif case == "scalar_mul":
        initializers.append(init("c", np.array(3.0, np.float32)))
        nodes = [helper.make_node("Mul", ["x", "c"], ["h"], name="mul"),
                 helper.make_node("MatMul", ["h", "w"], ["y"], name="mm")]
        reason = CANNOT_ABSORB
    elif case == "non_constant_weight":
        # h feeds a constant-weight MatMul and a MatMul whose weight is a graph input
        initializers.append(init("g", rng.uniform(1, 2, K).astype(np.float32)))
        inputs.append(value("v", [K, 4]))
        nodes = [helper.make_node("Mul", ["x", "g"], ["h"], name="mul"),
                 helper.make_node("MatMul", ["h", "w"], ["a"], name="mm"),
                 helper.make_node("MatMul", ["h", "v"], ["b"], name="mm_v"),
                 helper.make_node("Add", ["a", "b"], ["y"], name="add")]
        reason = UNSUPPORTED_WEIGHT
    elif case == "other_reader":
        initializers.append(init("g", rng.uniform(1, 2, K).astype(np.float32)))
        outputs.append(value("r", [3, K]))
        nodes = [helper.make_node("Mul", ["x", "g"], ["h"], name="mul"),
                 helper.make_node("Relu", ["h"], ["r"], name="relu"),
                 helper.make_node("MatMul", ["h", "w"], ["y"], name="mm")]
        reason = OTHER_READERS
    elif case == "shared_weight":
        initializers.append(init("g", rng.uniform(1, 2, K).astype(np.float32)))
        outputs.append(value("z", [3, 4]))
        nodes = [helper.make_node("Mul", ["x", "g"], ["h"], name="mul"),
                 helper.make_node("MatMul", ["h", "w"], ["y"], name="mm"),
                 helper.make_node("MatMul", ["x", "w"], ["z"], name="mm_x")]
        reason = UNSUPPORTED_WEIGHT
    else:
        raise AssertionError(case)
    return build(nodes, inputs, outputs, initializers), reason


@pytest.mark.parametrize("case", ["softmax", "graph_input", "scalar_mul", "non_constant_weight",
                                  "other_reader", "shared_weight"])
def test_activations_that_cannot_be_smoothed_stay_bit_identical(case):
    model, reason = untouched_case(case)
    before = model.SerializeToString()
    stats = {"h": np.linspace(1, 50, K), "x": np.linspace(1, 50, K)}
    out, report = smooth_model(model, stats)
    assert out.SerializeToString() == before and model.SerializeToString() == before
    assert report.smoothed == [] and report.scales == {}
    assert reason in report.skipped_by_reason()
    assert smoothable_tensors(model) == []


@pytest.mark.parametrize("stats", [{}, {"h": np.ones(K - 1)}])
def test_missing_or_mismatched_channel_maxima_leave_the_model_alone(stats):
    model = layernorm_qkv()
    out, report = smooth_model(model, stats)
    assert out.SerializeToString() == model.SerializeToString()
    assert report.skipped_by_reason() == {NO_CHANNEL_ABSMAX: 1}


def test_bad_arguments_are_refused():
    model = layernorm_qkv()
    with pytest.raises(ValueError):
        smooth_model(model, {}, alpha=1.5)
    with pytest.raises(ValueError):
        smooth_model(model, {}, max_scale=0.1)
