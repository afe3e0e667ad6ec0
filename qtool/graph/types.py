"""Element types of a model's tensors, from the graph's declarations and shape inference."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from qtool.graph.shapes import shape_inference

FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference where it works (graph.shapes.shape_inference): the result describes types
    and shapes (graph inputs, outputs, value_info); its large float initializers carry no data."""
    return shape_inference(model)[0]


def tensor_elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """name -> TensorProto element type for every tensor whose type is known."""
    return elem_types_of(infer_shapes(model))


def elem_types_of(inferred: onnx.ModelProto) -> dict[str, int]:
    """The element types a model after shape inference (infer_shapes) declares or stores."""
    graph = inferred.graph
    types: dict[str, int] = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def floats_of(types: dict[str, int]) -> set[str]:
    """The tensors among `types` known to hold floating-point values."""
    return {name for name, elem in types.items() if elem in FLOAT_TYPES}


def float_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors known to hold floating-point values (unknown types are left out: never guess)."""
    return floats_of(tensor_elem_types(model))
