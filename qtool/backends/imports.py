"""Importing TensorRT and the CUDA Python bindings, and what to install when they are missing.

The lowest layer of the backends: availability (for `qtool doctor`) and every module of
qtool.backends.tensorrt import from here, and this module imports nothing of qtool but its
errors, so neither has to import the other to learn how TensorRT is imported.
"""

from __future__ import annotations

import importlib

from qtool.errors import MissingDependency, first_line

# trt = trt-cu13 (what NVIDIA's `tensorrt` package installs now); both pin one CUDA major
TRT_INSTALL_HINT = ("pip install 'qtool[trt]' ('qtool[trt-cu12]' for a CUDA 12 driver) on a machine "
                    "with an NVIDIA driver")

# (module, label) of the CUDA Python bindings, in order of preference; the two cuda-python
# layouts are one package
CUDA_BINDINGS = (("cuda.bindings.runtime", "cuda-python (cuda.bindings.runtime)"),
                 ("cuda.cudart", "cuda-python (cuda.cudart)"),
                 ("pycuda.driver", "pycuda"))


def import_tensorrt():
    """Return the tensorrt module or raise MissingDependency with what is missing.

    `import tensorrt` fails with ImportError or OSError when its shared libraries are absent, and
    a placeholder `tensorrt` distribution can import without the real bindings.
    """
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, OSError from missing libnvinfer, RuntimeError
        raise MissingDependency(
            f"TensorRT is not available ({first_line(exc)}); {TRT_INSTALL_HINT}"
        ) from None
    if not hasattr(trt, "Builder") or not hasattr(trt, "Runtime"):
        raise MissingDependency(
            "the installed 'tensorrt' package has no TensorRT bindings (a placeholder?); "
            + TRT_INSTALL_HINT
        )
    return trt


def import_cuda_binding(module_name: str):
    """One of CUDA_BINDINGS' modules; ImportError, or OSError when its CUDA libraries are
    missing, propagates (the loader in qtool.backends.tensorrt.cuda records why and moves on)."""
    return importlib.import_module(module_name)


def native_handle_getter():
    """cuda.bindings.utils.get_cuda_native_handle, or None before cuda-python 12.9 (int() is
    the way there)."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except Exception:
        return None
    return get_cuda_native_handle
