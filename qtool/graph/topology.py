"""Who produces and who consumes each tensor of the main graph.

Rewrites ask questions like "is this conv output used only by that Add?"; one pass over the
graph answers them all. Uses inside control-flow subgraphs (If/Loop/Scan bodies reading an outer
tensor) count as consumers too, so a tensor read there is never treated as single-use.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import onnx


def node_label(node: onnx.NodeProto) -> str:
    """A readable identifier: the node's name, or its first output for unnamed nodes."""
    if node.name:
        return node.name
    first = next((name for name in node.output if name), "")
    return first or f"<unnamed {node.op_type}>"


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Tensor names a node's subgraphs read (a superset of the outer names they capture)."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = list(attr.graphs)
        if attr.HasField("g"):
            graphs.append(attr.g)
        for graph in graphs:
            for inner in graph.node:
                names.update(name for name in inner.input if name)
                names.update(_subgraph_reads(inner))
    return names


@dataclass
class Topology:
    """Producer and consumer maps of one graph, by node index (graph order is topological)."""

    nodes: list[onnx.NodeProto]
    producer: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    subgraph_users: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    graph_outputs: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, graph: onnx.GraphProto) -> Topology:
        topo = cls(nodes=list(graph.node))
        topo.graph_outputs = {value.name for value in graph.output}
        for index, node in enumerate(topo.nodes):
            for name in node.output:
                if name:
                    topo.producer[name] = index
            for slot, name in enumerate(node.input):
                if name:
                    topo.consumers[name].append((index, slot))
            for name in _subgraph_reads(node):
                topo.subgraph_users[name].append(index)
        return topo

    def producer_node(self, tensor: str) -> onnx.NodeProto | None:
        index = self.producer.get(tensor)
        return None if index is None else self.nodes[index]

    def use_count(self, tensor: str) -> int:
        """Every read of the tensor: node inputs, subgraph reads and being a graph output."""
        return (len(self.consumers.get(tensor, ()))
                + len(self.subgraph_users.get(tensor, ()))
                + (1 if tensor in self.graph_outputs else 0))

    def only_consumer(self, tensor: str) -> int | None:
        """Index of the single node reading the tensor, or None when it has other uses."""
        if self.use_count(tensor) != 1:
            return None
        users = self.consumers.get(tensor, ())
        return users[0][0] if len(users) == 1 else None
