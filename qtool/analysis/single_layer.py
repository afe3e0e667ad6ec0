"""The quantized layers of a Q/DQ model, and FP32 models with exactly one of them quantized.

A layer is a node of the quantized model that reads at least one dequantized tensor (a Conv, a
residual Add, a Concat, ...). Its single-layer model is the FP32 model with only that node's
inputs quantized, using the very scales of the full Q/DQ model:

* an activation input gets a copy of its QuantizeLinear -> DequantizeLinear pair;
* a weight gets its fake-quantized value, DQ(Q(w)) = int8(w / s) * s in float32, stored as a
  constant: the same numbers the Q/DQ pair computes, but a constant weight keeps the runtime's
  fast (pre-packed) convolution, so a single-layer model runs about as fast as the FP32 one.

Building one such model per layer and loading it takes a small fraction of a second; running it
is the cost that remains, which is why sensitivity runs on a small sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool.graph.constants import constant_node_value
from qtool.graph.topology import Topology, node_label
from qtool.io.model import ensure_opset
from qtool.quantize.scales import broadcast_scale, quantize_int8

_Q = "QuantizeLinear"
_DQ = "DequantizeLinear"


@dataclass
class QuantizedInput:
    slot: int
    tensor: str                  # the float tensor that is quantized (the Q's input)
    quantize: onnx.NodeProto     # the pair in the full Q/DQ model
    dequantize: onnx.NodeProto


@dataclass
class Layer:
    name: str                    # node name (first output for unnamed nodes): what exclusion matches
    op_type: str
    inputs: list[QuantizedInput] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"node": self.name, "op_type": self.op_type,
                "inputs": [item.tensor for item in self.inputs]}


def find_layers(quantized: onnx.ModelProto) -> list[Layer]:
    """Every non-Q/DQ node reading a DequantizeLinear output that follows a QuantizeLinear, in
    graph order. (Models with INT8-stored weights have no Q in front of the weight's DQ; quantize
    with weights='fp32' for analysis.)"""
    topo = Topology.of(quantized.graph)
    layers = []
    for node in topo.nodes:
        if node.op_type in (_Q, _DQ):
            continue
        inputs = []
        for slot, name in enumerate(node.input):
            dq = topo.producer_node(name) if name else None
            if dq is None or dq.op_type != _DQ:
                continue
            q = topo.producer_node(dq.input[0])
            if q is None or q.op_type != _Q:
                raise ValueError(f"{node_label(dq)} does not follow a QuantizeLinear; quantize with "
                                 "weights='fp32' for sensitivity")
            inputs.append(QuantizedInput(slot, q.input[0], q, dq))
        if inputs:
            layers.append(Layer(node_label(node), node.op_type, inputs))
    return layers


def _initializer_values(model: onnx.ModelProto, names: set[str]) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer
              if init.name in names}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] in names:
            values[node.output[0]] = constant_node_value(node)
    return values


def _axis(node: onnx.NodeProto, scale: np.ndarray) -> int | None:
    """None for a per-tensor (0-d) scale; else the node's axis (ONNX default 1)."""
    if scale.ndim == 0:
        return None
    for attr in node.attribute:
        if attr.name == "axis":
            return attr.i
    return 1


def fake_quantized_weight(weight: np.ndarray, scale: np.ndarray, axis: int | None) -> np.ndarray:
    """DQ(Q(w)) as DequantizeLinear computes it: float32(int8) * scale, one rounding."""
    q = quantize_int8(weight, scale, axis).astype(np.float32)
    axis = axis if axis is None or axis >= 0 else axis + weight.ndim
    return (q * broadcast_scale(scale, weight.ndim, axis)).astype(np.float32)


class SingleLayerModels:
    """Builds, for any layer of `quantized`, the FP32 model with only that layer quantized."""

    def __init__(self, fp32: onnx.ModelProto, quantized: onnx.ModelProto):
        self.fp32 = ensure_opset(fp32)  # what quantize_model quantized (opset >= 13)
        self.layers = find_layers(quantized)
        self._positions = {node_label(node): index for index, node in enumerate(self.fp32.graph.node)}
        self._fp32_constants = {init.name for init in self.fp32.graph.initializer}
        self._fp32_constants.update(node.output[0] for node in self.fp32.graph.node
                                    if node.op_type == "Constant")
        wanted = set()
        for layer in self.layers:
            for item in layer.inputs:
                wanted.update(item.quantize.input[1:])
        self._qparams = {init.name: init for init in quantized.graph.initializer
                         if init.name in wanted}
        missing = wanted - set(self._qparams)
        if missing:
            raise ValueError(f"scale/zero-point {min(missing)!r} is not an initializer")

    def build(self, layer: Layer) -> onnx.ModelProto:
        model = onnx.ModelProto()
        model.CopyFrom(self.fp32)
        graph = model.graph
        position = self._positions.get(layer.name)
        if position is None:
            raise ValueError(f"node {layer.name!r} of the quantized model is not in the FP32 model")
        target = graph.node[position]
        weights = _initializer_values(model, {item.tensor for item in layer.inputs
                                              if item.tensor in self._fp32_constants})
        inserted: list[onnx.NodeProto] = []
        initializers: list[onnx.TensorProto] = []
        replaced: dict[str, str] = {}
        for item in layer.inputs:
            if target.input[item.slot] != item.tensor:
                raise ValueError(f"{layer.name} input {item.slot} is {target.input[item.slot]!r} in "
                                 f"the FP32 model, not {item.tensor!r}")
            if item.tensor not in replaced:
                if item.tensor in weights:
                    scale = numpy_helper.to_array(self._qparams[item.quantize.input[1]])
                    value = fake_quantized_weight(weights[item.tensor], scale,
                                                  _axis(item.quantize, scale))
                    name = item.dequantize.output[0]
                    initializers.append(numpy_helper.from_array(value, name))
                else:
                    inserted += [_copy(item.quantize), _copy(item.dequantize)]
                    initializers += [self._qparams[name] for name in item.quantize.input[1:]
                                     if name not in {init.name for init in initializers}]
                    name = item.dequantize.output[0]
                replaced[item.tensor] = name
            target.input[item.slot] = replaced[item.tensor]
        graph.initializer.extend(initializers)
        if model.ir_version < 4:
            graph.input.extend(helper.make_tensor_value_info(init.name, init.data_type, init.dims)
                               for init in initializers)
        nodes = list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes[:position] + inserted + nodes[position:])
        return model


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy
