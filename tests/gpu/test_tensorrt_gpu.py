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
    from qtool.calib.api import CalibrateOptions, calibrate
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
    from qtool.backends.onnxruntime.runner import OnnxRunner

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


def test_fp16_elsewhere_keeps_every_int8_layer_and_agrees(tensorrt_gpu, int8_engine, int8_model, demo_data,
                                                           tmp_path):
    inputs, _, _ = demo_data
    notes = []
    result = build_engine(int8_model, tmp_path / "fp16.engine",
                          BuildOptions(int8=True, fp16=True, shapes=SHAPES), notify=notes.append)
    if result.fp16_converted:
        assert any("FP16" in note for note in notes)
    else:
        assert "FP16" in result.precision_flags
    # FP16 elsewhere must not cost a single INT8 layer (a DQ -> Cast -> Conv left in would)
    assert result.summary.quantized == int8_engine.summary.quantized, (
        result.summary.summary_line(), int8_engine.summary.summary_line())
    if result.fp16_converted:  # strongly typed: the FP16 types are the model's, not a choice
        assert result.summary.counts().get("fp16", 0) > 0, result.summary.summary_line()
    trt_out = tensorrt_logits(result.engine_path, inputs, [256, 256, len(inputs) - 512])
    ort_out = onnxruntime_logits(int8_model, inputs)
    assert (trt_out.argmax(1) == ort_out.argmax(1)).mean() >= 0.97


def test_a_model_quantized_with_fp16_builds_with_the_same_int8_layers(tensorrt_gpu, int8_engine, demo_dir,
                                                                      demo_data, tmp_path):
    from qtool.backends.tensorrt.adapter import TrtAdapter

    inputs, _, _ = demo_data
    fp16_model = quantize_demo(demo_dir, tmp_path, high_precision="fp16")
    notes = []
    result = build_engine(fp16_model, tmp_path / "fp16model.engine",
                          BuildOptions(int8=True, shapes=SHAPES), notify=notes.append)
    assert result.typing.startswith("strongly typed")
    if not TrtAdapter.for_module(tensorrt_gpu).always_strongly_typed:
        assert result.typing == "strongly typed (the model holds FP16 tensors)"
        assert result.precision_flags == []
    assert result.summary.quantized == int8_engine.summary.quantized, result.summary.summary_line()
    trt_out = tensorrt_logits(result.engine_path, inputs, [256, 256, len(inputs) - 512])
    ort_out = onnxruntime_logits(fp16_model, inputs)
    assert (trt_out.argmax(1) == ort_out.argmax(1)).mean() >= 0.97


def test_build_without_shapes_takes_the_sizes_seen_in_calibration(tensorrt_gpu, demo_dir, demo_data, tmp_path):
    import shutil

    from qtool.calib.api import CalibrateOptions, calibrate
    from qtool.calib.calibfile import write_calibration

    inputs, _, _ = demo_data
    model = quantize_demo(demo_dir, tmp_path)
    target = model.with_name("net.int8.onnx")
    shutil.move(model, target)
    result = calibrate(demo_dir / "digits_cnn.onnx", demo_dir / "data" / "calib.npz",
                       CalibrateOptions(method="max", batch_size=48))
    write_calibration(result.calibration, tmp_path / "net.calib.json", result.histograms)
    built = build_engine(target, None, BuildOptions(int8=True))
    assert built.to_dict()["profiles"] == [{"input": {"min": [1, 1, 8, 8], "opt": [48, 1, 8, 8],
                                                      "max": [48, 1, 8, 8]}}]
    trt_out = tensorrt_logits(built.engine_path, inputs, [48, 1, 17])
    assert (trt_out.argmax(1) == onnxruntime_logits(target, inputs[:66]).argmax(1)).mean() >= 0.97


def test_calibration_on_onnxruntimes_cuda_provider_counts_like_the_cpu(demo_dir):
    import onnxruntime as ort

    from qtool.calib.api import CalibrateOptions, calibrate

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no CUDA provider (install onnxruntime-gpu)")
    runs = {provider: calibrate(demo_dir / "digits_cnn.onnx", demo_dir / "data" / "calib.npz",
                                CalibrateOptions(method="max", batch_size=64, provider=provider))
            for provider in ("cpu", "cuda")}
    cpu, cuda = runs["cpu"].histograms, runs["cuda"].histograms
    assert set(cpu) == set(cuda)
    for name in cpu:
        # the same values counted: only where they were computed (TF32/cuDNN rounding) differs
        assert cuda[name].count == cpu[name].count
        assert int(cuda[name].hist.sum()) == int(cpu[name].hist.sum())
        assert cuda[name].abs_max == pytest.approx(cpu[name].abs_max, rel=1e-2)
    assert runs["cuda"].calibration.config["provider"] == "cuda"


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
