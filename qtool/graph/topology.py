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

    def consumer_nodes(self, tensor: str) -> list[tuple[onnx.NodeProto, int]]:
        """(node, input slot) of every main-graph read of the tensor, in graph order."""
        return [(self.nodes[index], slot) for index, slot in self.consumers.get(tensor, ())]

    def reads_through(self, tensor: str, through) -> tuple[list[tuple[int, int]], bool]:
        """Every (node index, slot) reading `tensor`, looking forward through nodes whose op type
        is in `through` (when they read it at their first input); and whether the tensor or one
        of those nodes' outputs is a graph output. Reads are in depth-first order; a node reading
        at several places is listed at each."""
        reads: list[tuple[int, int]] = []
        reaches_output = False
        stack, seen = [tensor], set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            reaches_output |= name in self.graph_outputs
            for index, slot in self.consumers.get(name, ()):
                node = self.nodes[index]
                if node.op_type in through and slot == 0:
                    stack.extend(out for out in node.output if out)
                else:
                    reads.append((index, slot))
        return reads, reaches_output

    def origin(self, tensor: str, through) -> int | None:
        """Index of the node `tensor` comes from, looking back through nodes whose op type is in
        `through` (along their first input); None for a graph input, an initializer or a cycle.
        A `through` node without inputs is itself the origin."""
        seen = set()
        while tensor not in seen:
            seen.add(tensor)
            index = self.producer.get(tensor)
            if index is None:
                return None
            node = self.nodes[index]
            if node.op_type not in through or not node.input:
                return index
            tensor = node.input[0]
        return None
