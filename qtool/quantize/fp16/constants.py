"""Float32 constants (initializers and Constant nodes) turned float16 where their readers need
it."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper, numpy_helper

from qtool.quantize.fp16.numbers import FLOAT, HALF, to_half
from qtool.quantize.fp16.working_graph import GraphUnderConversion


@dataclass
class ResolvedConstants:
    """Which tensor holds each (constant, type) pair, each constant's type after conversion,
    and the Constant nodes added for float16 copies."""
    alias: dict[tuple[str, int], str]
    types: dict[str, int]
    new_nodes: list[onnx.NodeProto]


def resolve_constants(g: GraphUnderConversion) -> ResolvedConstants:
    """Convert float32 constants read as float16 (in place, or a copy when both are read)."""
    alias: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []
    constant_types: dict[str, int] = {}
    for name in list(g.initializers) + list(g.constant_nodes):
        elem = g.types.get(name, 0)
        alias[(name, elem)] = name
        constant_types[name] = elem
        if elem != FLOAT:
            continue
        reads = {g.required(i, s) for i, s in g.consumers.get(name, ())}
        if name in g.graph_outputs or name in g.subgraph_reads:
            reads.add(FLOAT)  # graph outputs and subgraph bodies keep the declared float32
        if HALF not in reads:
            continue
        half = to_half(g.constant_value(name))
        if FLOAT in reads:
            copy = g.fresh(f"{name}_fp16")
            if name in g.initializers:
                g.graph.initializer.append(numpy_helper.from_array(half, copy))
            else:
                new_nodes.append(helper.make_node(
                    "Constant", [], [copy], name=g.fresh(f"{copy}_constant"),
                    value=numpy_helper.from_array(half, copy)))
            alias[(name, HALF)] = copy
        else:
            g.replace_constant(name, half)
            _retype_graph_input(g, name, HALF)
            alias[(name, HALF)] = name
            del alias[(name, FLOAT)]
            constant_types[name] = HALF
    return ResolvedConstants(alias, constant_types, new_nodes)


def _retype_graph_input(g: GraphUnderConversion, name: str, elem: int) -> None:
    for value in g.graph.input:  # old IR versions list initializers as inputs too
        if value.name == name:
            value.type.tensor_type.elem_type = elem
