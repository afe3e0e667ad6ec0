"""Runtime load: onnxruntime's own verdict on the model, when onnxruntime is installed."""

from __future__ import annotations

from collections.abc import Iterator

import onnx

from qtool.errors import QtoolError
from qtool.quantize.check.findings import MODEL, Finding, finding


def check_runtime_load(model: onnx.ModelProto) -> Iterator[Finding]:
    """A model TensorRT's rules allow can still break ONNX's (an FP16 scale before opset 19, a
    DequantizeLinear of a float, ...). Graph optimizations are off, so what is checked is the
    model as written."""
    from qtool.backends.onnxruntime.installed import onnxruntime_installed
    from qtool.backends.onnxruntime.session import create_session

    if not onnxruntime_installed():
        return

    try:
        create_session(model, optimize=False)
    except QtoolError as exc:
        yield finding("onnxruntime-load", MODEL, str(exc))
