"""--provider: onnxruntime execution providers picked from what onnxruntime reports, the error for
a named provider that is missing, and the CPU fallback of `auto`, with real onnxruntime sessions.

This machine's onnxruntime has no CUDA. A provider list that names CUDA as available (what
onnxruntime-gpu reports even where the CUDA libraries then fail to load) makes onnxruntime start
the session on the CPU alone: that is the failure the fallback and the error handle."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from qtool.backends.onnxruntime.providers import CPU_EP, CUDA_EP, TENSORRT_EP, Providers, resolve
from qtool.backends.onnxruntime.session import create_session
from qtool.calib.collection import collect_histograms
from qtool.errors import QtoolError, UsageError
from tests.tiny_models import conv_relu_gemm

GPU_LIST = [TENSORRT_EP, CUDA_EP, CPU_EP]
HINT = ("install onnxruntime-gpu in place of onnxruntime (pip uninstall onnxruntime; pip install "
        "onnxruntime-gpu) on a machine with an NVIDIA driver")
NO_CUDA_HERE = CUDA_EP not in ort.get_available_providers()


@pytest.mark.parametrize("choice, available, names", [
    ("cpu", GPU_LIST, (CPU_EP,)),
    ("auto", [CPU_EP], (CPU_EP,)),
    ("auto", ["AzureExecutionProvider", CPU_EP], (CPU_EP,)),
    ("auto", GPU_LIST, (CUDA_EP, CPU_EP)),  # auto never picks TensorRT's slow engine builds
    ("cuda", [CUDA_EP, CPU_EP], (CUDA_EP, CPU_EP)),
    ("tensorrt", GPU_LIST, (TENSORRT_EP, CUDA_EP, CPU_EP)),
    ("tensorrt", [TENSORRT_EP, CPU_EP], (TENSORRT_EP, CPU_EP)),
])
def test_selection(choice, available, names):
    providers = Providers(choice, available)
    assert providers.names == names
    assert providers.strict == (choice in ("cuda", "tensorrt"))


@pytest.mark.parametrize("choice, wanted", [("cuda", CUDA_EP), ("tensorrt", TENSORRT_EP)])
def test_a_named_provider_that_is_missing_is_one_error_line(choice, wanted):
    with pytest.raises(QtoolError) as info:
        Providers(choice, ["AzureExecutionProvider", CPU_EP])
    assert str(info.value) == (f"--provider {choice}: onnxruntime has no {wanted} (available: "
                               f"AzureExecutionProvider, CPUExecutionProvider); {HINT}")


@pytest.mark.skipif(not NO_CUDA_HERE, reason="onnxruntime here has CUDA")
def test_missing_cuda_is_read_from_onnxruntime_itself():
    with pytest.raises(QtoolError, match=r"^--provider cuda: onnxruntime has no CUDAExecutionProvider"):
        Providers("cuda")
    assert Providers("auto").names == (CPU_EP,)
    assert resolve(None).names == (CPU_EP,)


def test_unknown_choice_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown provider 'gpu'; choose one of cpu, cuda, tensorrt, auto"):
        Providers("gpu", [CPU_EP])


@pytest.mark.skipif(not NO_CUDA_HERE, reason="needs an onnxruntime without CUDA")
def test_auto_falls_back_to_the_cpu_once_with_one_warning(caplog):
    model = conv_relu_gemm()
    providers = Providers("auto", GPU_LIST)
    assert providers.names == (CUDA_EP, CPU_EP)
    with caplog.at_level(logging.WARNING, logger="qtool"), pytest.warns(UserWarning):
        session = create_session(model, providers)
    assert session.get_providers() == [CPU_EP]
    assert providers.names == (CPU_EP,)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [("onnxruntime cannot start a session on CUDA+CPU (the session runs on "
                         "CPUExecutionProvider only); running on the CPU")]
    create_session(model, providers)  # later sessions go straight to the CPU, without a warning
    assert len(caplog.records) == 1
    x = np.random.default_rng(0).normal(size=(2, 2, 6, 6)).astype(np.float32)
    reference = create_session(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], reference)


@pytest.mark.skipif(not NO_CUDA_HERE, reason="needs an onnxruntime without CUDA")
def test_a_named_provider_that_cannot_start_is_an_error():
    providers = Providers("cuda", [CUDA_EP, CPU_EP])
    with pytest.raises(QtoolError) as info, pytest.warns(UserWarning):
        create_session(conv_relu_gemm(), providers)
    assert str(info.value) == ("--provider cuda: onnxruntime cannot start a session on CUDA+CPU (the "
                               f"session runs on CPUExecutionProvider only); {HINT}")


@pytest.mark.skipif(not NO_CUDA_HERE, reason="needs an onnxruntime without CUDA")
def test_histograms_do_not_depend_on_the_provider_path():
    """The same counts, bin for bin, whichever provider object ran the sessions."""
    model = conv_relu_gemm()
    rng = np.random.default_rng(3)
    batches = [{"x": rng.normal(size=(n, 2, 6, 6)).astype(np.float32)} for n in (4, 1, 3)]
    tensors = ["x", "relu", "flat"]
    plain = collect_histograms(model, batches, tensors)
    with pytest.warns(UserWarning):
        fallen = collect_histograms(model, batches, tensors, providers=Providers("auto", GPU_LIST))
    for name in tensors:
        a, b = plain.histograms[name], fallen.histograms[name]
        np.testing.assert_array_equal(a.hist, b.hist)
        np.testing.assert_array_equal(a.edges, b.edges)
        assert a.count == b.count and a.abs_max == b.abs_max
    assert plain.histograms["x"].count == sum(batch["x"].size for batch in batches)
