"""ModelFacts: the answers of the single-question helpers, found in one pass and one shape
inference; calibrate and quantize each analyse the model once."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from qtool.calib.api import CalibrateOptions, calibrate
from qtool.graph.constants import constant_names, runtime_inputs
from qtool.graph.facts import ModelFacts, as_facts
from qtool.graph.observe import channel_axes, tensors_to_observe
from qtool.graph.shapes import constant_infos, tensor_infos
from qtool.graph.types import float_tensors, tensor_elem_types
from qtool.io.model import has_unloaded_weights, opset_version
from tests.tiny_models import (
    constant_reshape_gemm,
    conv_relu_gemm,
    relu6_conv,
    save,
    two_input_matmul,
)

MODELS = {"conv_relu_gemm": conv_relu_gemm, "two_input_matmul": two_input_matmul,
          "constant_node": constant_reshape_gemm,
          "relu6_conv": lambda: relu6_conv(np.ones((3, 2, 1, 1), np.float32), 4)}


@pytest.mark.parametrize("build", MODELS.values(), ids=MODELS.keys())
def test_facts_answer_what_the_helpers_answer(build):
    model = build()
    facts = ModelFacts.of(model)
    assert facts.infos == tensor_infos(model)
    assert facts.elem_types == tensor_elem_types(model)
    assert facts.float_tensors == float_tensors(model)
    assert facts.constants == constant_names(model)
    assert facts.constant_infos == constant_infos(model)
    assert list(facts.runtime_inputs) == runtime_inputs(model)
    assert facts.unloaded_weights == has_unloaded_weights(model)
    assert facts.opset == opset_version(model)
    assert facts.topology.nodes == list(model.graph.node)
    assert tensors_to_observe(facts) == tensors_to_observe(model)
    assert channel_axes(facts) == channel_axes(model)


def test_facts_of_a_constant_node_model():
    facts = ModelFacts.of(constant_reshape_gemm())
    assert facts.infos["flat"].shape == (1, 4)  # the Constant's value was read by inference
    assert facts.elem_types["dims"] == TensorProto.INT64
    assert "dims" not in facts.float_tensors
    assert [value.name for value in facts.runtime_inputs] == ["x"]
    assert facts.graph_inputs == {"x", "w"}
    assert facts.dense_constants == {"w", "shape"}


def test_as_facts_keeps_facts_and_analyses_bare_models():
    model = conv_relu_gemm()
    facts = ModelFacts.of(model)
    assert as_facts(facts) is facts
    assert as_facts(model).infos == facts.infos


class InferenceCounter:
    """Counts onnx shape inference calls, the calibration sessions' output declarations
    included (they take the facts' element types)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = onnx.shape_inference.infer_shapes

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(onnx.shape_inference, "infer_shapes", counted)


@pytest.mark.parametrize("method", ["entropy", "auto"])
def test_calibrate_infers_shapes_once(tmp_path, monkeypatch, method):
    path = save(conv_relu_gemm(), tmp_path / "m.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).normal(size=(16, 2, 6, 6)).astype(np.float32))
    counter = InferenceCounter(monkeypatch)
    calibrate(path, data, CalibrateOptions(method=method))
    assert counter.calls == 1


def test_quantize_infers_shapes_once(tmp_path, monkeypatch, qtool):
    path = save(conv_relu_gemm(), tmp_path / "m.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).normal(size=(8, 2, 6, 6)).astype(np.float32))
    assert qtool("calibrate", path, "--data", data, "--method", "max", "-q").code == 0
    counter = InferenceCounter(monkeypatch)
    assert qtool("quantize", path, "--calib", tmp_path / "m.calib.json", "-q").code == 0
    assert counter.calls == 1


def test_facts_fall_back_like_the_helpers_when_the_skeleton_cannot_be_inferred(monkeypatch):
    """Inference that fails on the skeleton is tried on the whole model for the element types,
    and the types and shapes stay those the model declares, as with the single helpers."""
    real = onnx.shape_inference.infer_shapes
    model = conv_relu_gemm()

    def refuse_skeletons(given, *args, **kwargs):
        if given is not model:
            raise ValueError("inference failed")
        return real(given, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", refuse_skeletons)
    facts = ModelFacts.of(model)
    assert facts.infos == tensor_infos(model)
    assert facts.elem_types == tensor_elem_types(model)
    assert "relu" not in facts.infos and facts.elem_types["relu"] == TensorProto.FLOAT
