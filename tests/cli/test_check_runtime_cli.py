"""`qtool check` also asks onnxruntime to create a session (optimizations off): models that pass
TensorRT's rules but that no ONNX runtime loads fail the check with one error finding."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.quantize.check import check_model
from tests.tiny_models import save

pytest.importorskip("onnxruntime")


def qdq_conv(scale: np.ndarray, opset: int = 17, float_dq_input: bool = False,
             axis: int | None = 0) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv(w via DQ) -> y, with the weight's scale as given."""
    weight = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.int8), "w_q")
    inits = [weight, numpy_helper.from_array(scale, "w_scale"),
             numpy_helper.from_array(np.array(0.1, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "x_zp")]
    dq_w = helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"], name="w_dq",
                            **({} if axis is None else {"axis": axis}))
    if float_dq_input:
        nodes = [helper.make_node("DequantizeLinear", ["x", "x_scale"], ["x_dq"], name="x_dq")]
    else:
        nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_q"),
                 helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"],
                                  name="x_dq")]
    nodes += [dq_w, helper.make_node("Conv", ["x_dq", "w"], ["y"], name="conv")]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_a_scale_with_no_elements_is_an_error(tmp_path, qtool):
    save(qdq_conv(np.zeros((0,), np.float32)), tmp_path / "m.onnx")
    result = qtool("check", tmp_path / "m.onnx")
    assert result.code == 1
    assert "error   scale-shape-mismatch       w_dq: scale 'w_scale' has no values" in result.out


CASES = {
    "FP16 scale at opset 17": qdq_conv(np.full((2,), 0.5, np.float16)),
    "DequantizeLinear of a float input": qdq_conv(np.full((2,), 0.5, np.float32),
                                                  float_dq_input=True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_models_onnxruntime_refuses_fail_the_check(name, tmp_path, qtool):
    save(CASES[name], tmp_path / "m.onnx")
    result = qtool("check", tmp_path / "m.onnx")
    assert result.code == 1, result.out
    line = next(line for line in result.out.splitlines() if "onnxruntime-load" in line)
    assert line.startswith("error   onnxruntime-load") and "onnxruntime cannot load" in line
    assert result.err == ""  # onnxruntime's own log lines stay silent


def test_a_model_onnxruntime_loads_passes_and_the_finding_can_be_ignored():
    good = qdq_conv(np.full((2,), 0.5, np.float32))
    assert [f.code for f in check_model(good).findings if f.code == "onnxruntime-load"] == []
    bad = CASES["FP16 scale at opset 17"]
    assert "onnxruntime-load" not in {f.code for f in check_model(bad, ignore=["onnxruntime-load"]).findings}


def test_onnxruntime_logs_nothing_before_qtools_error_line(tmp_path):
    """A model that fails inside onnxruntime at run time: stderr holds qtool's line only (checked
    in a real process, since onnxruntime writes to the C-level stderr)."""
    import subprocess
    import sys
    from pathlib import Path

    const = numpy_helper.from_array(np.ones((1, 2, 6, 6), np.float32), "c")
    weight = numpy_helper.from_array(np.ones((2, 4, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Concat", ["x", "c"], ["cat"], axis=1, name="cat"),
         helper.make_node("Conv", ["cat", "w"], ["y"], name="conv")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, "H", "W"])], [const, weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, tmp_path / "cat.onnx")
    np.save(tmp_path / "x.npy", np.ones((1, 2, 5, 5), np.float32))
    done = subprocess.run(
        [sys.executable, "-m", "qtool", "calibrate", str(tmp_path / "cat.onnx"), "--data",
         str(tmp_path / "x.npy"), "-o", str(tmp_path / "c.json")],
        capture_output=True, text=True, timeout=120, check=False,
        cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
