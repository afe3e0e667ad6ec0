"""Shared helpers for the tests of passes that only rescale constants (equalization, smoothing):
the initializers of a model, the model without their data, random feeds, FP32 outputs compared
before and after on onnxruntime, and the two models those passes have work to do on (a conv chain
with weights spread over decades, a LayerNorm with outlier channels feeding Q/K/V projections)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tests.helpers.onnx_graphs import build, check_and_run, init, value


def inits(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def skeleton(model) -> bytes:
    """The model with every initializer's data removed: what must not change."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in copy.graph.initializer:
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
    return copy.SerializeToString()


def batches(model, count=4, seed=1) -> list[dict[str, np.ndarray]]:
    """`count` feeds of standard normal values for the model's first input, from one generator."""
    rng = np.random.default_rng(seed)
    spec = model.graph.input[0]
    shape = [d.dim_value for d in spec.type.tensor_type.shape.dim]
    return [{spec.name: rng.normal(size=shape).astype(np.float32)} for _ in range(count)]


def assert_same_outputs(before, after, feeds_list, rtol=1e-5):
    for feeds in feeds_list:
        for want, got in zip(check_and_run(before, feeds), check_and_run(after, feeds)):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * float(np.abs(want).max()))


def spread_weight(rng, shape, out_decades=2.0, in_decades=2.0):
    """Weights whose output and input channels have magnitudes spread over decades."""
    out_scale = 10.0 ** rng.uniform(-out_decades / 2, out_decades / 2, size=shape[0])
    in_scale = 10.0 ** rng.uniform(-in_decades / 2, in_decades / 2, size=shape[1])
    w = rng.normal(size=shape) * out_scale.reshape((-1,) + (1,) * (len(shape) - 1))
    return (w * in_scale.reshape((1, -1) + (1,) * (len(shape) - 2))).astype(np.float32)


def conv_chain(specs, activations, channels_in=3, size=6, seed=0):
    """x -> Conv_0 -> act_0 -> Conv_1 -> ... -> y. specs: [(out_channels, group, bias)]."""
    rng = np.random.default_rng(seed)
    nodes, initializers, layers = [], [], []
    current, channels = "x", channels_in
    for i, (out, group, bias) in enumerate(specs):
        w = spread_weight(rng, (out, channels // group, 3, 3))
        b = rng.normal(size=out).astype(np.float32) if bias else None
        inputs = [current, f"w{i}"] + ([f"b{i}"] if bias else [])
        initializers += [init(f"w{i}", w)] + ([init(f"b{i}", b)] if bias else [])
        nxt = "y" if i == len(specs) - 1 else f"c{i}"
        nodes.append(helper.make_node("Conv", inputs, [nxt], name=f"conv{i}", group=group,
                                      pads=[1, 1, 1, 1]))
        if i < len(specs) - 1 and activations[i]:
            op = activations[i]
            kwargs = {"alpha": 0.1} if op == "LeakyRelu" else {}
            act_inputs = [nxt] + (["slope"] if op == "PRelu" else [])
            if op == "PRelu":
                initializers.append(init("slope", rng.uniform(0.05, 0.3, (out, 1, 1))
                                         .astype(np.float32)))
            nodes.append(helper.make_node(op, act_inputs, [f"a{i}"], name=f"act{i}", **kwargs))
            nxt = f"a{i}"
        layers.append({"w": w, "b": b, "group": group})
        current, channels = nxt, out
    model = build(nodes, [value("x", [2, channels_in, size, size])],
                  [value("y", [2, channels, size, size])], initializers)
    return model, layers


K = 16  # the channels of the normalized axis in layernorm_qkv (and of the smoothing tests)


def outlier_gamma(rng):
    """A LayerNorm scale with three outlier channels (x30), as in transformer activations."""
    gamma = rng.uniform(0.5, 1.5, K)
    gamma[[2, 7, 11]] *= 30.0
    return gamma.astype(np.float32)


def layernorm_qkv(seed=0, decomposed=False):
    """x[2, 5, K] -> LayerNorm(gamma, beta) "h" -> three MatMul projections -> Add -> y."""
    rng = np.random.default_rng(seed)
    gamma, beta = outlier_gamma(rng), rng.normal(size=K).astype(np.float32)
    wq, wk, wv = (rng.normal(size=(K, 8)).astype(np.float32) for _ in range(3))
    if decomposed:  # the affine tail of a LayerNorm exported before opset 17
        norm = [helper.make_node("ReduceMean", ["x"], ["mu"], name="mean", axes=[-1]),
                helper.make_node("Sub", ["x", "mu"], ["xc"], name="center"),
                helper.make_node("Mul", ["xc", "gamma"], ["g"], name="scale"),
                helper.make_node("Add", ["beta", "g"], ["h"], name="shift")]
        opset = 13
    else:
        norm = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["h"],
                                 name="ln", axis=-1)]
        opset = 17
    nodes = norm + [
        helper.make_node("MatMul", ["h", "wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["h", "wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["h", "wv"], ["v"], name="v_proj"),
        helper.make_node("Add", ["q", "k"], ["qk"], name="add_qk"),
        helper.make_node("Add", ["qk", "v"], ["y"], name="add_v"),
    ]
    return build(nodes, [value("x", [2, 5, K])], [value("y", [2, 5, 8])],
                 [init("gamma", gamma), init("beta", beta), init("wq", wq), init("wk", wk),
                  init("wv", wv)], opset=opset)
