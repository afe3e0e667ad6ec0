"""Shared builders and references for the quantize tests (no tests of its own).

Tiny models are built in code with onnx.helper; `qdq_pairs` reads back the Q/DQ structure of a
quantized model so tests can assert it exactly; the numpy references evaluate graphs with
fake quantization (quantize-dequantize, round half to even) for comparison with onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def value(name, shape, elem=FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def build(nodes, inputs, outputs, initializers=(), opset=13, ir_version=8) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=ir_version)
    onnx.checker.check_model(model, full_check=True)
    return model


def attention_block(wq, wk, wv) -> onnx.ModelProto:
    """Single-head self-attention on x[2, 5, 8]: three projections with constant weights, then
    two MatMuls of activations (q @ k^T, softmax(scores) @ v)."""
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], name="v_proj"),
        helper.make_node("Transpose", ["k"], ["kt"], name="k_t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="qk"),
        helper.make_node("Softmax", ["scores"], ["probs"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["y"], name="pv"),
    ]
    return build(nodes, [value("x", [2, 5, 8])], [value("y", [2, 5, 8])],
                 [init("wq", wq), init("wk", wk), init("wv", wv)])


def check_and_run(model, feeds):
    """Full ONNX check, then run on onnxruntime CPU; returns the outputs."""
    import onnxruntime as ort

    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def qdq_pairs(model) -> dict[str, dict]:
    """tensor -> {scale, zero_point, axis, stored_int8, consumers} for every DQ in the model.

    `tensor` is the name of the original float tensor (the Q input, or for INT8-stored weights
    the DQ's initializer input); consumers are (node name or op type, input slot) pairs.
    """
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    pairs = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = producers.get(node.input[0])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if source is not None and source.op_type == "QuantizeLinear":
            tensor = source.input[0]
            q_attrs = {a.name: helper.get_attribute_value(a) for a in source.attribute}
            assert q_attrs.get("axis") == attrs.get("axis"), "Q and DQ axes differ"
            assert list(source.input[1:]) == list(node.input[1:]), "Q and DQ scales differ"
            stored = False
        else:
            tensor = node.input[0]
            stored = True
        consumers = [(c.name or c.op_type, slot) for c in graph.node
                     for slot, name in enumerate(c.input) if name == node.output[0]]
        assert tensor not in pairs, f"two Q/DQ pairs for {tensor}"
        pairs[tensor] = {
            "scale": inits[node.input[1]],
            "zero_point": inits[node.input[2]],
            "axis": attrs.get("axis"),
            "stored_int8": inits[node.input[0]] if stored else None,
            "consumers": sorted(consumers),
            "dq_output": node.output[0],
        }
    return pairs


def node_inputs(model, name) -> list[str]:
    return list(next(n for n in model.graph.node if n.name == name).input)


# ---- numpy references ---------------------------------------------------------------------

def ref_scale(amax) -> np.float32:
    return np.float32(float(amax) / 127.0)


def ref_weight_scales(w, axis):
    """max|w| per channel / 127 with an explicit loop over channels."""
    w = np.asarray(w, np.float32)
    if axis is None:
        return np.float32(float(np.abs(w).max()) / 127.0)
    out = np.empty(w.shape[axis], np.float32)
    for c in range(w.shape[axis]):
        out[c] = np.float32(float(np.abs(np.take(w, c, axis=axis)).max()) / 127.0)
    return out


def fake_quant(x, scale, axis=None):
    """quantize (x / scale, half to even, clamp) then dequantize, in float32."""
    x = np.asarray(x, np.float32)
    scale = np.asarray(scale, np.float32)
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
    q = np.clip(np.rint(x / scale), -128, 127)
    return (q * scale).astype(np.float32)


def conv2d(x, w, b=None, pad=0):
    """NCHW convolution, stride 1, with a loop over kernel taps."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    _, _, height, width = x.shape
    _, _, kh, kw = w.shape
    oh, ow = height - kh + 1, width - kw + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow), np.float32)
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nchw,mc->nmhw", x[:, :, i:i + oh, j:j + ow], w[:, :, i, j])
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out.astype(np.float32)
