"""Q/DQ graphs written node by node, as TensorRT's placement rules expect them: `Builder` names
every pair `<tag>_q`/`<tag>_dq`, and `clean_model` is a residual conv net with no defect unless
an argument plants one (tests of `qtool check` and of passes that must keep its verdict); `found`
lists the (code, node) pairs of a model's findings."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qtool.quantize.check import check_model

F = TensorProto.FLOAT


class Builder:
    """Nodes and initializers of a tiny graph; every Q/DQ pair gets names `<tag>_q`/`<tag>_dq`."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(0)

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs, output: str, name: str | None = None, **attrs) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=name or output, **attrs))
        return output

    def qdq(self, x: str, tag: str, scale=0.05, zero_point=0, zp_dtype=np.int8, axis=None,
            dq_scale=None) -> str:
        scale_name = self.const(f"{tag}_scale", np.asarray(scale, np.float32))
        inputs = [x, scale_name]
        if zero_point is not None:
            inputs.append(self.const(f"{tag}_zp", np.asarray(zero_point, zp_dtype)))
        attrs = {} if axis is None else {"axis": axis}
        self.node("QuantizeLinear", inputs, f"{tag}_int", name=f"{tag}_q", **attrs)
        dq_inputs = list(inputs)
        dq_inputs[0] = f"{tag}_int"
        if dq_scale is not None:
            dq_inputs[1] = self.const(f"{tag}_dq_scale", np.asarray(dq_scale, np.float32))
        return self.node("DequantizeLinear", dq_inputs, f"{tag}_deq", name=f"{tag}_dq", **attrs)

    def weight(self, tag: str, shape, axis=0, scales=None, explicit_axis=True) -> str:
        w = self.const(tag, self.rng.normal(size=shape).astype(np.float32))
        count = shape[axis] if scales is None else scales
        scale = np.linspace(0.01, 0.02, count).astype(np.float32)
        return self.qdq(w, tag, scale=scale, zero_point=np.zeros(count, np.int8),
                        axis=axis if explicit_axis else None)

    def model(self, inputs, outputs, opset=13) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "g", inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        return model


def clean_model(act_scale=0.05, act_zp=0, act_zp_dtype=np.int8, branch_scale=0.1,
                relu_before_q=True, opset=13, checked=True) -> onnx.ModelProto:
    """Residual conv net placed by TensorRT's rules; the arguments plant single defects."""
    b = Builder()
    x = b.qdq("x", "x", scale=act_scale, zero_point=act_zp, zp_dtype=act_zp_dtype)
    c1 = b.node("Conv", [x, b.weight("w1", (4, 4, 3, 3)), b.const("b1", np.zeros(4, np.float32))],
                "c1", pads=[1, 1, 1, 1])
    if relu_before_q:
        r1 = b.qdq(b.node("Relu", [c1], "r1"), "r1", scale=0.1)
    else:  # the conv's own output quantized, Relu after the pair
        r1 = b.node("Relu", [b.qdq(c1, "c1", scale=0.1)], "r1")
    c2 = b.node("Conv", [r1, b.weight("w2", (4, 4, 1, 1))], "c2")
    add = b.node("Add", [c2, x], "add")  # residual input already quantized: the Add fuses
    r2 = b.qdq(b.node("Relu", [add], "r2"), "r2", scale=0.1)
    c3 = b.node("Conv", [r1, b.weight("w3", (4, 4, 1, 1))], "c3")
    r3 = b.qdq(b.node("Relu", [c3], "r3"), "r3", scale=branch_scale)
    pooled = b.node("MaxPool", [r2], "mp", kernel_shape=[1, 1])
    cat = b.qdq(b.node("Concat", [pooled, r3], "cat", axis=1), "cat", scale=0.1)
    flat = b.qdq(b.node("Flatten", [b.node("GlobalAveragePool", [cat], "gap")], "flat"), "flat")
    b.node("Gemm", [flat, b.weight("fc_w", (3, 8)), b.const("fc_b", np.zeros(3, np.float32))],
           "y", name="fc", transB=1)
    model = b.model([helper.make_tensor_value_info("x", F, [1, 4, 6, 6])],
                    [helper.make_tensor_value_info("y", F, [1, 3])], opset=opset)
    if checked:
        onnx.checker.check_model(model, full_check=True)
    return model


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
