"""The model under FP16 conversion: its nodes in dependency order, who reads each tensor, the
element types, its constants, which nodes run in float16, and the types that follow from that."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool.graph.constants import constant_node_value
from qtool.graph.types import infer_shapes
from qtool.io.model import opset_version
from qtool.quantize.fp16.numbers import FLOAT, HALF
from qtool.quantize.fp16.ops import ALWAYS_FP32_OPS
from qtool.quantize.fp16.order import subgraph_reads, topological
from qtool.quantize.fp16.schema import HalfCapableSlots


class GraphUnderConversion:
    """A copy of the model being converted and what the conversion knows about it.

    `half` holds the indices (into `nodes`) of the nodes that run in float16; the passes in
    modes.py decide it, and the type queries below answer from it."""

    def __init__(self, model: onnx.ModelProto, keep_io_types: bool, fp32_ops: frozenset[str],
                 fp32_nodes: frozenset[str]):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.graph = self.model.graph
        self.keep_io = keep_io_types
        self.fp32_ops = fp32_ops | ALWAYS_FP32_OPS
        self.fp32_nodes = fp32_nodes
        self.opset = opset_version(self.model)
        self.initializers = {init.name: init for init in self.graph.initializer}
        self.runtime_inputs = [v.name for v in self.graph.input if v.name not in self.initializers]
        self.nodes = topological(list(self.graph.node),
                                 set(self.initializers) | set(self.runtime_inputs))
        self.constant_nodes = {node.output[0]: node for node in self.nodes
                               if node.op_type == "Constant" and node.output
                               and constant_node_value(node) is not None}
        self.graph_outputs = [v.name for v in self.graph.output]
        self.subgraph_reads = set().union(*[subgraph_reads(n) for n in self.nodes]) if self.nodes else set()
        self.consumers: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for index, node in enumerate(self.nodes):
            for slot, name in enumerate(node.input):
                if name:
                    self.consumers[name].append((index, slot))
        self._read_types()
        self.schemas = [HalfCapableSlots(node, self.opset) for node in self.nodes]
        self.taken = ({name for node in self.nodes for name in node.output}
                      | {node.name for node in self.nodes} | set(self.initializers)
                      | {v.name for v in self.graph.input} | self.subgraph_reads)
        self.producer_index = {name: (i, s) for i, node in enumerate(self.nodes)
                               for s, name in enumerate(node.output) if name}
        self.half: set[int] = set()
        self.constant_derived: set[str] = set()

    # -- facts -------------------------------------------------------------------------------
    def _read_types(self) -> None:
        inferred = infer_shapes(self.model).graph
        self.types: dict[str, int] = {}
        self.value_infos: dict[str, onnx.ValueInfoProto] = {}
        for value in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
            if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
                self.types[value.name] = value.type.tensor_type.elem_type
                self.value_infos[value.name] = value
        for init in self.graph.initializer:
            self.types[init.name] = init.data_type
        for name, node in self.constant_nodes.items():
            self.types[name] = helper.np_dtype_to_tensor_dtype(constant_node_value(node).dtype)

    def is_constant(self, name: str) -> bool:
        return name in self.initializers or name in self.constant_nodes

    def closure(self, seeds: set[str], also: set[str], skip=()) -> set[str]:
        """Outputs of nodes whose inputs all lie in seeds | also and touch seeds at least once."""
        found = set(seeds)
        for node in self.nodes:
            inputs = [name for name in node.input if name]
            if node.op_type in skip or not inputs:
                continue
            if all(name in found or name in also for name in inputs) and any(name in found for name in inputs):
                found.update(name for name in node.output if name)
        return found

    def unused(self, name: str) -> bool:
        return (name not in self.consumers and name not in self.graph_outputs
                and name not in self.subgraph_reads)

    def constant_value(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        if name in self.constant_nodes:
            return constant_node_value(self.constant_nodes[name])
        return None

    # -- types after conversion ------------------------------------------------------------
    def required(self, index: int, slot: int) -> int:
        """The type node `index` reads at input `slot` after conversion."""
        node = self.nodes[index]
        elem = self.types.get(node.input[slot], 0)
        if elem != FLOAT or index not in self.half:
            return elem
        param = self.schemas[index].input(slot) if self.schemas[index].ok else None
        return HALF if param is not None and param[0] else FLOAT

    def output_type(self, index: int, slot: int) -> int:
        node = self.nodes[index]
        elem = self.types.get(node.output[slot], 0)
        if elem != FLOAT or index not in self.half:
            return elem
        param = self.schemas[index].output(slot)
        return HALF if param is not None and param[0] else FLOAT

    def produced_type(self, name: str) -> int:
        """Type a non-constant tensor is produced in (graph inputs per keep_io_types)."""
        if name in self.producer_index:
            index, slot = self.producer_index[name]
            return self.output_type(index, slot)
        elem = self.types.get(name, 0)
        if name in self.runtime_inputs and elem == FLOAT and self._input_becomes_half(name):
            return HALF
        return elem

    def _input_becomes_half(self, name: str) -> bool:
        return not self.keep_io and name not in self.subgraph_reads

    def wanted_half(self, name: str) -> bool:
        """Whether any reader of a float32 tensor would read it as float16."""
        if name in self.graph_outputs and not self.keep_io:
            return True
        return any(self.required(index, slot) == HALF for index, slot in self.consumers.get(name, ()))

    # -- edits -------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A tensor or node name not used anywhere in the model yet (and reserved from now on)."""
        name, counter = base, 0
        while name in self.taken:
            counter += 1
            name = f"{base}_{counter}"
        self.taken.add(name)
        return name

    def replace_constant(self, name: str, value: np.ndarray) -> None:
        tensor = numpy_helper.from_array(value, name)
        if name in self.initializers:
            self.initializers[name].CopyFrom(tensor)
        else:
            node = self.constant_nodes[name]
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", tensor))
