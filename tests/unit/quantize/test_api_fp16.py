"""quantize_model with --high-precision fp16: the unquantized rest of the model in FP16, FP32
inputs and outputs (the conversion itself, convert_to_fp16, is tested in test_fp16.py)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from qtool.quantize.api import quantize_model
from qtool.quantize.options import QuantizeOptions
from tests.helpers.models import RESIDUAL_AMAX, residual_classifier
from tests.helpers.onnx_graphs import check_and_run

pytest.importorskip("qtool.quantize.fp16", reason="FP16 conversion not available yet")


def test_fp16_high_precision_keeps_io_types_and_qdq():
    model, _ = residual_classifier()
    x = np.random.default_rng(1).normal(size=(2, 3, 6, 6)).astype(np.float32)
    fp32, _ = quantize_model(model, RESIDUAL_AMAX)
    fp16, summary = quantize_model(model, RESIDUAL_AMAX, QuantizeOptions(high_precision="fp16"))
    assert summary.options["high_precision"] == "fp16"
    assert [v.type.tensor_type.elem_type for v in fp16.graph.input] == [TensorProto.FLOAT]
    assert [v.type.tensor_type.elem_type for v in fp16.graph.output] == [TensorProto.FLOAT]
    ops = [n.op_type for n in fp16.graph.node]
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") > 0
    (a,) = check_and_run(fp32, {"x": x})
    (b,) = check_and_run(fp16, {"x": x})
    np.testing.assert_allclose(a, b, rtol=0.05, atol=0.05)
