"""Check a model's structure with onnx's checker before any qtool code walks the graph.

Every step after loading assumes what the ONNX spec promises: each node has the inputs, outputs
and attributes its schema requires, every tensor it reads is defined, names are unique. A corrupt
or hostile file breaks those promises in ways that would surface as an IndexError deep in some
graph pass; the checker finds them first and says which node is wrong.

The checker runs on a light copy whose large initializers are empty placeholders of the same type
(their data was already checked against their shape, see payloads.py): it costs no copy of the
weights and works for models of any size, with their weights loaded or still on disk.
"""

from __future__ import annotations

import onnx

from qtool.errors import QtoolError
from qtool.io.external import _copy_fields, stored_nbytes

_PLACEHOLDER_ABOVE = 4096  # bytes; smaller tensors are checked as they are


def _light_initializer(tensor: onnx.TensorProto) -> onnx.TensorProto:
    if tensor.data_location != onnx.TensorProto.EXTERNAL and (
            tensor.data_type == onnx.TensorProto.STRING or stored_nbytes(tensor) <= _PLACEHOLDER_ABOVE):
        return tensor
    return onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=[0])


def _light_node(node: onnx.NodeProto) -> onnx.NodeProto:
    """Constant nodes (some exporters keep every weight in one) get a placeholder value too."""
    big = [a for a in node.attribute if a.name == "value" and a.HasField("t")
           and _light_initializer(a.t) is not a.t]
    if node.op_type != "Constant" or not big:
        return node
    light = onnx.NodeProto()
    _copy_fields(node, light, skip=("attribute",))
    for attribute in node.attribute:
        if attribute in big:
            light.attribute.add(name=attribute.name, type=attribute.type,
                                t=_light_initializer(attribute.t))
        else:
            light.attribute.add().CopyFrom(attribute)
    return light


def check_structure(model: onnx.ModelProto, where: str) -> None:
    """Raise a QtoolError naming what onnx's checker finds wrong with the model's structure."""
    light = onnx.ModelProto()
    _copy_fields(model, light, skip=("graph",))
    _copy_fields(model.graph, light.graph, skip=("initializer", "node"))
    light.graph.node.extend(_light_node(node) for node in model.graph.node)
    light.graph.initializer.extend(_light_initializer(t) for t in model.graph.initializer)
    try:
        onnx.checker.check_model(light)
    except onnx.checker.ValidationError as exc:
        detail = " ".join(str(exc).split()) or "invalid model"  # the checker's lines, as one
        raise QtoolError(f"{where} is not a valid ONNX model: {detail[:300]}") from None
