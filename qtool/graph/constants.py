"""Where a model keeps its constant tensors.

Real exports store weights as initializers, as `Constant` nodes (common after conversion from
other frameworks) and, in old IR versions, as initializers that are also listed as graph inputs.
Everything that reads weights goes through here so all three are treated the same.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a `Constant` node, or None for forms that hold no dense tensor."""
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    return None


def constant_names(model: onnx.ModelProto) -> set[str]:
    """Names of all tensors whose value is fixed in the file (cheap: reads no data)."""
    names = {init.name for init in model.graph.initializer}
    names.update(node.output[0] for node in model.graph.node if node.op_type == "Constant")
    return names


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """name -> array for every initializer and Constant node output of the main graph."""
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = constant_node_value(node)
            if value is not None:
                values[node.output[0]] = value
    return values


def runtime_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs fed at run time: old IR versions list initializers as inputs too."""
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]
