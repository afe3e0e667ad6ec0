"""Cross-layer equalization: scales against slow reference loops, FP32 outputs unchanged on
onnxruntime, the graph unchanged but for constant values, and the pairs that must stay as they are."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from qtool.quantize.equalize import (
    BRANCHING,
    NOT_HOMOGENEOUS,
    UNSUPPORTED_LAYOUT,
    UNSUPPORTED_WEIGHT,
    equalization_scales,
    equalize_model,
)
from tests.helpers.onnx_graphs import build, init, value
from tests.helpers.rescale import (
    assert_same_outputs,
    batches,
    conv_chain,
    inits,
    skeleton,
    spread_weight,
)

# ---------------------------------------------------------------------------------------------
# Slow reference


def ref_in_range(w: np.ndarray, group: int, channel: int) -> float:
    """max |w| over the rows and kernel of a conv weight that read input channel `channel`."""
    per_in = w.shape[1]
    per_out = w.shape[0] // group
    g, local = divmod(channel, per_in)
    best = 0.0
    for o in range(g * per_out, (g + 1) * per_out):
        best = max(best, float(np.abs(w[o, local]).max()))
    return best


def ref_equalize_convs(layers: list[dict], iterations=20, tolerance=1e-4, max_scale=1e3):
    """Sweeps over consecutive conv pairs, one channel at a time, in float64.

    layers: [{"w": [O, C/g, k, k], "b": [O] or None, "group": g}], consecutive ones paired."""
    layers = [{"w": np.array(layer["w"], np.float64),
               "b": None if layer["b"] is None else np.array(layer["b"], np.float64),
               "group": layer["group"]} for layer in layers]
    totals = [np.ones(layers[i]["w"].shape[0]) for i in range(len(layers) - 1)]
    for _ in range(iterations):
        worst = 0.0
        for p in range(len(layers) - 1):
            first, second = layers[p], layers[p + 1]
            per_in, per_out = second["w"].shape[1], second["w"].shape[0] // second["group"]
            for i in range(first["w"].shape[0]):
                r1 = float(np.abs(first["w"][i]).max())
                r2 = ref_in_range(second["w"], second["group"], i)
                s = np.sqrt(r1 / r2) if r1 > 0 and r2 > 0 else 1.0
                total = min(max(totals[p][i] * s, 1.0 / max_scale), max_scale)
                s = total / totals[p][i]
                totals[p][i] = total
                first["w"][i] /= s
                if first["b"] is not None:
                    first["b"][i] /= s
                g, local = divmod(i, per_in)
                for o in range(g * per_out, (g + 1) * per_out):
                    second["w"][o, local] *= s
                worst = max(worst, abs(s - 1.0))
        if worst <= tolerance:
            break
    return [{"w": layer["w"].astype(np.float32),
             "b": None if layer["b"] is None else layer["b"].astype(np.float32)}
            for layer in layers]


# ---------------------------------------------------------------------------------------------
# Helpers


# ---------------------------------------------------------------------------------------------
# Scales


def test_equalization_scales_balance_both_ranges_and_keep_dead_channels():
    r1 = np.array([4.0, 0.01, 0.0, 3.0])
    r2 = np.array([1.0, 100.0, 2.0, 0.0])
    s = equalization_scales(r1, r2)
    np.testing.assert_allclose(s, [2.0, 0.01, 1.0, 1.0])
    live = slice(0, 2)
    np.testing.assert_allclose((r1 / s)[live], np.sqrt(r1 * r2)[live])
    np.testing.assert_allclose((r2 * s)[live], np.sqrt(r1 * r2)[live])


def test_one_pair_gets_both_ranges_to_the_geometric_mean():
    model, layers = conv_chain([(6, 1, True), (5, 1, True)], ["Relu"])
    out, report = equalize_model(model)
    w0, w1 = inits(out)["w0"], inits(out)["w1"]
    r1 = np.abs(layers[0]["w"]).reshape(6, -1).max(axis=1).astype(np.float64)
    r2 = np.abs(layers[1]["w"]).transpose(1, 0, 2, 3).reshape(6, -1).max(axis=1)
    mean = np.sqrt(r1 * r2)
    np.testing.assert_allclose(np.abs(w0).reshape(6, -1).max(axis=1), mean, rtol=1e-6)
    np.testing.assert_allclose(np.abs(w1).transpose(1, 0, 2, 3).reshape(6, -1).max(axis=1),
                               mean, rtol=1e-6)
    np.testing.assert_allclose(inits(out)["b0"],
                               layers[0]["b"] * np.sqrt(r2 / r1), rtol=1e-6)
    np.testing.assert_array_equal(inits(out)["b1"], layers[1]["b"])  # second bias untouched
    assert [(p.first, p.second, p.activation, p.channels) for p in report.pairs] == [
        ("conv0", "conv1", "Relu", 6)]
    assert report.converged and report.iterations == 2  # the second sweep finds nothing to do
    assert report.skipped == []
    assert_same_outputs(model, out, batches(model, count=1))


@pytest.mark.parametrize("activations", [["Relu", "LeakyRelu", "PRelu"], ["", "Relu", ""]])
def test_chain_with_grouped_and_depthwise_convs_matches_the_reference(activations):
    # conv0 -> grouped conv1 (g=2) -> depthwise conv2 (multiplier 2) -> conv3
    specs = [(8, 1, True), (8, 2, True), (16, 8, False), (4, 1, True)]
    model, layers = conv_chain(specs, activations, seed=3)
    before = model.SerializeToString()
    out, report = equalize_model(model)
    assert model.SerializeToString() == before  # the input model is not modified
    assert skeleton(out) == skeleton(model)
    assert len(report.pairs) == 3 and report.converged
    assert [p.activation for p in report.pairs] == activations
    want = ref_equalize_convs(layers)
    got = inits(out)
    for i, layer in enumerate(want):
        np.testing.assert_allclose(got[f"w{i}"], layer["w"], rtol=1e-6, atol=0)
        if layer["b"] is not None:
            np.testing.assert_allclose(got[f"b{i}"], layer["b"], rtol=1e-6, atol=0)
    assert_same_outputs(model, out, batches(model, count=1))


def test_converged_chain_has_equal_ranges_on_both_sides_of_every_pair():
    model, _ = conv_chain([(8, 1, True), (8, 1, True), (8, 1, True)], ["Relu", "Relu"], seed=5)
    out, report = equalize_model(model, iterations=200, tolerance=1e-9)
    assert report.converged
    w = inits(out)
    for first, second in (("w0", "w1"), ("w1", "w2")):
        r1 = np.abs(w[first]).reshape(8, -1).max(axis=1)
        r2 = np.abs(w[second]).transpose(1, 0, 2, 3).reshape(8, -1).max(axis=1)
        np.testing.assert_allclose(r1, r2, rtol=1e-5)
    # and the spread of ranges across channels shrinks
    before = inits(model)["w1"]
    assert (np.ptp(np.log10(np.abs(w["w1"]).reshape(8, -1).max(axis=1)))
            < np.ptp(np.log10(np.abs(before).reshape(8, -1).max(axis=1))))


def test_scales_stay_within_max_scale_and_dead_channels_keep_scale_one():
    model, layers = conv_chain([(4, 1, True), (3, 1, True)], ["Relu"], seed=2)
    w0 = layers[0]["w"].copy()
    w0[0] *= 1e6  # wants a scale of ~1e3 alone
    w0[1] = 0.0  # a dead channel
    for tensor in model.graph.initializer:
        if tensor.name == "w0":
            tensor.CopyFrom(numpy_helper.from_array(w0, "w0"))
    out, report = equalize_model(model, max_scale=10.0)
    pair = report.pairs[0]
    assert 0.1 - 1e-12 <= pair.scale_min and pair.scale_max <= 10.0 + 1e-12
    np.testing.assert_array_equal(inits(out)["w0"][1], 0.0)
    np.testing.assert_array_equal(inits(out)["w1"][:, 1], layers[1]["w"][:, 1])
    # the clamped channel moved by exactly max_scale
    np.testing.assert_allclose(inits(out)["w0"][0], w0[0] / 10.0, rtol=1e-6)
    assert_same_outputs(model, out, batches(model, count=1))


# ---------------------------------------------------------------------------------------------
# Dense layers


def dense_model(seed=0):
    """x[3, 6] -> Gemm(transB) -> Relu -> MatMul + Add -> PRelu -> MatMul -> Gemm -> y[3, 4]."""
    rng = np.random.default_rng(seed)
    g0 = spread_weight(rng, (8, 6))  # [N, K] with transB
    c0 = rng.normal(size=(8,)).astype(np.float32)
    m1 = spread_weight(rng, (5, 8)).T.copy()
    b1 = rng.normal(size=(1, 5)).astype(np.float32)
    m2 = spread_weight(rng, (7, 5)).T.copy()
    g3 = spread_weight(rng, (4, 7)).T.copy()
    c3 = rng.normal(size=(4,)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "g0", "c0"], ["t0"], name="gemm0", transB=1, alpha=0.5),
        helper.make_node("Relu", ["t0"], ["a0"], name="relu0"),
        helper.make_node("MatMul", ["a0", "m1"], ["t1"], name="mm1"),
        helper.make_node("Add", ["t1", "b1"], ["u1"], name="add1"),
        helper.make_node("PRelu", ["u1", "slope"], ["a1"], name="prelu1"),
        helper.make_node("MatMul", ["a1", "m2"], ["t2"], name="mm2"),
        helper.make_node("Gemm", ["t2", "g3", "c3"], ["y"], name="gemm3"),
    ]
    initializers = [init("g0", g0), init("c0", c0), init("m1", m1), init("b1", b1),
                    init("slope", np.array([0.2], np.float32)), init("m2", m2),
                    init("g3", g3), init("c3", c3)]
    return build(nodes, [value("x", [3, 6])], [value("y", [3, 4])], initializers)


def test_dense_chain_gemm_matmul_with_add_bias_and_prelu():
    model = dense_model()
    out, report = equalize_model(model, iterations=100, tolerance=1e-8)
    assert [(p.first, p.second, p.activation) for p in report.pairs] == [
        ("gemm0", "mm1", "Relu"), ("mm1", "mm2", "PRelu"), ("mm2", "gemm3", "")]
    assert report.converged
    assert skeleton(out) == skeleton(model)
    w = inits(out)
    # output ranges of each first op equal the input ranges of its second op
    np.testing.assert_allclose(np.abs(w["g0"]).max(axis=1), np.abs(w["m1"]).max(axis=1),
                               rtol=1e-5)
    np.testing.assert_allclose(np.abs(w["m1"]).max(axis=0), np.abs(w["m2"]).max(axis=1),
                               rtol=1e-5)
    np.testing.assert_allclose(np.abs(w["m2"]).max(axis=0), np.abs(w["g3"]).max(axis=1),
                               rtol=1e-5)
    np.testing.assert_array_equal(w["slope"], inits(model)["slope"])
    np.testing.assert_array_equal(w["c3"], inits(model)["c3"])
    assert not np.array_equal(w["b1"], inits(model)["b1"])  # the MatMul's Add bias follows
    rng = np.random.default_rng(4)
    assert_same_outputs(model, out, [{"x": rng.normal(size=(3, 6)).astype(np.float32)}])


def test_constant_node_weights_are_rewritten_in_place():
    model, _ = conv_chain([(6, 1, True), (5, 1, True)], ["Relu"])
    graph = model.graph
    # store the weights as Constant nodes, as Paddle2ONNX exports do
    constants = [helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t)
                 for t in graph.initializer]
    nodes = constants + list(graph.node)
    del graph.initializer[:]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    out, report = equalize_model(model)
    assert len(report.pairs) == 1
    assert skeleton(out) != skeleton(model)  # (Constant values live in attributes)
    assert [n.op_type for n in out.graph.node] == [n.op_type for n in model.graph.node]
    assert [list(n.input) for n in out.graph.node] == [list(n.input) for n in model.graph.node]
    assert_same_outputs(model, out, batches(model, count=1))


# ---------------------------------------------------------------------------------------------
# Pairs that must stay as they are


def two_convs_with(middle_nodes, middle_out, initializers=(), extra_outputs=(), seed=0,
                   second_weight_input=False):
    """x -> conv0 "c0" -> middle_nodes ending in `middle_out` -> conv1 -> y."""
    rng = np.random.default_rng(seed)
    w0, w1 = spread_weight(rng, (4, 3, 3, 3)), spread_weight(rng, (5, 4, 3, 3))
    b0 = rng.normal(size=4).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
             *middle_nodes,
             helper.make_node("Conv", [middle_out, "w1"], ["y"], name="conv1", pads=[1, 1, 1, 1])]
    inputs = [value("x", [1, 3, 5, 5])]
    inits_ = [init("w0", w0), init("b0", b0), *initializers]
    if second_weight_input:
        inputs.append(value("w1", [5, 4, 3, 3]))
    else:
        inits_.append(init("w1", w1))
    outputs = [value("y", [1, 5, 5, 5]), *extra_outputs]
    return build(nodes, inputs, outputs, inits_, opset=13)


CLIP_BOUNDS = [init("lo", np.array(0.0, np.float32)), init("hi", np.array(6.0, np.float32))]


@pytest.mark.parametrize("case, reason", [
    ("clip", NOT_HOMOGENEOUS),
    ("sigmoid", NOT_HOMOGENEOUS),
    ("two_consumers", BRANCHING),
    ("graph_output", BRANCHING),
    ("weight_input", UNSUPPORTED_WEIGHT),
    ("shared_bias", "unsupported_bias"),
])
def test_blocked_pairs_stay_bit_identical(case, reason):
    extra_inputs = {}
    if case == "clip":
        model = two_convs_with([helper.make_node("Clip", ["c0", "lo", "hi"], ["m"], name="clip")],
                               "m", CLIP_BOUNDS)
    elif case == "sigmoid":
        model = two_convs_with([helper.make_node("Sigmoid", ["c0"], ["m"], name="sig")], "m")
    elif case == "two_consumers":
        model = two_convs_with([helper.make_node("Relu", ["c0"], ["m"], name="relu"),
                                helper.make_node("Sigmoid", ["c0"], ["side"], name="side")],
                               "m", extra_outputs=[value("side", [1, 4, 5, 5])])
    elif case == "graph_output":
        model = two_convs_with([], "c0", extra_outputs=[value("c0", [1, 4, 5, 5])])
    elif case == "weight_input":
        model = two_convs_with([helper.make_node("Relu", ["c0"], ["m"], name="relu")], "m",
                               second_weight_input=True)
        extra_inputs["w1"] = np.ones((5, 4, 3, 3), np.float32)
    else:  # conv0's bias is read by an Add too
        model = two_convs_with([helper.make_node("Relu", ["c0"], ["m"], name="relu"),
                                helper.make_node("Add", ["b0", "b0"], ["bb"], name="reuse")],
                               "m", extra_outputs=[value("bb", [4])])
    before = model.SerializeToString()
    out, report = equalize_model(model)
    assert out.SerializeToString() == before
    assert model.SerializeToString() == before
    assert report.pairs == []
    assert [(s.node, s.reason) for s in report.skipped] == [("conv0", reason)]
    feeds = {**batches(model, count=1)[0], **extra_inputs}
    assert_same_outputs(model, out, [feeds])


def test_conv_to_gemm_through_flatten_and_gemm_with_transposed_a_are_not_paired():
    rng = np.random.default_rng(0)
    w = spread_weight(rng, (4, 3, 1, 1))
    g = spread_weight(rng, (4, 2))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Flatten", ["c"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "g"], ["y"], name="fc")]
    model = build(nodes, [value("x", [1, 3, 1, 1])], [value("y", [1, 2])],
                  [init("w", w), init("g", g)])
    out, report = equalize_model(model)
    assert report.pairs == [] and out.SerializeToString() == model.SerializeToString()

    g0, g1 = spread_weight(rng, (3, 4)), spread_weight(rng, (4, 2))
    nodes = [helper.make_node("Gemm", ["x", "g0"], ["t"], name="gemm0"),
             helper.make_node("Gemm", ["t", "g1"], ["y"], name="gemm1", transA=1)]
    model = build(nodes, [value("x", [4, 3])], [value("y", [4, 2])],
                  [init("g0", g0), init("g1", g1)])
    out, report = equalize_model(model)
    assert report.pairs == [] and out.SerializeToString() == model.SerializeToString()
    assert report.skipped_by_reason() == {UNSUPPORTED_LAYOUT: 1}


def test_bad_arguments_are_refused():
    model, _ = conv_chain([(4, 1, True), (3, 1, True)], ["Relu"])
    with pytest.raises(ValueError):
        equalize_model(model, iterations=0)
    with pytest.raises(ValueError):
        equalize_model(model, max_scale=0.5)
