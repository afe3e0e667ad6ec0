"""Tiny ONNX models built in code for tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, inputs, outputs, initializers, opset=17):
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def conv_relu_gemm(batch="N", seed=0) -> onnx.ModelProto:
    """x[N,2,6,6] -> Conv(4) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(3)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b")
    gw = numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "gw")
    gb = numpy_helper.from_array(np.zeros(3, np.float32), "gb")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "gw", "gb"], ["y"], name="fc", transB=1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [w, b, gw, gb],
    )


def two_input_matmul(seed=0) -> onnx.ModelProto:
    """a[N,4,8] @ b[N,8,5] -> MatMul -> Add(c[N,4,5]) -> MatMul(w[5,3]): two activation MatMul inputs."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(5, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["a", "b"], ["ab"], name="attn"),
        helper.make_node("Add", ["ab", "c"], ["sum"], name="add"),
        helper.make_node("MatMul", ["sum", "w"], ["y"], name="proj"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4, 8]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 8, 5]),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 3])],
        [w],
    )


def save(model: onnx.ModelProto, path) -> str:
    onnx.save_model(model, str(path))
    return str(path)


def relu6_then(tail: list, channels: int, size: int, output_shape: list,
               initializers=()) -> onnx.ModelProto:
    """x[N, channels, size, size] -> Clip(0, 6) "clipped" -> the `tail` nodes, ending in "y"."""
    bounds = [numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
              numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["clipped"], name="relu6"), *tail]
    return _model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        bounds + list(initializers))


def relu6_conv(weight: np.ndarray, size: int) -> onnx.ModelProto:
    """x[N, C, size, size] -> Clip(0, 6) "clipped" -> 1x1 Conv "conv" with `weight` [K, C, 1, 1]
    -> y[N, K, size, size]."""
    out_channels, channels = weight.shape[:2]
    conv = helper.make_node("Conv", ["clipped", "w"], ["y"], name="conv")
    return relu6_then([conv], channels, size, ["N", out_channels, size, size],
                      [numpy_helper.from_array(weight.astype(np.float32), "w")])


def state_step(seed=0, batch="batch") -> onnx.ModelProto:
    """One step of a recurrent model, laid out like Silero VAD: x[batch,16], state[2,batch,8] (the
    batch on axis 1) and a scalar sr[] (int64). h = x @ w1; z = tanh((h + state[0] + state[1]) *
    sr / 16000); out = z @ w2 [batch,1]; new_state = [z, h] [2,batch,8]."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.normal(size=(16, 8)).astype(np.float32) / 4, "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(8, 1)).astype(np.float32), "w2")
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    rate = numpy_helper.from_array(np.array(16000, np.float32), "rate")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="in_proj"),
        helper.make_node("ReduceSum", ["state", "axes"], ["carried"], name="carry", keepdims=0),
        helper.make_node("Add", ["h", "carried"], ["pre"], name="add_state"),
        helper.make_node("Cast", ["sr"], ["sr_f"], name="sr_cast", to=TensorProto.FLOAT),
        helper.make_node("Div", ["sr_f", "rate"], ["gain"], name="gain"),
        helper.make_node("Mul", ["pre", "gain"], ["scaled"], name="scale"),
        helper.make_node("Tanh", ["scaled"], ["z"], name="tanh"),
        helper.make_node("MatMul", ["z", "w2"], ["out"], name="out_proj"),
        helper.make_node("Unsqueeze", ["z", "axes"], ["z1"], name="z_axis"),
        helper.make_node("Unsqueeze", ["h", "axes"], ["h1"], name="h_axis"),
        helper.make_node("Concat", ["z1", "h1"], ["new_state"], name="new_state", axis=0),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, batch, 8]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 1]),
         helper.make_tensor_value_info("new_state", TensorProto.FLOAT, [2, batch, 8])],
        [w1, w2, axes, rate],
    )


def state_step_reference(x: np.ndarray, state: np.ndarray, sr) -> tuple[np.ndarray, np.ndarray]:
    """state_step in numpy (float64), for checking what onnxruntime computes on fed batches."""
    model = state_step()
    weights = {init.name: numpy_helper.to_array(init).astype(np.float64)
               for init in model.graph.initializer}
    h = x.astype(np.float64) @ weights["w1"]
    z = np.tanh((h + state.astype(np.float64).sum(axis=0)) * float(sr) / 16000.0)
    return z @ weights["w2"], np.stack([z, h])


def pass_through(chosen: str, shape: list, outputs: tuple[str, ...] = ("y",)) -> onnx.ModelProto:
    """Inputs `ref` and `cand` of `shape`; every output is a copy of input `chosen`. A reference
    passing `ref` and a candidate passing `cand` make compare see hand-made outputs exactly."""
    nodes = [helper.make_node("Identity", [chosen], [name], name=f"copy_{name}")
             for name in outputs]
    return _model(
        nodes,
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name in ("ref", "cand")],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name in outputs],
        [],
    )


def sequence_head(weight: np.ndarray, softmax: bool = True) -> onnx.ModelProto:
    """x[N, T, F] -> MatMul(weight [F, C]) (-> Softmax over C): per-position class scores."""
    features, classes = weight.shape
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits" if softmax else "y"], name="fc")]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=2))
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T", classes])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")],
    )


def constant_reshape_gemm() -> onnx.ModelProto:
    """x[2,2] -> Reshape(Constant [1, 4]) -> Gemm(w[3,4]) -> y, and Shape(y) -> dims (int64); the
    initializer w is also listed as a graph input, as old IR versions do."""
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    nodes = [
        helper.make_node("Constant", [], ["shape"],
                         value=numpy_helper.from_array(np.array([1, 4], np.int64))),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w"], ["y"], transB=1),
        helper.make_node("Shape", ["y"], ["dims"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("dims", TensorProto.INT64, None)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
