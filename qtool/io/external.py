"""Write an in-memory model with its large weights as external data, leaving the model untouched.

onnx.save_model(save_as_external_data=True) rewrites the caller's tensors to point at the new
file, so a caller that still needs the weights must read them all back (gigabytes for the models
that need this at all). Here the graph is written from a light copy whose large initializers
carry only their external-data reference, and each weight is streamed to the data file straight
from the original tensor: memory grows by one tensor at a time, and the model stays as it was.

Only main-graph initializers go to the data file; tensors in subgraphs and Constant nodes stay
inline (they count towards protobuf's 2 GB limit).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnx import numpy_helper

ALIGN = 4096  # page-aligned offsets let onnxruntime map the weights instead of copying them
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "string_data", "int64_data",
                "double_data", "uint64_data")


def _copy_fields(source, target, skip: Sequence[str] = ()) -> None:
    """Copy every set field of a protobuf message except those in `skip` (no deep copy of them)."""
    for field, value in source.ListFields():
        if field.name in skip:
            continue
        repeated = getattr(field, "is_repeated", None)
        if repeated is None:  # protobuf before 5.x
            repeated = field.label == field.LABEL_REPEATED
        if repeated:
            getattr(target, field.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def _payload(tensor: onnx.TensorProto) -> bytes | None:
    """The little-endian bytes of a tensor's data; None for data that must stay inline."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        raise ValueError(f"tensor {tensor.name!r} still refers to external data; load the weights "
                         "before writing the model elsewhere")
    if tensor.data_type == onnx.TensorProto.STRING:
        return None
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return numpy_helper.to_array(tensor).tobytes()


def stored_nbytes(tensor: onnx.TensorProto) -> int:
    """Size of the tensor's data from its dims and type (reading raw_data would copy it)."""
    count = 1
    for dim in tensor.dims:
        count *= dim
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError):
        return 0
    return count * itemsize


def save_external(model: onnx.ModelProto, model_path: str | os.PathLike, data_name: str, *,
                  extra_outputs: Sequence[onnx.ValueInfoProto] = (),
                  extra_nodes: Sequence[onnx.NodeProto] = (),
                  threshold: int = 1024, data_path: str | os.PathLike | None = None) -> None:
    """Write `model_path` and `data_name` beside it: initializers of at least `threshold` bytes
    go to the data file (page-aligned), the rest stay inline. `extra_outputs` are appended to the
    written graph's outputs and `extra_nodes` to its nodes. `model` is not modified. `data_path`:
    where the data bytes go when not at their final name yet (the model names `data_name`)."""
    model_path = Path(model_path)
    skeleton = onnx.ModelProto()
    _copy_fields(model, skeleton, skip=("graph",))
    _copy_fields(model.graph, skeleton.graph, skip=("initializer",))
    skeleton.graph.output.extend(extra_outputs)
    skeleton.graph.node.extend(extra_nodes)
    offset = 0
    with open(data_path or model_path.parent / data_name, "wb") as data:
        for tensor in model.graph.initializer:
            if stored_nbytes(tensor) < threshold or tensor.data_type == onnx.TensorProto.STRING:
                _check_inline(tensor)
                skeleton.graph.initializer.add().CopyFrom(tensor)
                continue
            payload = _payload(tensor)
            light = skeleton.graph.initializer.add()
            _copy_fields(tensor, light, skip=_DATA_FIELDS + ("external_data", "data_location"))
            padding = -offset % ALIGN
            data.write(b"\0" * padding)
            offset += padding
            data.write(payload)
            light.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)),
                               ("length", str(len(payload)))):
                light.external_data.add(key=key, value=value)
            offset += len(payload)
            del payload
    with open(model_path, "wb") as handle:
        handle.write(skeleton.SerializeToString())


def _check_inline(tensor: onnx.TensorProto) -> None:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        _payload(tensor)  # raises
