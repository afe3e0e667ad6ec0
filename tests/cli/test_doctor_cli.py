"""`qtool doctor`: reports what is there and why the rest is not, and always exits 0."""

from __future__ import annotations

import json
import platform
import sys
import types

import onnxruntime
import pytest

BLOCKED = ("tensorrt", "cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart", "pycuda", "pycuda.driver")


@pytest.fixture
def no_tensorrt(monkeypatch):
    for name in BLOCKED:
        monkeypatch.setitem(sys.modules, name, None)


def lines_by_name(text: str) -> dict[str, str]:
    rows = {}
    for line in text.splitlines():
        name, _, rest = line.partition("  ")
        rows[name.strip()] = rest.strip()
    return rows


def test_doctor_without_tensorrt(qtool, no_tensorrt):
    result = qtool("doctor")
    assert result.code == 0
    rows = lines_by_name(result.out)
    assert rows["python"].startswith(platform.python_version())
    assert rows["onnxruntime"].startswith(f"{onnxruntime.__version__} (providers: ")
    assert "CPUExecutionProvider" in rows["onnxruntime"]
    assert rows["tensorrt"].startswith("not available: TensorRT is not available (")
    assert rows["tensorrt"].endswith("pip install 'qtool[trt]' ('qtool[trt-cu12]' for a CUDA 12 driver) on a machine with an NVIDIA driver")
    assert rows["cuda binding"].startswith("not available: no CUDA Python binding works (cuda-python "
                                           "(cuda.bindings.runtime): ")
    assert "; pycuda: " in rows["cuda binding"]
    assert rows["gpu"] == "not available: unknown: querying GPUs needs a CUDA binding (above)"
    assert set(rows) == {"python", "qtool", "onnx", "numpy", "onnxruntime", "tensorrt", "cuda binding",
                         "gpu", "matplotlib", "histogram loop"}


def test_doctor_says_whether_the_compiled_counting_loop_was_built(qtool, monkeypatch):
    from qtool.calib import binning

    monkeypatch.setattr(binning, "compiled_kernel", lambda: None)
    row = lines_by_name(qtool("doctor").out)["histogram loop"]
    assert row.startswith("not available: the C extension was not built")
    monkeypatch.setattr(binning, "compiled_kernel", lambda: print)
    assert lines_by_name(qtool("doctor").out)["histogram loop"] == "compiled C"


def test_doctor_json(qtool, no_tensorrt):
    result = qtool("doctor", "--json")
    assert result.code == 0
    components = json.loads(result.out)["components"]
    assert components["tensorrt"]["available"] is False
    assert components["onnxruntime"]["available"] is True
    assert "CPUExecutionProvider" in components["onnxruntime"]["extra"]["providers"]
    gpu = "CUDAExecutionProvider" in components["onnxruntime"]["extra"]["providers"]
    assert components["onnxruntime"]["extra"]["auto"] == ("CUDA+CPU" if gpu else "CPU")
    assert components["qtool"]["version"] == __import__("qtool").__version__


def fake_tensorrt(builder_error: Exception | None, with_bindings: bool = True):
    module = types.ModuleType("tensorrt")
    module.__version__ = "10.16.1.11"
    if not with_bindings:
        return module

    class ILogger:
        def __init__(self):
            pass

    class Builder:
        def __init__(self, logger):
            if builder_error is not None:
                logger.log(types.SimpleNamespace(name="ERROR"), "CUDA initialization failure with error: 100")
                raise builder_error

    module.ILogger, module.Builder, module.Runtime = ILogger, Builder, object
    return module


def test_doctor_tensorrt_installed_but_no_gpu(qtool, monkeypatch):
    for name in BLOCKED:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(TypeError("incompatible constructor")))
    result = qtool("doctor")
    assert result.code == 0
    assert lines_by_name(result.out)["tensorrt"] == (
        "not available: TensorRT 10.16.1.11 is installed but cannot start CUDA "
        "(CUDA initialization failure with error: 100)")
    assert "CUDA initialization failure" not in result.err  # the probe's logger is silent


def test_doctor_tensorrt_usable(qtool, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(None))
    assert lines_by_name(qtool("doctor").out)["tensorrt"] == "10.16.1.11"


def test_doctor_placeholder_tensorrt_package(qtool, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(None, with_bindings=False))
    assert lines_by_name(qtool("doctor").out)["tensorrt"].startswith(
        "not available: the installed 'tensorrt' package has no TensorRT bindings (a placeholder?)")


def test_doctor_reports_devices_through_the_cuda_binding(qtool, monkeypatch):
    runtime = types.ModuleType("cuda.bindings.runtime")
    ok = types.SimpleNamespace(value=0)
    runtime.cudaFree = lambda ptr: (ok,)
    runtime.cudaDriverGetVersion = lambda: (ok, 12040)
    runtime.cudaGetDeviceCount = lambda: (ok, 1)
    runtime.cudaGetDeviceProperties = lambda index: (ok, types.SimpleNamespace(
        name=b"NVIDIA H100 80GB HBM3\x00\x00", major=9, minor=0, totalGlobalMem=85_031_714_816))
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    rows = lines_by_name(qtool("doctor").out)
    assert rows["gpu"] == "driver API 12.4 (0: NVIDIA H100 80GB HBM3 (compute 9.0, 81092 MiB))"
    assert rows["cuda binding"].endswith("(cuda-python (cuda.bindings.runtime))")
