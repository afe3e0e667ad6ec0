"""Small float and Q/DQ models shared by tests of several packages: built in code, each with
fixed seeds, so every test that uses one sees the same graph and weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.helpers.onnx_graphs import build, init, value
from tests.tiny_models import conv_relu_gemm, save


def residual_classifier(seed=3):
    """x -> conv1(pad 1) -> relu (r) -> conv2(pad 1) -> Add(., r) -> relu -> GAP -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    params = {
        "w1": rng.normal(size=(4, 3, 3, 3)).astype(np.float32) * 0.5,
        "b1": rng.normal(size=4).astype(np.float32) * 0.1,
        "w2": rng.normal(size=(4, 4, 3, 3)).astype(np.float32) * 0.3,
        "fc": rng.normal(size=(5, 4)).astype(np.float32),
        "fc_b": rng.normal(size=5).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r"], name="relu1"),
        helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["rs"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["rs"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc", "fc_b"], ["y"], name="fc", transB=1),
    ]
    model = build(nodes, [value("x", [2, 3, 6, 6])], [value("y", [2, 5])],
                  [init(k, v) for k, v in params.items()])
    return model, params


RESIDUAL_AMAX = {"x": 2.0, "r": 3.0, "rs": 4.0, "flat": 2.5}


def weight_heavy(seed=0):
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2"], ["y"], name="fc2", transB=1)]
    inits = [init("w1", rng.normal(size=(256, 256)).astype(np.float32)),
             init("b1", rng.normal(size=256).astype(np.float32)),
             init("w2", rng.normal(size=(128, 256)).astype(np.float32))]
    return build(nodes, [value("x", [1, 256])], [value("y", [1, 128])], inits)


def planted_model() -> onnx.ModelProto:
    """x -> conv1 -> relu1 -> conv2 -> relu2 -> conv3 -> y, with one channel of relu1 near 500
    (a huge bias) that conv2 barely uses: the calibrated amax of conv2's input is ~500, so its
    INT8 scale (~4) crushes the other channels (values ~1) to zero. conv2 is the fragile layer."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(scale=0.5, size=(4, 3, 3, 3)).astype(np.float32)
    b1 = np.array([500, 0.5, 0.5, 0.5], np.float32)
    w2 = rng.normal(scale=0.5, size=(4, 4, 3, 3)).astype(np.float32)
    w2[:, 0] *= 1e-3
    w3 = rng.normal(size=(2, 4, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w1, "w1"), (b1, "b1"), (w2, "w2"), (w3, "w3"))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["y"], name="conv3"),
    ]
    graph = helper.make_graph(
        nodes, "planted", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def qdq_conv_model(batch="N") -> onnx.ModelProto:
    """x[N,1,4,4] -> Q -> DQ -> Conv(DQ(int8 weight)) -> y[N,2,4,4]."""
    weight = numpy_helper.from_array(np.arange(18, dtype=np.int8).reshape(2, 1, 3, 3) - 9, "w_q")
    initializers = [
        weight,
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zp"),
        numpy_helper.from_array(np.array([0.01, 0.02], np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(2, np.int8), "w_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_Q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="x_DQ"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_DQ", axis=0),
        helper.make_node("Conv", ["x_dq", "w"], ["y"], name="conv0", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2, 4, 4])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def float_conv_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv0")], "fp32",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def conv_net_with_data(folder):
    """net.onnx (tiny_models.conv_relu_gemm) and x.npy (4 samples for it) written in `folder`,
    which is returned."""
    save(conv_relu_gemm(), folder / "net.onnx")
    x = np.random.default_rng(0).normal(size=(4, 2, 6, 6)).astype(np.float32)
    np.save(folder / "x.npy", x)
    return folder
