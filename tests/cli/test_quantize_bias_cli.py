"""`qtool quantize --bias-correction/--no-bias-correction`: the flag, the config key, the summary."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qtool.calib.calibfile import Calibration
from qtool.errors import QtoolError
from tests.helpers.calibration import AMAX, write_calib
from tests.tiny_models import conv_relu_gemm, save

MEANS = {"x": (1, np.array([1.5, -0.5])), "flat": (1, np.array([0.5, 1.0, 2.0, 0.25]))}


@pytest.fixture
def net(tmp_path):
    model = save(conv_relu_gemm(), tmp_path / "net.onnx")
    return model, write_calib(tmp_path / "net.calib.json", model, AMAX)


def means_from(monkeypatch, means):
    calls = []

    def load(self):
        calls.append(self.path)
        if isinstance(means, Exception):
            raise means
        return means

    monkeypatch.setattr(Calibration, "load_channel_means", load)
    return calls


def biases(path):
    model = onnx.load(str(path))
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return values["b"], values["gb"], model.graph


def test_default_corrects_and_reports(qtool, net, tmp_path, monkeypatch):
    model, calib = net
    calls = means_from(monkeypatch, MEANS)
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "on.onnx")
    assert result.code == 0, result.err
    assert len(calls) == 1
    assert "bias-corrected 2 nodes\n" in result.out
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "on.onnx", "--json")
    summary = json.loads(result.out)
    assert summary["bias_correction"] == {"status": "applied", "corrected": 2,
                                          "corrected_nodes": ["conv", "fc"], "skipped": [],
                                          "skipped_by_reason": {}}
    assert summary["options"]["bias_correction"] is True

    means_from(monkeypatch, None)
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "none.onnx", "--json")
    assert json.loads(result.out)["bias_correction"]["status"] == "no_channel_means"
    on_b, on_gb, _ = biases(tmp_path / "on.onnx")
    off_b, off_gb, _ = biases(tmp_path / "none.onnx")
    source = {t.name: numpy_helper.to_array(t) for t in onnx.load(model).graph.initializer}
    np.testing.assert_array_equal(off_b, source["b"])
    np.testing.assert_array_equal(off_gb, source["gb"])
    assert not np.array_equal(on_b, off_b) and not np.array_equal(on_gb, off_gb)


def test_no_bias_correction_flag_skips_loading_the_means(qtool, net, tmp_path, monkeypatch):
    model, calib = net
    means_from(monkeypatch, None)
    assert qtool("quantize", model, "--calib", calib, "-o", tmp_path / "none.onnx").code == 0
    calls = means_from(monkeypatch, MEANS)
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "off.onnx",
                   "--no-bias-correction", "--json")
    assert result.code == 0, result.err
    assert calls == []
    summary = json.loads(result.out)
    assert summary["bias_correction"]["status"] == "disabled"
    assert summary["bias_correction"]["corrected"] == 0
    assert summary["options"]["bias_correction"] is False
    assert biases(tmp_path / "off.onnx")[2] == biases(tmp_path / "none.onnx")[2]  # same graph
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "off.onnx",
                   "--no-bias-correction")
    assert "bias-corrected" not in result.out and "bias correction" not in result.out


def test_config_key_and_flag_override(qtool, net, tmp_path, monkeypatch):
    model, calib = net
    calls = means_from(monkeypatch, MEANS)
    config = tmp_path / "q.toml"
    config.write_text("[quantize]\nbias_correction = false\n")
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx",
                   "--config", config, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["bias_correction"]["status"] == "disabled" and calls == []
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx",
                   "--config", config, "--bias-correction", "--json")
    assert json.loads(result.out)["bias_correction"]["corrected"] == 2 and len(calls) == 1


def test_skipped_nodes_are_listed_briefly(qtool, net, tmp_path, monkeypatch):
    model, calib = net
    means_from(monkeypatch, {"x": MEANS["x"], "flat": (1, np.ones(3))})
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx")
    assert result.code == 0, result.err
    assert "bias-corrected 1 nodes; not corrected 1: channel_means_mismatch 1" in result.out
    assert "fc (Gemm): channel_means_mismatch" not in result.out
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx", "-v")
    assert "fc (Gemm): channel_means_mismatch: channel means of 'flat' are 3 along axis 1" in result.out


def test_unreadable_means_are_one_error_line_with_the_way_out(qtool, net, tmp_path, monkeypatch):
    model, calib = net
    means_from(monkeypatch, QtoolError("histogram file net.calib.npz does not match its calibration file"))
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx")
    assert result.code == 1
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert "does not match its calibration file (or quantize with --no-bias-correction)" in result.err
    assert not (tmp_path / "q.onnx").exists()


def test_calibrate_then_quantize_corrects_biases(qtool, tmp_path):
    model = save(conv_relu_gemm(), tmp_path / "net.onnx")
    data = tmp_path / "data.npy"
    rng = np.random.default_rng(0)
    np.save(data, (rng.normal(size=(4, 2, 6, 6)) + 1.0).astype(np.float32))
    assert qtool("calibrate", model, "--data", data, "--method", "max").code == 0
    result = qtool("quantize", model, "--calib", tmp_path / "net.calib.json",
                   "-o", tmp_path / "q.onnx", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["bias_correction"]["status"] == "applied"
    assert summary["bias_correction"]["corrected_nodes"] == ["conv", "fc"]
