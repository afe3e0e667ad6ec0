"""Element types and shapes of every tensor, from shape inference on a weightless skeleton.

Shape inference serialises the model; with its weights that is slow for large models and
impossible above protobuf's 2 GB limit. Inference needs only the weights' dtypes and dims (and
the values of small integer tensors such as Reshape targets), so it runs on a skeleton: the same
graph with the data of large tensors dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto

# Tensors up to this many elements keep their data (shape inference may read small ones).
KEEP_DATA_ELEMENTS = 1024


@dataclass(frozen=True)
class TensorInfo:
    """elem_type 0 means unknown; shape None means unknown rank, a dim None an unknown size."""

    elem_type: int
    shape: tuple | None


def _num_elements(tensor: TensorProto) -> int:
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count


def _light_tensor(tensor: TensorProto) -> TensorProto:
    is_external = tensor.data_location == TensorProto.EXTERNAL
    # Inference reads only small constants (shapes, axes, pads); INT8 weights are dropped too.
    if is_external or _num_elements(tensor) > KEEP_DATA_ELEMENTS:
        light = TensorProto(name=tensor.name, data_type=tensor.data_type)
        light.dims.extend(tensor.dims)
        return light
    return tensor


def _light_node(node: onnx.NodeProto) -> onnx.NodeProto:
    if node.op_type != "Constant" or not any(attr.name == "value" for attr in node.attribute):
        return node
    light = onnx.NodeProto()
    light.CopyFrom(node)
    for attr in light.attribute:
        if attr.name == "value":
            attr.t.CopyFrom(_light_tensor(attr.t))
    return light


def inference_skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model's structure without the data of its large float tensors."""
    skeleton = onnx.ModelProto(ir_version=model.ir_version)
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    graph = skeleton.graph
    graph.name = model.graph.name
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    graph.node.extend(_light_node(node) for node in model.graph.node)
    graph.initializer.extend(_light_tensor(init) for init in model.graph.initializer)
    return skeleton


def _shape_of(value: onnx.ValueInfoProto) -> tuple | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in tensor_type.shape.dim)


def shape_inference(model: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.GraphProto]:
    """One shape inference, on the weightless skeleton (inference_skeleton): (the inferred model,
    the graph whose declarations describe the tensors). Inference on the full model would
    serialise every weight twice over (and cannot at all above 2 GB), for nothing: it reads only
    small integer constants. When the skeleton cannot be inferred (custom ops, malformed parts),
    the whole model is tried for its element types, and the skeleton's own graph describes the
    tensors."""
    skeleton = inference_skeleton(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=False)
        return inferred, inferred.graph
    except Exception:  # noqa: S110 - custom ops, malformed parts, protobuf size limit
        pass
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # the model's own declarations stand
        inferred = model
    return inferred, skeleton.graph


def tensor_infos(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """name -> TensorInfo for every tensor of the main graph whose type or shape is known."""
    return infos_of(shape_inference(model)[1], constant_infos(model))


def infos_of(graph: onnx.GraphProto, constants: dict[str, TensorInfo]) -> dict[str, TensorInfo]:
    """The types and shapes `graph` (a model's, after shape inference) declares, then those of
    its `constants` (constant_infos), which take precedence."""
    infos: dict[str, TensorInfo] = {}
    for value in list(graph.value_info) + list(graph.input) + list(graph.output):
        if value.type.HasField("tensor_type"):
            infos[value.name] = TensorInfo(value.type.tensor_type.elem_type, _shape_of(value))
    infos.update(constants)
    return infos


def constant_infos(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Type and shape of every initializer and Constant-node tensor, from their dims (no data
    read, no inference)."""
    infos = {init.name: TensorInfo(init.data_type, tuple(init.dims))
             for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    infos[node.output[0]] = TensorInfo(attr.t.data_type, tuple(attr.t.dims))
    return infos
