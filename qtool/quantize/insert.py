"""Apply a Q/DQ plan to a model (in place): scales, zero-points, Q/DQ nodes, rewired inputs.

Names derive from the quantized tensor: `<t>_QuantizeLinear`, `<t>_DequantizeLinear` (nodes),
`<t>_scale`, `<t>_zero_point`, `<t>_quantized`, `<t>_dequantized` (tensors), with a numeric
suffix only when a name is taken. Each pair sits right after the tensor's producer (at the top
for graph inputs and initializers), so the graph stays topologically sorted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool.graph.constants import constant_node_value
from qtool.graph.topology import Topology
from qtool.placement.plan import Plan
from qtool.quantize.scales import quantize_int8, scale_from_amax, weight_scales


@dataclass
class InsertStats:
    activation_pairs: int = 0
    weights_per_channel: int = 0
    weights_per_tensor: int = 0


class NameAllocator:
    """Unique node and tensor names (two separate namespaces, as in ONNX)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.tensors: set[str] = set()
        self.nodes: set[str] = set()
        graph = model.graph
        self.tensors.update(init.name for init in graph.initializer)
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            self.tensors.add(value.name)
        self._scan(graph)

    def _scan(self, graph: onnx.GraphProto) -> None:
        for node in graph.node:
            self.nodes.add(node.name)
            self.tensors.update(node.input)
            self.tensors.update(node.output)
            for attr in node.attribute:
                for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                    self.tensors.update(init.name for init in sub.initializer)
                    self._scan(sub)

    @staticmethod
    def _unique(base: str, used: set[str]) -> str:
        name, counter = base, 0
        while name in used:
            counter += 1
            name = f"{base}_{counter}"
        used.add(name)
        return name

    def tensor(self, base: str) -> str:
        return self._unique(base, self.tensors)

    def node(self, base: str) -> str:
        return self._unique(base, self.nodes)


def _weight_sources(model: onnx.ModelProto, names) -> dict:
    """name -> the initializer or Constant node holding it; values are read one at a time, so a
    large model's weights are never all in memory twice."""
    wanted = set(names)
    sources = {init.name: init for init in model.graph.initializer if init.name in wanted}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] in wanted:
            sources[node.output[0]] = node
    return sources


def _weight_value(source) -> np.ndarray:
    if isinstance(source, onnx.NodeProto):
        return constant_node_value(source)
    return numpy_helper.to_array(source)


class _QdqInsertion:
    """One Q/DQ insertion into a model: the nodes and initializers to add and where they go."""

    def __init__(self, model: onnx.ModelProto, plan: Plan) -> None:
        self.model = model
        self.plan = plan
        self.topo = Topology.of(model.graph)
        self.names = NameAllocator(model)
        self.top: list[onnx.NodeProto] = []
        self.after: dict[int, list[onnx.NodeProto]] = defaultdict(list)
        self.initializers: list[onnx.TensorProto] = []
        self.replacement: dict[str, str] = {}

    def _place(self, tensor: str, nodes: list[onnx.NodeProto]) -> None:
        producer = self.topo.producer.get(tensor)
        (self.top if producer is None else self.after[producer]).extend(nodes)

    def _constant(self, base: str, array: np.ndarray) -> str:
        name = self.names.tensor(base)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def _scale_and_zero(self, tensor: str, scales: np.ndarray) -> tuple[str, str]:
        scale = self._constant(f"{tensor}_scale", np.asarray(scales, dtype=np.float32))
        zero = self._constant(f"{tensor}_zero_point", np.zeros(np.shape(scales), dtype=np.int8))
        return scale, zero

    def _dequantize(self, tensor: str, source: str, scale: str, zero: str, axis) -> onnx.NodeProto:
        output = self.names.tensor(f"{tensor}_dequantized")
        self.replacement[tensor] = output
        extra = {} if axis is None else {"axis": axis}
        return helper.make_node("DequantizeLinear", [source, scale, zero], [output],
                                name=self.names.node(f"{tensor}_DequantizeLinear"), **extra)

    def _quantize(self, tensor: str, scale: str, zero: str, axis) -> onnx.NodeProto:
        output = self.names.tensor(f"{tensor}_quantized")
        extra = {} if axis is None else {"axis": axis}
        return helper.make_node("QuantizeLinear", [tensor, scale, zero], [output],
                                name=self.names.node(f"{tensor}_QuantizeLinear"), **extra)

    def activations(self, stats: InsertStats) -> None:
        for tensor, amax in self.plan.shared_amax().items():
            scale, zero = self._scale_and_zero(tensor, np.float32(scale_from_amax(amax, tensor)))
            q = self._quantize(tensor, scale, zero, None)
            dq = self._dequantize(tensor, q.output[0], scale, zero, None)
            self._place(tensor, [q, dq])
            stats.activation_pairs += 1

    def weights(self, stats: InsertStats, store_int8: bool) -> None:
        sources = _weight_sources(self.model, self.plan.weights)
        for tensor, spec in self.plan.weights.items():
            weight = _weight_value(sources[tensor])
            scales = weight_scales(weight, spec.axis)
            scale, zero = self._scale_and_zero(tensor, scales)
            if store_int8:
                stored = self._constant(f"{tensor}_quantized", quantize_int8(weight, scales, spec.axis))
                self.top.append(self._dequantize(tensor, stored, scale, zero, spec.axis))
            else:
                q = self._quantize(tensor, scale, zero, spec.axis)
                dq = self._dequantize(tensor, q.output[0], scale, zero, spec.axis)
                self._place(tensor, [q, dq])
            if spec.axis is None:
                stats.weights_per_tensor += 1
            else:
                stats.weights_per_channel += 1

    def rewrite(self) -> None:
        graph = self.model.graph
        for (index, slot), tensor in self.plan.rewires.items():
            self.topo.nodes[index].input[slot] = self.replacement[tensor]
        ordered = list(self.top)
        for index, node in enumerate(self.topo.nodes):
            ordered.append(node)
            ordered.extend(self.after.get(index, ()))
        del graph.node[:]
        graph.node.extend(ordered)
        graph.initializer.extend(self.initializers)
        if self.model.ir_version < 4:
            # Before IR 4 every initializer must also be declared as a graph input.
            graph.input.extend(helper.make_tensor_value_info(init.name, init.data_type, init.dims)
                               for init in self.initializers)


def _drop_unused_constants(model: onnx.ModelProto, names) -> None:
    """Remove FP32 weights nothing reads any more (their INT8 copies replaced them)."""
    graph = model.graph
    topo = Topology.of(graph)
    unused = {name for name in names if topo.use_count(name) == 0}
    if not unused:
        return
    # Delete in place, back to front: rebuilding the fields would copy every remaining weight.
    for field in (graph.initializer, graph.input, graph.value_info):
        for position in reversed(range(len(field))):
            if field[position].name in unused:
                del field[position]
    for position in reversed(range(len(graph.node))):
        node = graph.node[position]
        if node.op_type == "Constant" and node.output[0] in unused:
            del graph.node[position]


def insert_qdq(model: onnx.ModelProto, plan: Plan, weights: str = "fp32") -> InsertStats:
    """Rewrite `model` in place according to `plan`; weights "fp32" (Q+DQ) or "int8" (DQ only)."""
    stats = InsertStats()
    inserter = _QdqInsertion(model, plan)
    inserter.activations(stats)
    inserter.weights(stats, store_int8=weights == "int8")
    inserter.rewrite()
    if weights == "int8":
        _drop_unused_constants(model, plan.weights)
    return stats
