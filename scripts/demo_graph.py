"""Cleaning up the exported demo graph: one initializer per consumer, and readable, stable node,
tensor and weight names taken from the module paths."""

from __future__ import annotations

import onnx


def inline_initializer_identities(graph: onnx.GraphProto) -> None:
    """The exporter shares equal constants through Identity nodes; give every consumer its
    own initializer instead, so each weighted op owns its weight and bias."""
    inits = {init.name: init for init in graph.initializer}
    alias = {}
    for node in list(graph.node):
        if node.op_type == "Identity" and node.input[0] in inits:
            alias[node.output[0]] = node.input[0]
            graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in alias:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[alias[name]])
                copy.name = name
                graph.initializer.append(copy)
                node.input[i] = name


def node_name_from_scope(exported: str) -> str:
    """'/res/conv1/conv/Conv' -> 'res.conv1.conv': the module path, dotted."""
    parts = [p for p in exported.split("/") if p]
    if len(parts) < 2:
        raise RuntimeError(f"exported node {exported!r} has no module scope")
    return ".".join(parts[:-1])


def rename_graph(graph: onnx.GraphProto) -> None:
    """Readable, stable names: node = module path, its output = '<node>.out', weights =
    '<node>.weight' / '<node>.bias'. Graph input and output names are kept."""
    renames: dict[str, str] = {}
    seen = set()
    for node in graph.node:
        name = node_name_from_scope(node.name)
        if name in seen:
            raise RuntimeError(f"two exported nodes map to the name {name!r}")
        seen.add(name)
        node.name = name
        for output in node.output:
            if output != "logits":
                renames[output] = f"{name}.out"
    inits = {init.name for init in graph.initializer}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm"):
            # input 0 is the activation, then weight and (optional) bias
            for tensor, role in zip(node.input[1:], ("weight", "bias")):
                renames[tensor] = f"{node.name}.{role}"
        elif node.op_type in ("MatMul", "Add"):
            # head.matmul / head.add: a constant operand belongs to the enclosing module
            owner = node.name.rsplit(".", 1)[0]
            role = "weight" if node.op_type == "MatMul" else "bias"
            for tensor in node.input:
                if tensor in inits:
                    renames[tensor] = f"{owner}.{role}"
    for init in graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)
    names = [init.name for init in graph.initializer]
    if len(set(names)) != len(names):
        raise RuntimeError(f"duplicate initializer names after renaming: {sorted(names)}")
    # Initializers in graph order, for a readable listing.
    order = {name: i for i, name in enumerate(n for node in graph.node for n in node.input)}
    ordered = sorted(graph.initializer, key=lambda init: order[init.name])
    del graph.initializer[:]
    graph.initializer.extend(ordered)
