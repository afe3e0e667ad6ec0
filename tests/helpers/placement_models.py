"""The models of the placement tests, one per TensorRT placement rule (conv-BN-ReLU, attention,
ConvTranspose, residual Adds, pools, Concat, constant-node weights), each returned with the
weights its assertions need."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from tests.helpers.onnx_graphs import attention_block, build, init, value

RNG = np.random.default_rng(7)


def weights(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def conv_bn_relu():
    w, b = weights(4, 3, 3, 3), weights(4)
    bn = [np.abs(weights(4)) + 0.5 for _ in range(4)]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv", "g", "beta", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["y"], name="relu"),
    ]
    inits = [init("w", w), init("b", b)] + [init(n, a) for n, a in zip(("g", "beta", "mean", "var"), bn)]
    return build(nodes, [value("x", [1, 3, 6, 6])], [value("y", [1, 4, 6, 6])], inits), w


def attention():
    wq, wk, wv = weights(8, 8), weights(8, 8), weights(8, 8)
    return attention_block(wq, wk, wv), (wq, wk, wv)


def conv_transpose(group):
    w = weights(4, 6 // group, 3, 3)  # [C_in, C_out / group, kH, kW]
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="deconv", group=group)]
    return build(nodes, [value("x", [1, 4, 5, 5])], [value("y", [1, 6, 7, 7])], [init("w", w)]), w


def identity_residual(extra_consumer=False, relu_between=False):
    """x -> conv1 -> relu (r) -> conv2 -> bn -> Add(bn, r): r is the identity skip."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r"], name="relu1"),
        helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", "g", "beta", "mean", "var"], ["b2"], name="bn2"),
    ]
    branch = "b2"
    if relu_between:
        nodes.append(helper.make_node("Relu", ["b2"], ["b2r"], name="relu_between"))
        branch = "b2r"
    nodes.append(helper.make_node("Add", [branch, "r"], ["sum"], name="add"))
    nodes.append(helper.make_node("Relu", ["sum"], ["y"], name="relu_out"))
    outputs = [value("y", [1, 4, 5, 5])]
    if extra_consumer:
        outputs.append(value("b2", [1, 4, 5, 5]))
    inits = [init("w1", weights(4, 4, 3, 3)), init("w2", weights(4, 4, 3, 3))]
    inits += [init(n, np.abs(weights(4)) + 0.5) for n in ("g", "beta", "mean", "var")]
    return build(nodes, [value("x", [1, 4, 5, 5])], outputs, inits)


def two_conv_residual(downsample_first: bool):
    """Main branch conv_a -> relu -> conv_b -> bn_b; downsample conv_d -> bn_d; Add(bn_b, bn_d)."""
    main = [
        helper.make_node("Conv", ["x", "wa"], ["ca"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["ca"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "wb"], ["cb"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["cb", "g", "beta", "mean", "var"], ["bb"], name="bn_b"),
    ]
    down = [
        helper.make_node("Conv", ["x", "wd"], ["cd"], name="conv_d"),
        helper.make_node("BatchNormalization", ["cd", "g", "beta", "mean", "var"], ["bd"], name="bn_d"),
    ]
    nodes = (down + main if downsample_first else main + down)
    nodes.append(helper.make_node("Add", ["bb", "bd"], ["y"], name="add"))
    inits = [init("wa", weights(4, 2, 3, 3)), init("wb", weights(4, 4, 3, 3)), init("wd", weights(4, 2, 1, 1))]
    inits += [init(n, np.abs(weights(4)) + 0.5) for n in ("g", "beta", "mean", "var")]
    return build(nodes, [value("x", [1, 2, 5, 5])], [value("y", [1, 4, 5, 5])], inits)


def pooling_model():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("AveragePool", ["r"], ["avg"], name="avgpool", kernel_shape=[2, 2]),
        helper.make_node("MaxPool", ["r"], ["mx"], name="maxpool", kernel_shape=[2, 2]),
        helper.make_node("Conv", ["avg", "w"], ["y1"], name="conv_avg"),
        helper.make_node("Conv", ["mx", "w"], ["y2"], name="conv_max"),
        helper.make_node("GlobalAveragePool", ["y2"], ["y3"], name="gap"),
    ]
    return build(nodes, [value("x", [1, 3, 4, 4])],
                 [value("y1", [1, 3, 3, 3]), value("y3", [1, 3, 1, 1])], [init("w", weights(3, 3, 1, 1))])


def pooled_attention(conv_reader=False):
    """PP-OCRv6 detection's attention block: c = conv(x); a = hardsigmoid(conv(global_pool(c)));
    y = c + c * a. With `conv_reader` another conv reads c too."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("GlobalAveragePool", ["c"], ["p"], name="gap"),
        helper.make_node("Conv", ["p", "w_se"], ["a0"], name="conv_se"),
        helper.make_node("HardSigmoid", ["a0"], ["a"], name="hsig"),
        helper.make_node("Mul", ["c", "a"], ["m"], name="mul"),
        helper.make_node("Add", ["c", "m"], ["y"], name="add"),
    ]
    outputs = [value("y", [1, 4, 4, 4])]
    if conv_reader:
        nodes.append(helper.make_node("Conv", ["c", "w_se"], ["y2"], name="conv_reader"))
        outputs.append(value("y2", [1, 4, 4, 4]))
    inits = [init("w", weights(4, 3, 1, 1)), init("w_se", weights(4, 4, 1, 1))]
    return build(nodes, [value("x", [1, 3, 4, 4])], outputs, inits)


def concat_model(consumer: bool):
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a"),
        helper.make_node("Conv", ["x", "wb"], ["b"], name="conv_b"),
        helper.make_node("Concat", ["a", "b"], ["cat"], name="concat", axis=1),
    ]
    out = value("cat", [1, 5, 3, 3])
    if consumer:
        nodes.append(helper.make_node("Conv", ["cat", "wc"], ["y"], name="conv_c"))
        out = value("y", [1, 2, 3, 3])
    inits = [init("wa", weights(2, 3, 1, 1)), init("wb", weights(3, 3, 1, 1)), init("wc", weights(2, 5, 1, 1))]
    return build(nodes, [value("x", [1, 3, 3, 3])], [out], inits if consumer else inits[:2])


def constant_node_conv():
    w = weights(2, 3, 1, 1)
    nodes = [
        helper.make_node("Constant", [], ["w"], name="w_const", value=onnx.numpy_helper.from_array(w)),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
    ]
    return build(nodes, [value("x", [1, 3, 2, 2])], [value("y", [1, 2, 2, 2])]), w


def three_convs():
    nodes = [helper.make_node("Conv", [src, "w"], [dst], name=name)
             for src, dst, name in (("x", "a", "/blocks.0/conv[1]"), ("a", "b", "block1_conv"),
                                    ("b", "y", "head_conv"))]
    return build(nodes, [value("x", [1, 2, 2, 2])], [value("y", [1, 2, 2, 2])], [init("w", weights(2, 2, 1, 1))])
