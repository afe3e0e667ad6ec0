"""Bad data through calibrate -> quantize -> check: NaN and Inf, constant and all-zero tensors,
denormals, one-element tensors, empty batches, batch sizes and spatial shapes that change from
file to file, sharded runs whose first batch is all zeros. Each has a defined outcome (README,
"Numerics under bad data"); none crashes, and no written scale is ever zero, NaN or infinite."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.calib.calibfile import read_calibration
from qtool.calib.histogram import EMPTY_BIN_WIDTH
from qtool.quantize.scales import MIN_SCALE
from tests.tiny_models import conv_relu_gemm, save


def scales_of(path) -> dict[str, np.ndarray]:
    """Every Q/DQ scale of a quantized model, by node name."""
    model = onnx.load(str(path))
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    return {node.name: values[node.input[1]] for node in model.graph.node
            if node.op_type in ("QuantizeLinear", "DequantizeLinear")}


def calibrate_quantize_check(qtool, tmp_path, model_path, data, *calibrate_args):
    """The three commands; returns (calibration, scales, calibrate's stderr)."""
    calib, out = tmp_path / "m.calib.json", tmp_path / "m.int8.onnx"
    code, _, err = qtool("calibrate", model_path, "--data", data, "-o", calib,
                         *calibrate_args)
    assert code == 0, err
    code, _, qerr = qtool("quantize", model_path, "--calib", calib, "-o", out, "-q")
    assert code == 0, qerr
    code, check_out, check_err = qtool("check", out, "--json")
    assert code == 0, check_out + check_err
    report = json.loads(check_out)
    assert report["passed"] and report["counts"]["error"] == 0, report["findings"]
    scales = scales_of(out)
    assert scales
    for name, scale in scales.items():
        assert np.all(np.isfinite(scale)) and np.all(scale >= MIN_SCALE), (name, scale)
    calibration = read_calibration(calib)
    for name, amax in calibration.amax.items():
        assert np.isfinite(amax) and amax > 0, (name, amax)
    return calibration, scales, err


@pytest.fixture
def conv(tmp_path):
    return save(conv_relu_gemm(), tmp_path / "m.onnx")


def batch(rng, n=4):
    return rng.normal(size=(n, 2, 6, 6)).astype(np.float32)


@pytest.mark.parametrize("method", ["entropy", "max", "percentile", "mse"])
def test_nan_and_inf_inputs_are_left_out_and_reported(qtool, tmp_path, conv, method):
    rng = np.random.default_rng(0)
    x = batch(rng, 8)
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    np.save(tmp_path / "x.npy", x)
    calibration, _, err = calibrate_quantize_check(qtool, tmp_path, conv, tmp_path / "x.npy",
                                                   "--method", method)
    finite = np.abs(x[np.isfinite(x)])
    tensor = calibration.tensors["x"]
    assert (tensor.nan, tensor.inf, tensor.count) == (1, 2, x.size - 3)
    assert tensor.abs_max == float(finite.max())
    assert tensor.amax <= tensor.abs_max
    assert "tensor x had 1 NaN and 2 Inf values; they were left out of its histogram" in err


def test_an_input_that_is_all_nan_gets_the_tiny_placeholder_scale(qtool, tmp_path, conv):
    np.save(tmp_path / "x.npy", np.full((4, 2, 6, 6), np.nan, np.float32))
    calibration, scales, _ = calibrate_quantize_check(qtool, tmp_path, conv, tmp_path / "x.npy",
                                                      "--method", "max")
    # no finite value in any observed tensor: every amax is the placeholder 2**-24
    assert set(calibration.amax.values()) == {EMPTY_BIN_WIDTH}
    assert calibration.tensors["x"].nan == 4 * 2 * 6 * 6
    assert scales["x_QuantizeLinear"] == np.float32(EMPTY_BIN_WIDTH / 127)


def test_overflow_to_inf_inside_the_model_is_counted_not_used(qtool, tmp_path, conv):
    x = np.full((2, 2, 6, 6), 3.0e38, np.float32)  # the Conv overflows to +/-inf
    np.save(tmp_path / "x.npy", x)
    calibration, _, err = calibrate_quantize_check(qtool, tmp_path, conv, tmp_path / "x.npy")
    assert calibration.tensors["relu"].inf > 0
    assert calibration.amax["x"] == pytest.approx(3.0e38, rel=1e-6)
    assert "Inf values" in err


@pytest.mark.parametrize("value", [0.0, 3.0, -2.5])
def test_constant_inputs(qtool, tmp_path, conv, value):
    np.save(tmp_path / "x.npy", np.full((4, 2, 6, 6), value, np.float32))
    calibration, scales, _ = calibrate_quantize_check(qtool, tmp_path, conv, tmp_path / "x.npy")
    if value == 0.0:
        assert calibration.amax["x"] == EMPTY_BIN_WIDTH  # all-zero: a tiny positive amax
    else:
        assert calibration.amax["x"] == abs(value)  # one value: every method keeps all of it
        assert scales["x_QuantizeLinear"] == np.float32(abs(value) / 127)


def test_denormal_inputs_get_the_smallest_scale(qtool, tmp_path, conv):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(4, 2, 6, 6)) * 1e-40).astype(np.float32)  # float32 denormals
    assert np.all(np.abs(x[x != 0]) < np.finfo(np.float32).tiny)
    np.save(tmp_path / "x.npy", x)
    calibration, scales, _ = calibrate_quantize_check(qtool, tmp_path, conv, tmp_path / "x.npy",
                                                      "--method", "max")
    assert 0 < calibration.amax["x"] <= float(np.abs(x).max())
    assert scales["x_QuantizeLinear"] == MIN_SCALE  # amax / 127 is below the floor


