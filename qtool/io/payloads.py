"""Check every tensor's stored data against its declared type and shape before anything reads it.

A model file is untrusted input: a tensor may claim a shape its bytes do not fill, or point its
external data past the end of the file. Caught here, such a model is one clear error at load
time instead of a crash (or a huge allocation) in whatever step first converts the tensor.

External data is checked from the metadata and the file size only, so nothing is read.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import onnx
from onnx import external_data_helper, helper

from qtool.errors import QtoolError

# Packed types: several elements share a byte (raw) or an int32 (typed field).
_SUB_BYTE_BITS = {onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT4: 4,
                  onnx.TensorProto.FLOAT4E2M1: 4}
for _name in ("UINT2", "INT2"):
    if hasattr(onnx.TensorProto, _name):
        _SUB_BYTE_BITS[getattr(onnx.TensorProto, _name)] = 2
_COMPLEX = (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128)
_UNCHECKED_SIZE = {getattr(onnx.TensorProto, name) for name in ("FLOAT6E2M3", "FLOAT6E3M2")
                   if hasattr(onnx.TensorProto, name)}


def _label(tensor: onnx.TensorProto) -> str:
    return f"tensor {tensor.name!r}" if tensor.name else "an unnamed tensor"


def _element_count(tensor: onnx.TensorProto, where: str) -> int:
    for dim in tensor.dims:
        if dim < 0:
            raise QtoolError(f"{where}: {_label(tensor)} has a negative dimension {list(tensor.dims)}")
    return math.prod(tensor.dims)


def _raw_bytes(tensor: onnx.TensorProto, count: int, where: str) -> int | None:
    """Bytes the raw (or external) form of the tensor must hold; None when not checkable."""
    data_type = tensor.data_type
    if data_type in _UNCHECKED_SIZE:
        return None
    if data_type in _SUB_BYTE_BITS:
        return -(-count * _SUB_BYTE_BITS[data_type] // 8)
    try:
        dtype = helper.tensor_dtype_to_np_dtype(data_type)
    except (KeyError, ValueError):
        raise QtoolError(f"{where}: {_label(tensor)} has an unknown data type {data_type}") from None
    if dtype.kind == "O":
        raise QtoolError(f"{where}: {_label(tensor)} is a string tensor stored as raw bytes")
    return count * dtype.itemsize


def _typed_count(tensor: onnx.TensorProto, count: int) -> tuple[str, int] | None:
    """(field, entries) the typed-field form of the tensor must hold; None when not checkable."""
    data_type = tensor.data_type
    if data_type in _UNCHECKED_SIZE or data_type in _SUB_BYTE_BITS:
        return None
    field = helper.tensor_dtype_to_field(data_type)
    return field, count * (2 if data_type in _COMPLEX else 1)


_EXTERNAL_KEYS = ("location", "offset", "length", "checksum", "basepath")


def _external_info(tensor: onnx.TensorProto, where: str) -> tuple[str, int, int | None]:
    info = {entry.key: entry.value for entry in tensor.external_data}
    unknown = sorted(set(info) - set(_EXTERNAL_KEYS))
    if unknown:
        raise QtoolError(f"{where}: external data of {_label(tensor)} has unknown key(s) "
                         f"{', '.join(repr(key) for key in unknown)}")
    numbers = {}
    for key in ("offset", "length"):
        if key not in info:
            continue
        text = info[key]
        if not text.isascii() or not text.isdigit():
            raise QtoolError(f"{where}: external data {key} of {_label(tensor)} is {text!r}, "
                             f"not a non-negative integer")
        numbers[key] = int(text)
    return info.get("location", ""), numbers.get("offset", 0), numbers.get("length")


def _sparse_tensors(graph: onnx.GraphProto):
    """Sparse initializers and sparse Constant values, in the graph and its subgraphs."""
    yield from graph.sparse_initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor
            yield from attribute.sparse_tensors
            for sub in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                yield from _sparse_tensors(sub)


def check_sparse_size(model: onnx.ModelProto, where: str) -> None:
    """A sparse tensor of a few bytes may stand for gigabytes once made dense (as onnxruntime
    does): their dense sizes are counted like dense payloads, against [limits] sparse_bytes."""
    from qtool import limits

    total = 0
    for sparse in _sparse_tensors(model.graph):
        for dim in sparse.dims:
            if dim < 0:
                raise QtoolError(f"{where}: a sparse tensor has a negative dimension {list(sparse.dims)}")
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(sparse.values.data_type).itemsize
        except (KeyError, ValueError):
            raise QtoolError(f"{where}: a sparse tensor has an unknown data type "
                             f"{sparse.values.data_type}") from None
        total += math.prod(sparse.dims) * itemsize
    cap = limits.current().sparse_bytes
    if total > cap:
        raise QtoolError(f"{where}: its sparse tensors take {total} bytes once dense, above the cap "
                         f"of {cap}; {limits.how_to_raise('sparse_bytes')}")


def check_tensor_payloads(model: onnx.ModelProto, base_dir: str | os.PathLike | None,
                          where: str) -> None:
    """Raise a QtoolError naming the first tensor whose data cannot be its declared shape.

    External locations must already have passed check_external_paths; `base_dir` is the folder
    they are relative to (None: the model has no external data on disk).
    """
    check_sparse_size(model, where)
    sizes: dict[str, int] = {}
    known = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
    for tensor in external_data_helper._get_all_tensors(model):
        if tensor.data_type not in known:
            raise QtoolError(f"{where}: {_label(tensor)} has an unknown data type {tensor.data_type}")
        count = _element_count(tensor, where)
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            _check_external(tensor, count, base_dir, sizes, where)
        elif tensor.HasField("raw_data"):
            expected = _raw_bytes(tensor, count, where)
            found = len(tensor.raw_data)
            if expected is not None and found != expected:
                raise QtoolError(f"{where}: {_label(tensor)} of shape {list(tensor.dims)} needs "
                                 f"{expected} bytes of data, the file holds {found}")
        else:
            typed = _typed_count(tensor, count)
            if typed is None:
                continue
            field, entries = typed
            found = len(getattr(tensor, field))
            if found != entries:
                raise QtoolError(f"{where}: {_label(tensor)} of shape {list(tensor.dims)} needs "
                                 f"{entries} values in {field}, the file holds {found}")


def _check_external(tensor: onnx.TensorProto, count: int, base_dir, sizes: dict[str, int],
                    where: str) -> None:
    location, offset, length = _external_info(tensor, where)
    expected = _raw_bytes(tensor, count, where)
    if base_dir is None:
        raise QtoolError(f"{where}: {_label(tensor)} has external data but no folder to read it from")
    if location not in sizes:
        try:
            sizes[location] = (Path(base_dir) / location).stat().st_size
        except OSError as exc:
            raise QtoolError(f"{where}: cannot read external data {location!r}: "
                             f"{exc.strerror or exc}") from None
    size = sizes[location]
    if expected is None:
        expected = length if length is not None else max(size - offset, 0)
    if length is not None and length != expected:
        raise QtoolError(f"{where}: {_label(tensor)} of shape {list(tensor.dims)} needs "
                         f"{expected} bytes of external data, its length says {length}")
    if offset + expected > size:
        raise QtoolError(f"{where}: external data of {_label(tensor)} ({expected} bytes at offset "
                         f"{offset}) runs past the end of {location!r} ({size} bytes)")
