"""Node order and subgraph reads: what the conversion needs to walk a graph producers first."""

from __future__ import annotations

import onnx


def has_subgraph(node: onnx.NodeProto) -> bool:
    return any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for attr in node.attribute)


def subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Names read inside a node's subgraphs (a superset of the outer names they capture)."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for graph in graphs:
            for inner in graph.node:
                names.update(name for name in inner.input if name)
                names.update(subgraph_reads(inner))
    return names


def topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Nodes in an order where each comes after the producers of what it reads."""
    produced = {name for node in nodes for name in node.output if name}
    ready = set(available)
    pending = list(nodes)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            needs = {name for name in node.input if name} | (subgraph_reads(node) & produced)
            if needs <= ready:
                ordered.append(node)
                ready.update(name for name in node.output if name)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # a cycle or a dangling read: keep the file's order
            return ordered + rest
        pending = rest
    return ordered
