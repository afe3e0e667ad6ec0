"""Open a model file for inference by its kind: ONNX (onnxruntime) or a TensorRT engine.

Engines are recognised by their suffix (.engine, .plan, .trt); TensorRT is imported only then,
and its absence ends the command with the MissingDependency one-liner.
"""

from __future__ import annotations

import os
from pathlib import Path

from qtool.errors import QtoolError

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def model_kind(path: str | os.PathLike) -> str:
    """"onnx" or "engine"; anything else is a user error."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    raise QtoolError(f"{path}: unknown model kind {suffix or '(no suffix)'!r}; expected an ONNX "
                     f"model (.onnx) or a TensorRT engine ({', '.join(ENGINE_SUFFIXES)})")


def open_runner(path: str | os.PathLike, providers=None):
    """A context manager with input_specs, output_names and run(feeds) -> dict. `providers`:
    where onnxruntime runs an ONNX model (qtool.backends.onnxruntime.providers); an engine runs
    in TensorRT."""
    path = Path(path)
    kind = model_kind(path)
    if not path.is_file():
        raise QtoolError(f"{'model' if kind == 'onnx' else 'engine'} not found: {path}")
    if kind == "onnx":
        from qtool.backends.onnxruntime.runner import OnnxRunner

        return OnnxRunner(path, providers=providers)
    from qtool.backends.tensorrt.runtime import TensorRTRunner

    return TensorRTRunner(path)
