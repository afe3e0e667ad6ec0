"""Models whose graph outputs have a type but no shape, as graph-surgery tools and hand-built
graphs write them: onnx's checker refuses them, onnxruntime loads them, and so does qtool."""

import json
import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from qtool.errors import QtoolError
from qtool.io.model import load_model
from tests.tiny_models import conv_relu_gemm


def shapeless(model: onnx.ModelProto) -> onnx.ModelProto:
    for value in model.graph.output:
        value.type.tensor_type.ClearField("shape")
    with pytest.raises(onnx.checker.ValidationError, match="'shape' of 'type' is required"):
        onnx.checker.check_model(model)
    return model


def with_gelu_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """An extra output from onnxruntime's contrib Gelu, whose shape onnx cannot infer."""
    model.graph.node.append(helper.make_node("Gelu", ["y"], ["g"], name="gelu",
                                             domain="com.microsoft"))
    model.graph.output.append(helper.make_tensor_value_info("g", TensorProto.FLOAT, None))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return shapeless(model)


def test_output_shapes_come_from_inference_and_the_file_stays(tmp_path, caplog):
    path = tmp_path / "m.onnx"
    onnx.save(shapeless(conv_relu_gemm()), path)
    before = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="qtool"):
        model = load_model(path)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3]
    onnx.checker.check_model(model)
    assert not caplog.records and path.read_bytes() == before


def test_checker_complaints_are_one_warning_when_onnxruntime_loads_the_model(tmp_path, caplog):
    path = tmp_path / "m.onnx"
    onnx.save(with_gelu_output(conv_relu_gemm()), path)
    with caplog.at_level(logging.WARNING, logger="qtool"):
        model = load_model(path, load_weights=False)
    assert not model.graph.output[1].type.tensor_type.HasField("shape")
    assert model.graph.output[0].type.tensor_type.HasField("shape")  # inferred where it can be
    assert [r.getMessage() for r in caplog.records] == [
        (f"{path}: onnx's checker finds: Field 'shape' of 'type' is required but missing; "
         "onnxruntime loads the model, so it is used as it is")]


def test_a_model_that_onnxruntime_cannot_load_either_is_refused(tmp_path):
    model = with_gelu_output(conv_relu_gemm())
    model.graph.node[-1].input[0] = "nowhere"  # reads a tensor nothing defines
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    with pytest.raises(QtoolError, match=r"m.onnx is not a valid ONNX model: Field .shape. .*; "
                       r"onnxruntime cannot load it either: .*nowhere"):
        load_model(path)


def test_pipeline_runs_a_model_with_shapeless_outputs(qtool, tmp_path):
    """calibrate, quantize, check --strict and compare: the INT8 model has the inferred shape."""
    model_path = tmp_path / "model.onnx"
    onnx.save(shapeless(conv_relu_gemm()), model_path)
    before = model_path.read_bytes()
    rng = np.random.default_rng(0)
    for name, count in (("calib", 48), ("test", 24)):
        np.savez(tmp_path / f"{name}.npz", x=rng.normal(size=(count, 2, 6, 6)).astype(np.float32))
    config = tmp_path / "ci.toml"
    config.write_text('[pipeline]\nmodel = "model.onnx"\noutput_dir = "out"\n\n'
                      '[calibrate]\ndata = "calib.npz"\nmethod = "max"\nbatch_size = 8\n\n'
                      '[check]\nstrict = true\n\n[compare]\ndata = "test.npz"\nbatch_size = 8\n')
    result = qtool("pipeline", config)
    assert result.code == 0, result.err + result.out
    assert "warning" not in result.err.lower()
    out = tmp_path / "out"
    int8 = onnx.load(out / "model.int8.onnx")
    onnx.checker.check_model(int8)
    dims = int8.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3]
    assert any(node.op_type == "QuantizeLinear" for node in int8.graph.node)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is True and set(summary["steps"]) >= {
        "calibrate", "quantize", "check", "compare"}
    assert json.loads((out / "check.json").read_text())["findings"] == []
    assert model_path.read_bytes() == before


def test_each_command_takes_a_model_whose_output_no_inference_shapes(qtool, tmp_path):
    """The Gelu output keeps no shape: every command warns once on loading and goes on."""
    model_path = tmp_path / "model.onnx"
    onnx.save(with_gelu_output(conv_relu_gemm()), model_path)
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "calib.npz", x=rng.normal(size=(32, 2, 6, 6)).astype(np.float32))
    calib, int8 = tmp_path / "c.json", tmp_path / "m.int8.onnx"
    steps = [("calibrate", model_path, "--data", tmp_path / "calib.npz", "--method", "max",
              "--batch-size", 8, "-o", calib),
             ("quantize", model_path, "--calib", calib, "-o", int8),
             ("check", "--strict", int8),
             ("compare", model_path, int8, "--data", tmp_path / "calib.npz", "--batch-size", 8)]
    for args in steps:
        result = qtool(*args)
        assert result.code == 0, (args[0], result.err + result.out)
        assert "onnx's checker finds: Field 'shape' of 'type' is required" in result.err
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(int8).graph.node)
