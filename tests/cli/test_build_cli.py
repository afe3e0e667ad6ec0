"""`qtool build` and `qtool run` through the real entry point.

Without TensorRT (blocked in sys.modules, so the result is the same on a GPU machine) each ends
with one `error:` line naming tensorrt and the install command, exit status 1, and no file.
The checks on the user's own inputs run first and give their own one-line errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.helpers.fake_tensorrt import INSPECTOR_10, FakeTensorRT
from tests.helpers.models import float_conv_model, qdq_conv_model

REPO = Path(__file__).resolve().parents[2]
HINT = "pip install 'qtool[trt]' ('qtool[trt-cu12]' for a CUDA 12 driver) on a machine with an NVIDIA driver"
SHAPES = "x:1,1,4,4x8,1,4,4x32,1,4,4"


@pytest.fixture
def no_tensorrt(monkeypatch):
    for name in ("tensorrt", "cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart",
                 "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture
def qdq_model(tmp_path):
    path = tmp_path / "net.int8.onnx"
    onnx.save_model(qdq_conv_model(), str(path))
    return path


def files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def one_error_line(result) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_build_without_tensorrt_is_one_line_and_writes_nothing(qtool, qdq_model, tmp_path, no_tensorrt):
    result = qtool("build", qdq_model, "--int8", "--shapes", SHAPES, "-o", tmp_path / "net.engine",
                   "--timing-cache", tmp_path / "t.cache")
    assert result.code == 1
    line = one_error_line(result)
    assert "tensorrt" in line.lower() and line.endswith(HINT)
    assert result.out == ""
    assert files(tmp_path) == ["net.int8.onnx"]


def test_build_int8_on_a_model_without_qdq_says_quantize_first(qtool, tmp_path, no_tensorrt):
    path = tmp_path / "plain.onnx"
    onnx.save_model(float_conv_model(), str(path))
    result = qtool("build", path, "--int8")
    assert result.code == 1
    assert one_error_line(result) == (
        f"error: {path} has no Q/DQ (QuantizeLinear/DequantizeLinear) nodes: run `qtool quantize` first "
        "(qtool builds INT8 engines from Q/DQ models; it offers no implicit calibration)")
    assert files(tmp_path) == ["plain.onnx"]


@pytest.mark.parametrize("args, message", [
    (["--shapes", "x:1,1,4,4x8,1,4"], ("error: invalid --shapes 'x:1,1,4,4x8,1,4': give one shape or three "
                                       "(MINxOPTxMAX), not 2")),
    (["--calib", "missing.calib.json"], "error: calibration file not found: missing.calib.json"),
    (["--shapes", "y:1"], "error: --shapes names 'y', which is not an input of the model (inputs: x)"),
])
def test_build_input_errors_come_before_the_tensorrt_check(qtool, qdq_model, tmp_path, no_tensorrt, args, message):
    result = qtool("build", qdq_model, "--int8", *args)
    assert result.code == 1
    assert one_error_line(result) == message
    assert files(tmp_path) == ["net.int8.onnx"]


def test_build_batch_and_calib_do_not_combine_with_shapes(qtool, qdq_model, tmp_path, no_tensorrt):
    for extra in (["--batch", "4"], ["--calib", qdq_model]):
        result = qtool("build", qdq_model, "--shapes", SHAPES, *extra)
        assert result.code == 2
        assert one_error_line(result) == ("error: --shapes gives every range itself: it takes no "
                                          "--batch or --calib")
    result = qtool("build", qdq_model, "--batch", "0")
    assert result.code == 2 and one_error_line(result) == "error: --batch must be a positive integer (got 0)"
    assert files(tmp_path) == ["net.int8.onnx"]


def test_build_missing_model_and_bad_options(qtool, tmp_path, no_tensorrt):
    result = qtool("build", tmp_path / "missing.onnx")
    assert (result.code, one_error_line(result)) == (1, f"error: model not found: {tmp_path / 'missing.onnx'}")
    result = qtool("build", tmp_path / "missing.onnx", "--builder-optimization-level", "9")
    assert result.code == 2 and "0<=x<=5" in result.err


def test_build_shapes_from_config(qtool, qdq_model, tmp_path, no_tensorrt):
    config = tmp_path / "q.toml"
    config.write_text(f'[build]\nshapes = ["{SHAPES}"]\nworkspace = 64\n')
    result = qtool("build", qdq_model, "--int8", "--config", config)
    assert result.code == 1
    assert one_error_line(result).endswith(HINT)  # past the shape checks: the ranges were taken
    config.write_text("[build]\nworkspaces = 64\n")
    result = qtool("build", qdq_model, "--config", config)
    assert result.code == 2 and "unknown key 'workspaces' in [build]" in result.err


def test_build_prints_layers_and_writes_engine_with_a_stand_in_tensorrt(qtool, qdq_model, tmp_path, monkeypatch):
    fake = FakeTensorRT("10.16.1.11", [("x", (-1, 1, 4, 4))], inspector_json=INSPECTOR_10)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    result = qtool("build", qdq_model, "--int8", "--shapes", SHAPES)
    assert result.code == 0, result.err
    lines = result.out.splitlines()[1:]  # after the table's header
    assert lines[0] == "0  conversion Scale            x_Q"
    assert lines[1] == "1  int8       CaskConvolution  conv0"
    assert lines[2] == "layers: 2 total, 1 int8, 0 higher precision, 1 conversion"
    assert lines[3].startswith(f"wrote {tmp_path / 'net.int8.engine'} (0.0 MiB; TensorRT 10.16.1.11, "
                               "weakly typed, INT8 flags; built in ")
    assert (tmp_path / "net.int8.engine").read_bytes() == b"serialized-engine\x00\x01"
    result = qtool("build", qdq_model, "--int8", "--shapes", SHAPES, "--json", "-o", tmp_path / "b.engine")
    record = json.loads(result.out)
    assert record["layers"]["quantized_layers"] == 1
    assert record == json.loads((tmp_path / "b.engine.json").read_text())


def test_run_without_tensorrt_is_one_line_and_writes_nothing(qtool, tmp_path, no_tensorrt):
    engine = tmp_path / "net.engine"
    engine.write_bytes(b"engine")
    np.savez(tmp_path / "data.npz", x=np.zeros((2, 1, 4, 4), np.float32))
    result = qtool("run", engine, "--data", tmp_path / "data.npz", "-o", tmp_path / "out.npz")
    assert result.code == 1
    line = one_error_line(result)
    assert "tensorrt" in line.lower() and line.endswith(HINT)
    assert files(tmp_path) == ["data.npz", "net.engine"]


def test_run_input_errors(qtool, tmp_path, no_tensorrt):
    engine = tmp_path / "net.engine"
    result = qtool("run", engine, "--data", tmp_path)
    assert (result.code, one_error_line(result)) == (1, f"error: engine not found: {engine}")
    engine.write_bytes(b"engine")
    result = qtool("run", engine)
    assert (result.code, one_error_line(result)) == (2, "error: missing --data PATH (or --data-loader-script FILE)")
    result = qtool("run", engine, "--data", tmp_path / "nothing.npz")
    assert (result.code, one_error_line(result)) == (1, f"error: data not found: {tmp_path / 'nothing.npz'}")
    result = qtool("run", engine, "--data", tmp_path, "-o", engine)
    assert result.code == 1 and "would overwrite the input" in result.err


@pytest.mark.parametrize("command", ["build", "run", "doctor"])
def test_help_works_without_tensorrt(qtool, command, no_tensorrt):
    result = qtool(command, "--help")
    assert result.code == 0 and "Usage: qtool" in result.out


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_build_without_tensorrt_end_to_end_exit_status(qdq_model, tmp_path):
    result = subprocess.run([sys.executable, "-m", "qtool", "build", str(qdq_model), "--int8", "--shapes", SHAPES],
                            capture_output=True, text=True, check=False, cwd=REPO)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: TensorRT is not available (No module named 'tensorrt'); {HINT}"]
    assert files(tmp_path) == ["net.int8.onnx"]
