"""Cast insertion: each node reads every float tensor in the type it needs (one Cast per tensor
and target type, shared by all readers), and pinned tensors keep their type under their name."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool.graph.attributes import attribute
from qtool.quantize.fp16.constants import ResolvedConstants
from qtool.quantize.fp16.numbers import FLOAT, HALF, to_half
from qtool.quantize.fp16.ops import DQ
from qtool.quantize.fp16.working_graph import GraphUnderConversion


@dataclass
class NodesWithCasts:
    """The rewritten node list and its bookkeeping: which tensor holds each (name, type), each
    tensor's final type, and each new tensor with (the tensor whose shape it has, its type)."""
    nodes: list[onnx.NodeProto]
    alias: dict[tuple[str, int], str]
    final_types: dict[str, int]
    new_infos: dict[str, tuple[str, int]] = field(default_factory=dict)


def pinned_types(g: GraphUnderConversion) -> dict[str, int]:
    """Tensors that must keep a given type under their own name."""
    pins: dict[str, int] = {}
    for name in g.graph_outputs:
        if g.types.get(name) == FLOAT and not g.is_constant(name) and name not in g.runtime_inputs:
            pins[name] = FLOAT if g.keep_io else HALF
    for name in g.subgraph_reads:
        if g.types.get(name) == FLOAT and not g.is_constant(name):
            pins[name] = FLOAT
    return pins


def insert_casts(g: GraphUnderConversion, pins: dict[str, int],
                 constants: ResolvedConstants) -> NodesWithCasts:
    """Every node in order, with Casts before the inputs and after the outputs that need them."""
    alias = constants.alias
    final_types: dict[str, int] = dict(constants.types)
    for name in g.runtime_inputs:
        elem = g.produced_type(name)
        alias[(name, elem)] = name
        final_types[name] = elem
    result = NodesWithCasts(list(constants.new_nodes), alias, final_types)
    for index, node in enumerate(g.nodes):
        if index in g.half:
            _rewrite_half_node(g, index)
        _cast_inputs(g, result, index, node)
        result.nodes.append(node)
        if node.op_type == "Constant":
            continue  # typed by resolve_constants
        _cast_outputs(g, result, index, node, pins)
    return result


def _cast_inputs(g: GraphUnderConversion, result: NodesWithCasts, index: int,
                 node: onnx.NodeProto) -> None:
    for slot, name in enumerate(node.input):
        if not name or g.types.get(name) != FLOAT:
            continue
        need = g.required(index, slot)
        source = result.alias.get((name, need))
        if source is None:
            have = HALF if need == FLOAT else FLOAT
            if (name, have) not in result.alias:
                continue  # produced outside this graph's knowledge: leave as is
            source = g.fresh(f"{name}_{'fp16' if need == HALF else 'fp32'}")
            result.nodes.append(_cast(g, result.alias[(name, have)], source, need))
            result.alias[(name, need)] = source
            result.new_infos[source] = (name, need)
        node.input[slot] = source


def _cast_outputs(g: GraphUnderConversion, result: NodesWithCasts, index: int,
                  node: onnx.NodeProto, pins: dict[str, int]) -> None:
    for slot, name in enumerate(node.output):
        if not name or g.types.get(name) != FLOAT:
            if name and name in g.types:
                result.final_types[name] = g.types[name]
            continue
        produced = g.output_type(index, slot)
        wanted = pins.get(name, produced)
        if wanted == produced:
            result.alias[(name, produced)] = name
            result.final_types[name] = produced
            continue
        inner = g.fresh(f"{name}_{'fp16' if produced == HALF else 'fp32'}")
        node.output[slot] = inner
        result.nodes.append(_cast(g, inner, name, wanted))
        result.alias[(name, produced)] = inner
        result.alias[(name, wanted)] = name
        result.final_types[name] = wanted
        result.new_infos[inner] = (name, produced)


def _cast(g: GraphUnderConversion, source: str, target: str, to: int) -> onnx.NodeProto:
    suffix = "fp16" if to == HALF else "fp32"
    return helper.make_node("Cast", [source], [target], name=g.fresh(f"{source}_cast_{suffix}"), to=to)


def _set_int_attr(node: onnx.NodeProto, name: str, value: int) -> None:
    for attr in node.attribute:
        if attr.name == name:
            attr.i = value
            return
    node.attribute.append(helper.make_attribute(name, value))


def _rewrite_half_node(g: GraphUnderConversion, index: int) -> None:
    """Attributes that carry a float32 type inside a node now running in float16."""
    node = g.nodes[index]
    if node.op_type == "Cast" and attribute(node, "to") == FLOAT:
        _set_int_attr(node, "to", HALF)
    elif node.op_type == "ConstantOfShape" and g.output_type(index, 0) == HALF:
        value = attribute(node, "value")
        array = numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
        kept = [a for a in node.attribute if a.name != "value"]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(to_half(array))))
    elif node.op_type == DQ and attribute(node, "output_dtype") == FLOAT:
        _set_int_attr(node, "output_dtype", HALF)


def update_declarations(g: GraphUnderConversion, result: NodesWithCasts) -> None:
    """Graph inputs, outputs and value_info declare their final types; new tensors get a
    value_info shaped like the tensor they convert."""
    for value in list(g.graph.input) + list(g.graph.output) + list(g.graph.value_info):
        elem = result.final_types.get(value.name)
        if elem and value.type.HasField("tensor_type"):
            value.type.tensor_type.elem_type = elem
    for name, (like, elem) in result.new_infos.items():
        if like not in g.value_infos:
            continue  # no shape known: shape inference fills it in
        info = onnx.ValueInfoProto()
        info.CopyFrom(g.value_infos[like])
        info.name = name
        info.type.tensor_type.elem_type = elem
        g.graph.value_info.append(info)
