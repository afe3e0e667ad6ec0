"""Check a model's structure with onnx's checker before any qtool code walks the graph.

Every step after loading assumes what the ONNX spec promises: each node has the inputs, outputs
and attributes its schema requires, every tensor it reads is defined, names are unique. A corrupt
or hostile file breaks those promises in ways that would surface as an IndexError deep in some
graph pass; the checker finds them first and says which node is wrong.

The checker is stricter than the runtimes, though: graph outputs that name a type but no shape,
as graph-surgery tools and hand-built graphs write them, are refused by it and loaded by
onnxruntime, TensorRT's parser and Polygraphy. Such outputs first get their shape from onnx's
shape inference; whatever the checker still finds is a warning when onnxruntime creates a session
for the file (its graph resolution checks what qtool relies on: schemas, defined inputs, order),
and an error only when it cannot.

The checker runs on a light copy whose large initializers are empty placeholders of the same type
(their data was already checked against their shape, see payloads.py): it costs no copy of the
weights and works for models of any size, with their weights loaded or still on disk.
"""

from __future__ import annotations

import logging

import onnx

from qtool.errors import QtoolError, first_line
from qtool.io.external import _copy_fields, stored_nbytes

log = logging.getLogger("qtool")

_PLACEHOLDER_ABOVE = 4096  # bytes; smaller tensors are checked as they are


def _light_initializer(tensor: onnx.TensorProto, keep_dims: bool = False) -> onnx.TensorProto:
    """A placeholder without data for a large tensor: of no size for the checker, or of the
    same dims for shape inference (which reads only the dims of large tensors)."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL and (
            tensor.data_type == onnx.TensorProto.STRING or stored_nbytes(tensor) <= _PLACEHOLDER_ABOVE):
        return tensor
    return onnx.TensorProto(name=tensor.name, data_type=tensor.data_type,
                            dims=list(tensor.dims) if keep_dims else [0])


def _light_node(node: onnx.NodeProto, keep_dims: bool = False) -> onnx.NodeProto:
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
                                t=_light_initializer(attribute.t, keep_dims))
        else:
            light.attribute.add().CopyFrom(attribute)
    return light


def _light_model(model: onnx.ModelProto, keep_dims: bool = False) -> onnx.ModelProto:
    light = onnx.ModelProto()
    _copy_fields(model, light, skip=("graph",))
    _copy_fields(model.graph, light.graph, skip=("initializer", "node"))
    light.graph.node.extend(_light_node(node, keep_dims) for node in model.graph.node)
    light.graph.initializer.extend(_light_initializer(t, keep_dims) for t in model.graph.initializer)
    return light


def infer_output_shapes(model: onnx.ModelProto) -> list[str]:
    """Give graph outputs that have a tensor type but no shape the shape onnx's shape inference
    finds (in `model`, in memory); returns the names of those it could not."""
    shapeless = [value for value in model.graph.output
                 if value.type.HasField("tensor_type") and not value.type.tensor_type.HasField("shape")]
    if not shapeless:
        return []
    try:
        inferred = onnx.shape_inference.infer_shapes(_light_model(model, keep_dims=True))
    except Exception:  # inference is a help here; what it cannot do stays for the checker
        return [value.name for value in shapeless]
    found = {value.name: value for value in inferred.graph.output}
    missing = []
    for value in shapeless:
        tensor_type = found[value.name].type.tensor_type if value.name in found else None
        if tensor_type is not None and tensor_type.HasField("shape"):
            value.type.tensor_type.shape.CopyFrom(tensor_type.shape)
        else:
            missing.append(value.name)
    return missing


def check_structure(model: onnx.ModelProto, where: str, path: str | None = None) -> None:
    """Raise a QtoolError naming what onnx's checker finds wrong with the model's structure,
    unless onnxruntime loads the model file at `path` anyway: then log it as a warning. Graph
    outputs without a shape get theirs first (infer_output_shapes)."""
    infer_output_shapes(model)
    try:
        onnx.checker.check_model(_light_model(model))
    except onnx.checker.ValidationError as exc:
        detail = " ".join(str(exc).split())[:300].rstrip(".") or "invalid model"  # its lines, as one
        if path is None:
            raise QtoolError(f"{where} is not a valid ONNX model: {detail}") from None
        refusal = _onnxruntime_refusal(path)
        if refusal is not None:
            raise QtoolError(f"{where} is not a valid ONNX model: {detail}; onnxruntime cannot "
                             f"load it either: {refusal}") from None
        log.warning("%s: onnx's checker finds: %s; onnxruntime loads the model, so it is used "
                    "as it is", where, detail)


def _onnxruntime_refusal(path: str) -> str | None:
    """Why onnxruntime cannot create a CPU session for the model file, or None when it can.
    (The one import of onnxruntime outside qtool.backends.onnxruntime, see [tool.importlinter]:
    whether a model is loadable is a question about the file, asked while loading it.)"""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # its own log line would only repeat the answer
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        return first_line(exc, 300)
    return None
