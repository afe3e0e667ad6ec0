"""--provider on calibrate, compare, sensitivity and pipeline: a provider onnxruntime lacks is one
error line before any inference; cpu and auto run (here on the CPU) with the same results."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from qtool.calib.calibfile import read_calibration
from tests.helpers.demo import write_config
from tests.tiny_models import conv_relu_gemm, save

pytestmark = pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(),
                                reason="onnxruntime here has CUDA")
MISSING = "error: --provider cuda: onnxruntime has no CUDAExecutionProvider (available: "


@pytest.fixture
def model_and_data(tmp_path):
    model = save(conv_relu_gemm(), tmp_path / "net.onnx")
    rng = np.random.default_rng(2)
    np.save(tmp_path / "data.npy", rng.normal(size=(6, 2, 6, 6)).astype(np.float32))
    return model, tmp_path / "data.npy"


def test_calibrate_with_a_missing_provider_fails_before_writing(qtool, model_and_data, tmp_path):
    model, data = model_and_data
    result = qtool("calibrate", model, "--data", data, "--provider", "cuda")
    assert result.code == 1
    assert result.err.startswith(MISSING) and result.err.count("\n") == 1
    assert not (tmp_path / "net.calib.json").exists()


def test_cpu_and_auto_give_the_same_calibration(qtool, model_and_data, tmp_path):
    model, data = model_and_data
    for provider in ("cpu", "auto"):
        result = qtool("calibrate", model, "--data", data, "--method", "entropy",
                       "--provider", provider, "-o", tmp_path / f"{provider}.json")
        assert result.code == 0, result.err
    cpu, auto = read_calibration(tmp_path / "cpu.json"), read_calibration(tmp_path / "auto.json")
    assert cpu.amax == auto.amax
    assert (cpu.config["provider"], auto.config["provider"]) == ("cpu", "auto")
    for name, hist in cpu.load_histograms().items():
        np.testing.assert_array_equal(hist.hist, auto.load_histograms()[name].hist)


def test_compare_and_sensitivity_with_a_missing_provider(qtool, model_and_data, tmp_path):
    model, data = model_and_data
    result = qtool("compare", model, model, "--data", data, "--provider", "cuda")
    assert result.code == 1 and result.err.startswith(MISSING)
    assert qtool("calibrate", model, "--data", data, "--method", "max").code == 0
    result = qtool("sensitivity", model, "--calib", tmp_path / "net.calib.json", "--data", data,
                   "--provider", "cuda", "-o", tmp_path / "sens.json")
    assert result.code == 1 and result.err.startswith(MISSING)
    assert not (tmp_path / "sens.json").exists()
    result = qtool("compare", model, model, "--data", data, "--provider", "cpu", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["samples"] == 6 and report["outputs"]["y"]["max_abs_error"] == 0.0


def test_pipeline_provider_flag_and_config_key(qtool, demo_copy):
    config = write_config(demo_copy)
    result = qtool("pipeline", config, "--provider", "cuda")
    assert result.code == 1
    assert MISSING in result.err
    config.write_text(config.read_text().replace('output_dir = "../out"',
                                                 'output_dir = "../out"\nprovider = "cuda"'))
    result = qtool("pipeline", config)
    assert result.code == 1 and MISSING in result.err


def test_pipeline_config_keys_for_provider_and_build_batch():
    from qtool.errors import UsageError
    from qtool.pipeline import check_tables

    check_tables({"pipeline": {"model": "m.onnx", "provider": "cuda"}, "build": {"batch": 8}}, "ci.toml")
    with pytest.raises(UsageError, match="batch"):
        check_tables({"pipeline": {"model": "m.onnx"}, "build": {"batch": "8"}}, "ci.toml")
