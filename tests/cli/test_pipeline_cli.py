import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.helpers.demo import write_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo"
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def test_repository_demo_config_end_to_end(qtool, tmp_path):
    out = tmp_path / "demo-out"
    result = qtool("pipeline", REPO / "configs" / "demo.toml", "-o", out)
    assert result.code == 0, result.err + result.out
    for name in ("digits_cnn.calib.json", "digits_cnn.calib.npz", "digits_cnn.int8.onnx",
                 "check.json", "compare.json", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is True and summary["exit_status"] == 0
    with open(REPO / "configs" / "demo.toml", "rb") as handle:
        assert summary["method"] == tomllib.load(handle)["calibrate"]["method"]
    assert summary["model"]["sha256"] == json.loads((DEMO / "demo.json").read_text())[
        "sha256"]["digits_cnn.onnx"]
    assert set(summary["tools"]) >= {"qtool", "onnx", "onnxruntime", "numpy"}
    assert summary["config"]["tables"]["compare"]["min_agreement"] == 98.0
    metrics = summary["metrics"]["compare"]
    assert metrics["fp32_top1_percent"] == pytest.approx(100 * 534 / 540)
    assert metrics["top1_drop_points"] <= 1.0 and metrics["top1_agreement_percent"] >= 98.0
    assert [g["gate"] for g in summary["gates"]] == ["max_top1_drop", "min_agreement"]
    assert all(g["passed"] for g in summary["gates"])
    assert all(step["seconds"] >= 0 for step in summary["steps"].values())
    assert "FP32 top-1 98.89%" in result.out and "gate passed" in result.out
    # every Conv, Gemm and MatMul of the demo gets its bias corrected from the calibrated means
    correction = summary["steps"]["quantize"]["bias_correction"]
    assert correction["status"] == "applied" and correction["corrected"] == 7


def test_bias_correction_can_be_turned_off_in_the_config(qtool, demo_copy):
    config = write_config(demo_copy, extra="[quantize]\nbias_correction = false\n")
    assert qtool("pipeline", config).code == 0
    summary = json.loads((demo_copy / "out" / "summary.json").read_text())
    assert summary["steps"]["quantize"]["bias_correction"]["status"] == "disabled"


def test_metrics_are_those_of_the_saved_int8_model(qtool, demo_copy):
    config = write_config(demo_copy)
    assert qtool("pipeline", config).code == 0
    out = demo_copy / "out"
    summary = json.loads((out / "summary.json").read_text())
    test = np.load(demo_copy / "assets" / "data" / "test.npz")["input"]
    labels = np.load(demo_copy / "assets" / "data" / "test_labels.npy")

    def top1(path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.concatenate([session.run(None, {"input": test[i:i + 100]})[0].argmax(1)
                               for i in range(0, len(test), 100)])

    fp32, int8 = top1(demo_copy / "assets" / "digits_cnn.onnx"), top1(out / "digits_cnn.int8.onnx")
    metrics = summary["metrics"]["compare"]
    assert metrics["fp32_top1_percent"] == pytest.approx(100 * np.mean(fp32 == labels))
    assert metrics["int8_top1_percent"] == pytest.approx(100 * np.mean(int8 == labels))
    assert metrics["top1_agreement_percent"] == pytest.approx(100 * np.mean(fp32 == int8))


def test_rerun_reuses_the_calibration_until_something_changes(qtool, demo_copy):
    config = write_config(demo_copy)
    first = qtool("pipeline", config)
    assert first.code == 0, first.err
    calib = demo_copy / "out" / "digits_cnn.calib.json"
    stamp = calib.stat().st_mtime_ns
    key = json.loads(calib.read_text())["config"]["cache_key"]
    second = qtool("pipeline", config)
    assert second.code == 0
    assert "calibrate       reused" in second.out and "unchanged" in second.out
    assert calib.stat().st_mtime_ns == stamp
    summary = json.loads((demo_copy / "out" / "summary.json").read_text())
    assert summary["steps"]["calibrate"]["status"] == "reused"
    assert summary["steps"]["calibrate"]["cache_key"] == key
    # forced, or with other calibration data: calibrated again
    assert "calibrate       ok" in qtool("pipeline", config, "--force-calibrate").out
    data = demo_copy / "assets" / "data" / "calib.npz"
    arrays = dict(np.load(data))
    arrays["input"] = arrays["input"][:128]
    np.savez(data, **arrays)
    third = qtool("pipeline", config)
    assert "calibrate       ok" in third.out
    assert json.loads(calib.read_text())["config"]["cache_key"] != key
    assert json.loads(calib.read_text())["num_samples"] == 128


def test_failing_gate_exits_3_and_skips_the_build(qtool, demo_copy):
    config = write_config(demo_copy, extra_compare="min_sqnr = 90.0")
    result = qtool("pipeline", config)
    assert result.code == 3
    assert result.err.startswith("error: accuracy gate failed: sqnr_db[logits] ")
    assert "< 90 (--min-sqnr)" in result.err
    summary = json.loads((demo_copy / "out" / "summary.json").read_text())
    assert summary["passed"] is False and summary["exit_status"] == 3
    assert summary["steps"]["compare"]["status"] == "gate_failed"
    assert summary["steps"]["build"]["status"] == "skipped"
    assert "gate FAILED" in result.out


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT installed")
def test_required_build_without_tensorrt_fails_clearly(qtool, demo_copy):
    config = write_config(demo_copy, extra="[build]\nrequired = true\n")
    result = qtool("pipeline", config)
    assert result.code == 1
    assert result.err.startswith("error: [build] required = true but TensorRT is not available")
    summary = json.loads((demo_copy / "out" / "summary.json").read_text())
    assert summary["steps"]["build"]["status"] == "failed"
    assert summary["steps"]["compare"]["status"] == "ok"
    # not required: skipped, and the pipeline passes
    config = write_config(demo_copy, extra="[build]\nrequired = false\n")
    result = qtool("pipeline", config)
    assert result.code == 0 and "build           skipped" in result.out


def test_config_errors(qtool, demo_copy):
    config = write_config(demo_copy, extra="[compare2]\nx = 1\n")
    result = qtool("pipeline", config)
    assert result.code == 2 and "unknown table [compare2]" in result.err
    config = write_config(demo_copy, extra_compare="min_agreemnt = 99.0")
    result = qtool("pipeline", config)
    assert result.code == 2 and "unknown key 'min_agreemnt' in [compare]" in result.err
    config = write_config(demo_copy, extra_compare="num_samples = \"ten\"")
    assert "must be an integer" in qtool("pipeline", config).err
    config.write_text("[pipeline]\nmodel = 'missing.onnx'\n")
    result = qtool("pipeline", config)
    assert result.code == 1 and "model not found" in result.err
    assert (config.parent / "out" / "ci" / "summary.json").is_file()
    result = qtool("pipeline", demo_copy / "none.toml")
    assert result.code == 1 and "config file not found" in result.err


def test_quantize_table_and_exclude_file_relative_to_config(qtool, demo_copy):
    (demo_copy / "configs" / "keep.txt").write_text("# keep the head in FP32\nfc\n")
    config = write_config(demo_copy, extra='[quantize]\nexclude_file = "keep.txt"\n'
                                             'exclude = ["head.matmul"]\n')
    result = qtool("pipeline", config, "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    skipped = {s["node"]: s["reason"] for s in summary["steps"]["quantize"]["skipped"]}
    assert skipped["fc"] == "excluded_name" and skipped["head.matmul"] == "excluded_name"


def test_build_and_engine_compare_steps_when_tensorrt_is_there(qtool, demo_copy, monkeypatch):
    """The wiring of the build steps, with TensorRT stood in for: the 'engine' is the INT8
    ONNX model run by onnxruntime, so its comparison must equal the ONNX comparison."""
    from types import SimpleNamespace

    import qtool.analysis.compare as compare_module
    import qtool.backends.tensorrt.build as build_module
    from qtool.backends import availability
    from qtool.backends.onnxruntime.runner import OnnxRunner

    built = {}

    def fake_build(model_path, output, options):
        built.update(model=Path(model_path), options=options)
        Path(output).write_bytes(b"engine")
        return SimpleNamespace(tensorrt_version="10.99", typing="weakly typed, INT8",
                               build_seconds=0.5, engine_sha256="0" * 64)

    real_open = compare_module.open_runner

    def fake_open(path, providers=None):
        if str(path).endswith(".engine"):
            return OnnxRunner(Path(path).with_suffix(".onnx"))
        return real_open(path, providers)

    monkeypatch.setattr(availability, "tensorrt_component",
                        lambda start_builder=True: availability.Component("tensorrt", True, "10.99"))
    monkeypatch.setattr(build_module, "build_engine", fake_build)
    monkeypatch.setattr(compare_module, "open_runner", fake_open)
    config = write_config(demo_copy, extra='[build]\nrequired = true\nfp16 = true\n'
                                           'shapes = ["input:1,1,8,8x100,1,8,8x100,1,8,8"]\n')
    result = qtool("pipeline", config)
    assert result.code == 0, result.err
    out = demo_copy / "out"
    assert built["model"] == out / "digits_cnn.int8.onnx"
    assert built["options"].int8 and built["options"].fp16
    assert built["options"].shapes == ["input:1,1,8,8x100,1,8,8x100,1,8,8"]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["steps"]) == ["calibrate", "quantize", "check", "compare", "build",
                                      "compare_engine"]
    assert summary["steps"]["build"]["status"] == "ok"
    assert summary["tools"]["tensorrt"] == "10.99"
    assert summary["metrics"]["compare_engine"] == summary["metrics"]["compare"]
    assert len(summary["gates"]) == 4 and (out / "compare_engine.json").is_file()


def test_a_new_threshold_method_reuses_the_histograms(qtool, demo_copy):
    """Changing only the method picks thresholds again from the stored histograms: the same
    amax as calibrating from scratch with that method, without running the data again."""
    import re

    from qtool.calib.calibfile import read_calibration
    from qtool.calib.thresholding import amax_from_histograms

    config = write_config(demo_copy)  # method = "percentile"
    assert qtool("pipeline", config).code == 0
    calib = demo_copy / "out" / "digits_cnn.calib.json"
    histograms = read_calibration(calib).load_histograms()
    config.write_text(re.sub('method = "percentile"', 'method = "mse"', config.read_text()))
    result = qtool("pipeline", config)
    assert result.code == 0, result.err
    assert "histograms reused (no inference)" in result.out
    again = read_calibration(calib)
    assert again.method == "mse" and again.config["method"] == "mse"
    expected = amax_from_histograms(histograms, "mse")
    assert all(again.amax[name] == expected[name] for name in histograms
               if again.tensors[name].rule is None)
    fresh = qtool("pipeline", config, "--force-calibrate")
    assert "calibrate       ok" in fresh.out and "no inference" not in fresh.out
    assert read_calibration(calib).amax == again.amax
    # a rerun with nothing changed reuses the file as it is
    assert "calibrate       reused" in qtool("pipeline", config).out


def test_method_auto_scores_the_comparison_task(qtool, demo_copy):
    """With labels in [compare], auto scores classification agreement; a rerun reuses it, and
    a switch to a plain method needs no auto data."""
    import re

    from qtool.calib.calibfile import read_calibration

    config = write_config(demo_copy)
    config.write_text(re.sub('method = "percentile"', 'method = "auto"', config.read_text()))
    result = qtool("pipeline", config)
    assert result.code == 0, result.err + result.out
    calib = read_calibration(demo_copy / "out" / "digits_cnn.calib.json")
    assert calib.method == "auto" and calib.config["task"] == "classification"
    assert all("agreement" in score for score in calib.auto["model_scores"].values())
    assert "calibrate       reused" in qtool("pipeline", config).out
    config.write_text(re.sub('method = "auto"', 'method = "mse"', config.read_text()))
    assert qtool("pipeline", config).code == 0
    assert read_calibration(demo_copy / "out" / "digits_cnn.calib.json").config["task"] is None
