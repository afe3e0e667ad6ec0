"""Load and save ONNX models safely: external data confined to the model's folder,
atomic writes, opset upgrades and the input signature other steps check data against."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import external_data_helper, helper

from qtool.errors import QtoolError, first_line
from qtool.io.external import save_external, stored_nbytes
from qtool.io.hashing import sha256_file
from qtool.io.payloads import check_tensor_payloads
from qtool.io.structure import check_structure
from qtool.io.text_fields import check_text_fields

# Protobuf cannot serialise a message of 2 GiB or more; above this size weights go to a .data file.
PROTOBUF_LIMIT = 2**31 - 1
MIN_OPSET = 13  # per-channel QuantizeLinear (axis attribute) needs opset 13


@dataclass(frozen=True)
class InputSpec:
    """One graph input: name, numpy dtype and shape (int for static dims, str/None for dynamic)."""

    name: str
    dtype: np.dtype
    shape: tuple

    def describe(self) -> str:
        dims = ",".join(str(d) if isinstance(d, int) else (d or "?") for d in self.shape)
        return f"{self.name} {self.dtype} [{dims}]"


def _external_locations(model: onnx.ModelProto) -> list[str]:
    locations = []
    for tensor in external_data_helper._get_all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {entry.key: entry.value for entry in tensor.external_data}
            locations.append(info.get("location", ""))
    return locations


def check_external_paths(model: onnx.ModelProto, base_dir: Path) -> list[Path]:
    """Refuse external-data locations that are absolute, contain '..', go through a symbolic link,
    resolve outside the model's folder or are not regular files; returns the resolved files."""
    base = base_dir.resolve()
    paths = []
    for location in sorted(set(_external_locations(model))):
        if not location or "\x00" in location:
            raise QtoolError(f"refusing external data location {location!r}: it must be a file name")
        if os.path.isabs(location) or Path(location).is_absolute():
            raise QtoolError(f"refusing external data location {location!r}: it must be a relative path")
        if ".." in Path(location).parts:
            raise QtoolError(f"refusing external data location {location!r}: it leaves the model's folder")
        full = (base_dir / location)
        # onnx will not read through a symbolic link either; say so before anything is tried
        step = base_dir
        for part in Path(location).parts:
            step = step / part
            if step.is_symlink():
                raise QtoolError(f"refusing external data location {location!r}: "
                                 f"{step.relative_to(base_dir)} is a symbolic link")
        resolved = full.resolve()
        if resolved != base and base not in resolved.parents:
            raise QtoolError(f"refusing external data location {location!r}: it resolves outside {base_dir}")
        if not resolved.is_file():
            what = "is not a regular file" if resolved.exists() else "not found"
            raise QtoolError(f"external data file {what}: {full}")
        paths.append(resolved)
    return paths


def load_model(path: str | os.PathLike, load_weights: bool = True) -> onnx.ModelProto:
    """Load a model file, checked as untrusted input before any weight is read: valid UTF-8
    names, external data inside the model's folder and within its files, every tensor's data
    the size of its shape, and a structure onnx's checker accepts (or, where it complains,
    that onnxruntime loads; see check_structure). With load_weights=False
    external weights stay on disk (onnxruntime can read them there, see create_session)."""
    path = Path(path)
    if not path.is_file():
        raise QtoolError(f"model not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and others on garbage
        raise QtoolError(f"cannot read {path} as an ONNX model: {first_line(exc)}") from None
    if not model.graph.node and not model.graph.output:
        raise QtoolError(f"{path} is not an ONNX model (no graph)")
    check_text_fields(model, str(path))
    check_external_paths(model, path.parent)
    check_tensor_payloads(model, path.parent, str(path))
    check_structure(model, str(path), str(path))
    if load_weights and _external_locations(model):
        try:
            external_data_helper.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise QtoolError(f"cannot load external data of {path}: {first_line(exc)}") from None
    return model


def has_unloaded_weights(model: onnx.ModelProto) -> bool:
    """True for a model loaded with load_weights=False whose tensors still point at files."""
    return any(tensor.data_location == onnx.TensorProto.EXTERNAL
               for tensor in external_data_helper._get_all_tensors(model))


def model_sha256(path: str | os.PathLike) -> str:
    """sha256 of the model file; with external data, of the file and its data files in order."""
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise QtoolError(f"cannot read {path} as an ONNX model: {first_line(exc)}") from None
    data_files = check_external_paths(model, path.parent)
    if not data_files:
        return sha256_file(path)
    import hashlib

    digest = hashlib.sha256(sha256_file(path).encode())
    for data in data_files:
        digest.update(sha256_file(data).encode())
    return digest.hexdigest()


def weights_nbytes(model: onnx.ModelProto) -> int:
    """Bytes of tensor data held in memory (external data that is not loaded counts 0)."""
    total = 0
    for tensor in external_data_helper._get_all_tensors(model):
        # raw_data's size from dims and type: reading the field would copy it
        total += stored_nbytes(tensor) if tensor.HasField("raw_data") else 0
        total += 4 * (len(tensor.float_data) + len(tensor.int32_data))
        total += 8 * (len(tensor.int64_data) + len(tensor.double_data))
    return total


def save_model(model: onnx.ModelProto, target: str | os.PathLike, external: bool | None = None) -> None:
    """Write a model atomically; weights go to `<name>.data` beside it when the model is too large
    (the data file is renamed into place first, so the model never names a missing file)."""
    from qtool.io.atomic import atomic_path

    target = Path(target)
    if external is None:
        external = weights_nbytes(model) > PROTOBUF_LIMIT - (64 << 20)
    with atomic_path(target) as tmp_model:
        if external:
            data_name = target.name + ".data"
            with atomic_path(target.with_name(data_name)) as tmp_data:
                save_external(model, tmp_model, data_name, data_path=tmp_data)
        else:
            onnx.save_model(model, str(tmp_model))


def ensure_opset(model: onnx.ModelProto, minimum: int = MIN_OPSET) -> onnx.ModelProto:
    """Return the model upgraded to at least `minimum` of the default domain (a copy if changed)."""
    current = opset_version(model)
    if current >= minimum:
        return model
    try:
        from onnx import version_converter

        return version_converter.convert_version(model, minimum)
    except Exception as exc:
        raise QtoolError(
            f"model uses opset {current}; upgrading it to {minimum} failed: {first_line(exc)}"
        ) from None


def opset_version(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 1


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs that are fed at run time (old IR versions also list initializers)."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        except (KeyError, TypeError, ValueError):  # not a tensor, or an unknown element type
            raise QtoolError(f"model input {value.name!r} is not a tensor of a known element type "
                             f"(type {tensor_type.elem_type})") from None
        # Some exporters (Paddle2ONNX) write -1 as a dim_value for a dynamic axis.
        shape = tuple(
            dim.dim_value if dim.HasField("dim_value") and dim.dim_value >= 0
            else (dim.dim_param or None)
            for dim in tensor_type.shape.dim
        )
        specs.append(InputSpec(value.name, dtype, shape))
    return specs


def output_names(model: onnx.ModelProto) -> list[str]:
    return [value.name for value in model.graph.output]

