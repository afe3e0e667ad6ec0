"""End to end on a GPU: the demo model calibrated and quantized by the library, built into a
TensorRT engine, run, and compared with onnxruntime on the same Q/DQ model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qtool.backends.tensorrt.build import BuildOptions, build_engine
from qtool.backends.tensorrt.runtime import TensorRTRunner
from qtool.errors import QtoolError

pytestmark = pytest.mark.gpu

SHAPES = ["input:1,1,8,8x64,1,8,8x256,1,8,8"]


def quantize_demo(demo, folder, high_precision="fp32"):
    from qtool.calibrate import CalibrateOptions, calibrate
    from qtool.io.model import load_model, save_model
    from qtool.quantize.api import quantize_model
    from qtool.quantize.options import QuantizeOptions

    model_path = demo / "digits_cnn.onnx"
    result = calibrate(model_path, demo / "data" / "calib.npz", CalibrateOptions(method="percentile", batch_size=64))
    quantized, summary = quantize_model(load_model(model_path), result.calibration.amax,
                                        QuantizeOptions(high_precision=high_precision))
    assert summary.total_quantized > 0
    path = folder / f"digits_cnn.int8.{high_precision}.onnx"
    save_model(quantized, path)
    return path


def batches(array, size):
    return [array[start:start + size] for start in range(0, len(array), size)]


def onnxruntime_logits(model_path, inputs, size=64):
    from qtool.backends.onnxruntime import OnnxRunner

    with OnnxRunner(model_path) as runner:
        return np.concatenate([runner.run({"input": batch})["logits"] for batch in batches(inputs, size)])


def tensorrt_logits(engine_path, inputs, sizes):
    outputs = []
    with TensorRTRunner(engine_path) as runner:
        start = 0
        for size in sizes:
            outputs.append(runner.run({"input": inputs[start:start + size]})["logits"])
            start += size
    return np.concatenate(outputs)


def cosine(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


@pytest.fixture(scope="module")
def demo_data(demo_dir):
    with np.load(demo_dir / "data" / "test.npz") as data:
        inputs = data["input"]
    labels = np.load(demo_dir / "data" / "test_labels.npy")
    fp32_top1 = json.loads((demo_dir / "demo.json").read_text())["fp32_top1"]
    return inputs, labels, fp32_top1


@pytest.fixture(scope="module")
def int8_model(demo_dir, tmp_path_factory):
    return quantize_demo(demo_dir, tmp_path_factory.mktemp("qdq"))


@pytest.fixture(scope="module")
def int8_engine(tensorrt_gpu, int8_model):
    result = build_engine(int8_model, int8_model.with_suffix(".engine"), BuildOptions(int8=True, shapes=SHAPES))
    return result


def test_int8_engine_runs_int8_layers_and_agrees_with_onnxruntime(int8_engine, int8_model, demo_data, demo_dir):
    inputs, labels, fp32_top1 = demo_data
    summary = int8_engine.summary
    assert summary.detailed
    assert summary.quantized >= 2, summary.summary_line()  # the demo's convolutions run in INT8
    trt_out = tensorrt_logits(int8_engine.engine_path, inputs, [64] * 8 + [len(inputs) - 512])
    ort_out = onnxruntime_logits(int8_model, inputs)
    assert trt_out.shape == ort_out.shape == (len(inputs), 10)
    cos = cosine(trt_out, ort_out)
    assert cos.mean() > 0.995 and cos.min() > 0.95
    assert (trt_out.argmax(1) == ort_out.argmax(1)).mean() >= 0.98
    assert (trt_out.argmax(1) == labels).mean() >= fp32_top1 - 0.03
    fp32_out = onnxruntime_logits(demo_dir / "digits_cnn.onnx", inputs)
    assert (trt_out.argmax(1) == fp32_out.argmax(1)).mean() >= 0.95


def test_two_profiles_and_varying_batches(tensorrt_gpu, int8_model, demo_data, tmp_path):
    inputs, _, _ = demo_data
    shapes = ["input:1,1,8,8x4,1,8,8x8,1,8,8", "input:9,1,8,8x16,1,8,8x32,1,8,8"]
    result = build_engine(int8_model, tmp_path / "two.engine", BuildOptions(int8=True, shapes=shapes))
    sizes = [5, 20, 1, 32, 8, 9]
    trt_out = tensorrt_logits(result.engine_path, inputs, sizes)
    ort_out = onnxruntime_logits(int8_model, inputs[:sum(sizes)])
    assert (trt_out.argmax(1) == ort_out.argmax(1)).mean() >= 0.97
    with TensorRTRunner(result.engine_path) as runner, \
            pytest.raises(QtoolError, match="fits no optimization profile"):
        runner.run({"input": inputs[:33]})


def test_fp16_elsewhere_builds_and_agrees(tensorrt_gpu, int8_model, demo_data, tmp_path):
    inputs, _, _ = demo_data
    notes = []
    result = build_engine(int8_model, tmp_path / "fp16.engine",
                          BuildOptions(int8=True, fp16=True, shapes=SHAPES), notify=notes.append)
    if result.fp16_converted:
        assert any("FP16" in note for note in notes)
    else:
        assert "FP16" in result.precision_flags
    trt_out = tensorrt_logits(result.engine_path, inputs, [256, 256, len(inputs) - 512])
    ort_out = onnxruntime_logits(int8_model, inputs)
    assert (trt_out.argmax(1) == ort_out.argmax(1)).mean() >= 0.97


def test_timing_cache_is_written_then_reused(tensorrt_gpu, int8_model, tmp_path):
    cache = tmp_path / "tactics.cache"
    options = BuildOptions(int8=True, shapes=SHAPES, timing_cache=str(cache), builder_optimization_level=2,
                           workspace_mib=256)
    build_engine(int8_model, tmp_path / "a.engine", options)
    assert cache.stat().st_size > 0
    notes = []
    build_engine(int8_model, tmp_path / "b.engine", options, notify=notes.append)
    assert not [note for note in notes if "timing cache" in note]


def test_run_command_writes_all_outputs(tensorrt_gpu, int8_engine, demo_data, demo_dir, tmp_path):
    from qtool.cli.main import main

    inputs, _, _ = demo_data
    out = tmp_path / "outputs.npz"
    with pytest.raises(SystemExit) as info:
        main(["run", str(int8_engine.engine_path), "--data", str(demo_dir / "data" / "test.npz"),
              "--batch-size", "100", "-o", str(out)])
    assert info.value.code == 0
    with np.load(out) as data:
        assert data.files == ["logits"]
        logits = data["logits"]
    assert logits.shape == (len(inputs), 10)
    reference = tensorrt_logits(int8_engine.engine_path, inputs, [100] * 5 + [len(inputs) - 500])
    np.testing.assert_allclose(logits, reference, rtol=0, atol=1e-4)
    record = json.loads(out.with_name(out.name + ".json").read_text())
    assert record["samples"] == len(inputs) and record["batches"] == 6