def test_one_element_tensors(qtool, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(np.array([[-2.0]], np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = save(model, tmp_path / "one.onnx")
    folder = tmp_path / "data"
    folder.mkdir()
    for index, value in enumerate([0.5, -1.25, 0.0]):
        np.save(folder / f"{index}.npy", np.array([[value]], np.float32))
    # three samples: too few for auto to score, so it takes mse; entropy keeps the exact max
    calibration, scales, _ = calibrate_quantize_check(qtool, tmp_path, path, folder,
                                                      "--method", "entropy")
    assert calibration.amax["x"] == 1.25 and calibration.num_samples == 3
    assert scales["w_QuantizeLinear"] == np.float32(2.0 / 127)


def test_empty_batches_are_an_error_not_skipped(qtool, tmp_path, conv):
    folder = tmp_path / "data"
    folder.mkdir()
    np.save(folder / "a.npy", batch(np.random.default_rng(0)))
    np.save(folder / "b.npy", np.zeros((0, 2, 6, 6), np.float32))
    code, _, err = qtool("calibrate", conv, "--data", folder, "-o", tmp_path / "c.json")
    assert code == 1 and err == f"error: {folder / 'b.npy'}: holds zero samples\n"
    (tmp_path / "load.py").write_text(
        "import numpy as np\n"
        "def load_data():\n"
        "    yield {'x': np.ones((2, 2, 6, 6), np.float32)}\n"
        "    yield {'x': np.ones((0, 2, 6, 6), np.float32)}\n")
    code, _, err = qtool("calibrate", conv, "--data-loader-script", tmp_path / "load.py",
                         "-o", tmp_path / "c.json")
    assert code == 1 and "holds zero samples" in err and err.count("\n") == 1
    assert not (tmp_path / "c.json").exists()


def dynamic_conv() -> onnx.ModelProto:
    """x[N,2,H,W] -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm: any H, W."""
    model = conv_relu_gemm()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    onnx.checker.check_model(model, full_check=True)
    return model


def test_batch_and_spatial_sizes_change_from_file_to_file(qtool, tmp_path):
    path = save(dynamic_conv(), tmp_path / "dyn.onnx")
    rng = np.random.default_rng(2)
    folder = tmp_path / "data"
    folder.mkdir()
    shapes = [(3, 2, 6, 6), (1, 2, 9, 5), (5, 2, 4, 12), (2, 2, 1, 1)]
    arrays = [rng.normal(size=shape).astype(np.float32) * (k + 1) for k, shape in enumerate(shapes)]
    for index, array in enumerate(arrays):
        np.save(folder / f"{index}.npy", array)
    calibration, _, _ = calibrate_quantize_check(qtool, tmp_path, path, folder, "--method", "max")
    assert calibration.num_samples == 11 and calibration.num_batches == 4
    assert calibration.tensors["x"].count == sum(a.size for a in arrays)
    assert calibration.amax["x"] == float(max(np.abs(a).max() for a in arrays))
    # re-batching cannot join samples of different sizes: a clear error, not a crash
    code, _, err = qtool("calibrate", path, "--data", folder, "--batch-size", "4",
                         "-o", tmp_path / "b.json")
    assert code == 1 and "cannot batch" in err and err.count("\n") == 1


def test_shards_whose_first_batch_is_all_zero_still_merge_exactly(qtool, tmp_path, conv):
    """Every shard takes each tensor's grid from the first batch where it is not all zero, so a
    zero first batch (a dead ReLU on the first images, say) no longer splits the shards' grids."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "data"
    folder.mkdir()
    np.save(folder / "b0.npy", np.zeros((2, 2, 6, 6), np.float32))
    for index in range(1, 6):
        np.save(folder / f"b{index}.npy", batch(rng, 3) * index)
    whole = tmp_path / "whole.json"
    assert qtool("calibrate", conv, "--data", folder, "--method", "entropy", "-o", whole,
                 "-q").code == 0
    for k in range(3):
        code, _, err = qtool("calibrate", conv, "--data", folder, "--method", "entropy",
                             "--shard", f"{k}/3",
                             "-o", tmp_path / f"s{k}.json", "-q")
        assert code == 0, err
    code, _, err = qtool("merge-calib", *(tmp_path / f"s{k}.json" for k in range(3)),
                         "-o", tmp_path / "merged.json", "-q")
    assert code == 0, err
    one, merged = read_calibration(whole), read_calibration(tmp_path / "merged.json")
    assert merged.amax == one.amax and merged.num_samples == one.num_samples == 17
    for name, hist in one.load_histograms().items():
        other = merged.load_histograms()[name]
        assert hist.hist.tolist() == other.hist.tolist()
        assert hist.edges.tolist() == other.edges.tolist()


