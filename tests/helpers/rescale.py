"""Shared helpers for the tests of passes that only rescale constants (equalization, smoothing):
the initializers of a model, the model without their data, random feeds, and FP32 outputs
compared before and after on onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from tests.helpers.onnx_graphs import check_and_run


def inits(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def skeleton(model) -> bytes:
    """The model with every initializer's data removed: what must not change."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in copy.graph.initializer:
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
    return copy.SerializeToString()


def batches(model, count=4, seed=1) -> list[dict[str, np.ndarray]]:
    """`count` feeds of standard normal values for the model's first input, from one generator."""
    rng = np.random.default_rng(seed)
    spec = model.graph.input[0]
    shape = [d.dim_value for d in spec.type.tensor_type.shape.dim]
    return [{spec.name: rng.normal(size=shape).astype(np.float32)} for _ in range(count)]


def assert_same_outputs(before, after, feeds_list, rtol=1e-5):
    for feeds in feeds_list:
        for want, got in zip(check_and_run(before, feeds), check_and_run(after, feeds)):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * float(np.abs(want).max()))
