"""GPU tests run only where TensorRT imports, a CUDA binding loads and a TensorRT Builder starts
(that needs a working NVIDIA driver and GPU); everywhere else they skip and say why."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo"


@pytest.fixture(scope="session")
def tensorrt_gpu():
    """The tensorrt module, once TensorRT and CUDA are known to start."""
    from qtool.backends.imports import import_tensorrt
    from qtool.backends.tensorrt.cuda import load_cuda_binding
    from qtool.backends.tensorrt.logger import shared_logger
    from qtool.errors import MissingDependency

    try:
        trt = import_tensorrt()
    except MissingDependency as exc:
        pytest.skip(f"TensorRT cannot be imported: {exc}")
    try:
        binding = load_cuda_binding()
    except MissingDependency as exc:
        pytest.skip(f"no CUDA: {exc}")
    binding.close()
    logger = shared_logger(trt, None)
    try:
        builder = trt.Builder(logger)
        del builder
    except Exception as exc:
        pytest.skip(f"TensorRT {trt.__version__} cannot start CUDA: {logger.last_error() or exc}")
    return trt


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    if not (DEMO / "digits_cnn.onnx").is_file():
        pytest.skip(f"demo model not found in {DEMO}")
    return DEMO
