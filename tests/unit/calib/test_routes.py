"""Calibration observes exactly the tensors of the placement plan made from the model's facts."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from qtool.calib.api import CalibrateOptions, calibrate
from qtool.calib.routes import calibration_plan, observed_tensors, tensors_to_calibrate
from qtool.graph.facts import ModelFacts
from qtool.graph.observe import tensors_to_observe
from qtool.placement import PlacementOptions, make_plan
from tests.tiny_models import (
    constant_reshape_gemm,
    conv_relu_gemm,
    relu6_conv,
    save,
    two_input_matmul,
)

INPUTS = {
    "conv_relu_gemm": (conv_relu_gemm, {"x": (2, 6, 6)}),
    "two_input_matmul": (two_input_matmul, {"a": (4, 8), "b": (8, 5), "c": (4, 5)}),
    "relu6_conv": (lambda: relu6_conv(np.ones((3, 2, 1, 1), np.float32), 4), {"x": (2, 4, 4)}),
}


def _plan_tensors(model: onnx.ModelProto) -> list[str]:
    facts = ModelFacts.of(model)
    candidates = tensors_to_observe(facts)
    plan = make_plan(facts, dict.fromkeys(candidates, 1.0), PlacementOptions())
    return [name for name in candidates if name in plan.activations]


@pytest.mark.parametrize("name", INPUTS)
def test_calibrate_observes_the_plans_tensors(tmp_path, name):
    build, shapes = INPUTS[name]
    path = save(build(), tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, **{key: rng.normal(size=(8, *shape)).astype(np.float32)
                      for key, shape in shapes.items()})
    result = calibrate(path, data, CalibrateOptions(method="max"))
    planned = _plan_tensors(onnx.load(path))
    assert planned
    assert list(result.calibration.tensors) == planned


def test_observed_tensors_are_the_plans():
    facts = ModelFacts.of(conv_relu_gemm())
    plan = calibration_plan(facts)
    assert observed_tensors(facts, plan) == tensors_to_calibrate(facts.model)
    assert set(observed_tensors(facts, plan)) == set(plan.activations)


def test_no_plan_observes_every_candidate():
    facts = ModelFacts.of(constant_reshape_gemm())
    unloaded = ModelFacts(**{**vars(facts), "unloaded_weights": True})
    assert calibration_plan(unloaded) is None
    assert tensors_to_calibrate(unloaded) == tensors_to_observe(facts)
    assert observed_tensors(facts, None) == tensors_to_observe(facts)
