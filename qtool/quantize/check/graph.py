"""The facts every check reads about a Q/DQ model: its topology, constants, types and shapes, and
how its Q/DQ nodes hold their scales and zero-points.

Who produces and who reads each tensor comes from graph.topology.Topology, the same map placement
uses. Scales and zero-points are read from initializers or Constant nodes; a tensor computed only
from constants is "constant-derived" (TensorRT folds it) but has no value here.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from qtool.graph.attributes import attribute
from qtool.graph.constants import constant_node_value
from qtool.graph.op_types import DEQUANTIZE_LINEAR, PASS_THROUGH_OPS, QUANTIZE_LINEAR, RELU_LIKE_OPS
from qtool.graph.topology import Topology
from qtool.graph.types import infer_shapes
from qtool.io.model import opset_version

# A dequantized tensor stays quantized through these, looking back (they commute with a positive
# per-tensor scale).
_SCALE_COMMUTING_OPS = PASS_THROUGH_OPS | RELU_LIKE_OPS


def is_default_domain(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


class QdqGraph:
    """The facts every check reads: producers, consumers, constants, types and shapes."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.opset = opset_version(model)
        self.topo = Topology.of(graph)
        self.nodes = self.topo.nodes
        self.graph_outputs = self.topo.graph_outputs
        self._initializers = {init.name: init for init in graph.initializer}
        self._constant_nodes = {node.output[0]: node for node in self.nodes
                                if node.op_type == "Constant" and node.output}
        self._values: dict[str, np.ndarray | None] = {}
        self.constant_derived = self._constant_closure()
        self.types: dict[str, int] = {}
        self.shapes: dict[str, tuple | None] = {}
        self._read_value_infos(infer_shapes(model).graph)
        self.qdq_nodes = [node for node in self.nodes
                          if node.op_type in (QUANTIZE_LINEAR, DEQUANTIZE_LINEAR)
                          and is_default_domain(node)]
        self.quantize_nodes = [node for node in self.qdq_nodes if node.op_type == QUANTIZE_LINEAR]
        self.dequantize_nodes = [node for node in self.qdq_nodes
                                 if node.op_type == DEQUANTIZE_LINEAR]

    # -- topology --------------------------------------------------------------------------
    def producer_of(self, tensor: str) -> onnx.NodeProto | None:
        return self.topo.producer_node(tensor)

    def readers(self, tensor: str) -> list[tuple[onnx.NodeProto, int]]:
        """(node, slot) of every node reading the tensor directly."""
        return self.topo.consumer_nodes(tensor)

    def final_consumers(self, tensor: str, through) -> tuple[list[onnx.NodeProto], bool]:
        """Ops reading a tensor, looking forward through `through` ops, each once; and whether it
        (or a pass-through result) is a graph output."""
        reads, reaches_output = self.topo.reads_through(tensor, through)
        indices = dict.fromkeys(index for index, _ in reads)
        return [self.nodes[index] for index in indices], reaches_output

    def source_dequantize(self, tensor: str) -> onnx.NodeProto | None:
        """The DequantizeLinear a tensor comes from, looking back through pass-through ops and
        ReLU-like activations (which commute with a positive scale)."""
        index = self.topo.origin(tensor, _SCALE_COMMUTING_OPS)
        node = None if index is None else self.nodes[index]
        return node if self.is_dequantize(node) else None

    # -- constants -------------------------------------------------------------------------
    def _constant_closure(self) -> set[str]:
        """Tensors fixed at build time: constants and everything computed only from them."""
        derived = set(self._initializers) | set(self._constant_nodes)
        changed = True
        while changed:  # one pass for a topologically sorted graph; more only if unsorted
            changed = False
            for node in self.nodes:
                inputs = [name for name in node.input if name]
                if not inputs or any(name not in derived for name in inputs):
                    continue
                for name in node.output:
                    if name and name not in derived:
                        derived.add(name)
                        changed = True
        return derived

    def value(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant node output; None for anything else."""
        if name not in self._values:
            if name in self._initializers:
                self._values[name] = numpy_helper.to_array(self._initializers[name])
            elif name in self._constant_nodes:
                self._values[name] = constant_node_value(self._constant_nodes[name])
            else:
                self._values[name] = None
        return self._values[name]

    # -- types and shapes ------------------------------------------------------------------
    def _read_value_infos(self, graph: onnx.GraphProto) -> None:
        for value in list(graph.input) + list(graph.value_info) + list(graph.output):
            if not value.type.HasField("tensor_type"):
                continue
            tensor_type = value.type.tensor_type
            if tensor_type.elem_type:
                self.types[value.name] = tensor_type.elem_type
            if tensor_type.HasField("shape"):
                self.shapes[value.name] = tuple(
                    dim.dim_value if dim.HasField("dim_value") else None for dim in tensor_type.shape.dim
                )
        for init in self._initializers.values():
            self.types[init.name] = init.data_type
            self.shapes[init.name] = tuple(init.dims)
        for name, node in self._constant_nodes.items():
            for attr in node.attribute:
                if attr.name == "value":
                    self.types[name] = attr.t.data_type
                    self.shapes[name] = tuple(attr.t.dims)

    def elem_type(self, name: str) -> int:
        return self.types.get(name, 0)

    # -- Q/DQ helpers ----------------------------------------------------------------------
    @staticmethod
    def scale_name(node: onnx.NodeProto) -> str:
        return node.input[1] if len(node.input) > 1 else ""

    @staticmethod
    def zero_point_name(node: onnx.NodeProto) -> str:
        return node.input[2] if len(node.input) > 2 else ""

    def scale(self, node: onnx.NodeProto) -> np.ndarray | None:
        name = self.scale_name(node)
        return self.value(name) if name else None

    def zero_point(self, node: onnx.NodeProto) -> np.ndarray | None:
        name = self.zero_point_name(node)
        return self.value(name) if name else None

    def is_per_channel(self, node: onnx.NodeProto) -> bool:
        scale = self.scale(node)
        return scale is not None and scale.size > 1

    def quantized_type(self, node: onnx.NodeProto) -> int:
        """Element type of the integer side of a Q/DQ (0 when unknown)."""
        zero_point = self.zero_point_name(node)
        if zero_point and self.elem_type(zero_point):
            return self.elem_type(zero_point)
        if node.op_type == QUANTIZE_LINEAR:
            # No zero-point: the output_dtype attribute (opset 21) or ONNX's default, UINT8.
            return attribute(node, "output_dtype", 0) or TensorProto.UINT8
        return self.elem_type(node.input[0])

    @staticmethod
    def is_dequantize(node: onnx.NodeProto | None) -> bool:
        return node is not None and node.op_type == DEQUANTIZE_LINEAR and is_default_domain(node)

    @staticmethod
    def is_quantize(node: onnx.NodeProto | None) -> bool:
        return node is not None and node.op_type == QUANTIZE_LINEAR and is_default_domain(node)
