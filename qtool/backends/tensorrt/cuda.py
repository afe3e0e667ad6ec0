"""The few CUDA calls a TensorRT runner needs, behind one tiny interface.

cuda-python (`cuda.bindings.runtime`, or `cuda.cudart` in older releases) is what NVIDIA's current
TensorRT samples use; pycuda is accepted when it is the binding installed. Both wrap the same
operations: device malloc/free, host<->device copies on a stream, stream create/sync/destroy, and
a description of the driver and devices for `qtool doctor`.

The loader tries each binding in turn and takes the first that imports *and* starts CUDA: a
cuda-python built for a newer CUDA than the driver (cuda-bindings 13 links the CUDA 13 runtime
statically) imports cleanly and fails only there, and then pycuda is tried. What was tried, and
why each failed, is kept for `qtool doctor` and the error.
"""

from __future__ import annotations

import logging

import numpy as np

from qtool.backends.imports import (
    CUDA_BINDINGS,
    TRT_INSTALL_HINT,
    import_cuda_binding,
    native_handle_getter,
)
from qtool.errors import MissingDependency, QtoolError, first_line

log = logging.getLogger("qtool")


class CudaError(QtoolError):
    """A CUDA call failed (out of memory, a launch failure...)."""


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value).rstrip("\x00").strip()


def _package_version(*names: str) -> str:
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


class CudaPythonBinding:
    """cuda-python's runtime API: every call returns (error, *values)."""

    def __init__(self, cudart, name: str, version: str, native_handle=None):
        self.cudart = cudart
        self.name = name
        self.version = version
        # cuda.bindings.utils.get_cuda_native_handle replaces int(handle), deprecated in
        # cuda-bindings 12.9/13; older releases have only int()
        self._native_handle = native_handle
        self.tried: list[str] = []

    def _error_text(self, err) -> str:
        try:
            _, label = self.cudart.cudaGetErrorName(err)
            _, text = self.cudart.cudaGetErrorString(err)
            return f"{_text(label)}: {_text(text)}"
        except Exception:
            return str(err)

    def _call(self, what: str, result, error=CudaError):
        err, values = result[0], result[1:]
        if int(getattr(err, "value", err)) != 0:
            raise error(f"CUDA {what} failed ({self._error_text(err)})")
        return values[0] if len(values) == 1 else (values or None)

    def init(self) -> None:
        # cudaFree(0) creates the primary context: a missing driver or GPU shows up here.
        try:
            self._call("initialisation", self.cudart.cudaFree(0))
        except CudaError as exc:
            raise CudaError(f"{exc}{self._version_gap()}") from None

    def _version_gap(self) -> str:
        """' (the driver supports CUDA 12.4; this binding needs CUDA 13.0: ...)' when the runtime
        this binding carries is newer than the driver, else ''."""
        try:
            driver = int(self._call("driver version", self.cudart.cudaDriverGetVersion()) or 0)
            runtime = int(self._call("runtime version", self.cudart.cudaRuntimeGetVersion()) or 0)
        except Exception:
            return ""
        if not driver or runtime <= driver:
            return ""
        return (f" (the driver supports CUDA {_cuda_version(driver)}; this {self.name} needs CUDA "
                f"{_cuda_version(runtime)}: pip install 'qtool[trt-cu{driver // 1000}]')")

    def malloc(self, nbytes: int) -> int:
        return int(self._call(f"malloc of {nbytes} bytes", self.cudart.cudaMalloc(max(int(nbytes), 1))))

    def free(self, ptr: int) -> None:
        self._call("free", self.cudart.cudaFree(ptr))

    def stream_create(self):
        return self._call("stream creation", self.cudart.cudaStreamCreate())

    def stream_handle(self, stream) -> int:
        """The cudaStream_t address TensorRT's execute_async_v3 takes."""
        if self._native_handle is not None:
            return int(self._native_handle(stream))
        return int(stream)

    def stream_synchronize(self, stream) -> None:
        self._call("stream synchronize", self.cudart.cudaStreamSynchronize(stream))

    def stream_destroy(self, stream) -> None:
        self._call("stream destroy", self.cudart.cudaStreamDestroy(stream))

    def memcpy_htod_async(self, dst: int, host: np.ndarray, stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("copy to device", self.cudart.cudaMemcpyAsync(dst, host.ctypes.data, host.nbytes, kind, stream))

    def memcpy_dtoh_async(self, host: np.ndarray, src: int, stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("copy to host", self.cudart.cudaMemcpyAsync(host.ctypes.data, src, host.nbytes, kind, stream))

    def describe_devices(self) -> tuple[str, list[dict]]:
        version = self._call("driver version", self.cudart.cudaDriverGetVersion())
        if not version:
            raise CudaError("no NVIDIA driver is installed")
        driver = f"driver API {_cuda_version(version)}"
        count = self._call("device count", self.cudart.cudaGetDeviceCount())
        devices = []
        for index in range(count):
            prop = self._call("device properties", self.cudart.cudaGetDeviceProperties(index))
            devices.append({"index": index, "name": _text(prop.name),
                            "compute_capability": f"{prop.major}.{prop.minor}",
                            "memory_mib": int(prop.totalGlobalMem) // (1 << 20)})
        return driver, devices

    def close(self) -> None:
        pass


class PyCudaBinding:
    """pycuda's driver API on the device's primary context (the one TensorRT uses)."""

    def __init__(self, driver, version: str):
        self.driver = driver
        self.name = "pycuda"
        self.version = version
        self._context = None
        self._allocations: dict[int, object] = {}
        self.tried: list[str] = []

    def init(self) -> None:
        try:
            self.driver.init()
            self._context = self.driver.Device(0).retain_primary_context()
            self._context.push()
        except Exception as exc:
            raise CudaError(f"CUDA cannot start ({first_line(exc)})") from None

    def _guard(self, what: str, func, *args):
        try:
            return func(*args)
        except Exception as exc:
            raise CudaError(f"CUDA {what} failed ({first_line(exc)})") from None

    def malloc(self, nbytes: int) -> int:
        allocation = self._guard(f"malloc of {nbytes} bytes", self.driver.mem_alloc, max(int(nbytes), 1))
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, ptr: int) -> None:
        allocation = self._allocations.pop(int(ptr), None)
        if allocation is not None:
            self._guard("free", allocation.free)

    def stream_create(self):
        return self._guard("stream creation", self.driver.Stream)

    @staticmethod
    def stream_handle(stream) -> int:
        return int(stream.handle)

    def stream_synchronize(self, stream) -> None:
        self._guard("stream synchronize", stream.synchronize)

    def stream_destroy(self, stream) -> None:
        pass  # released with the Python object

    def memcpy_htod_async(self, dst: int, host: np.ndarray, stream) -> None:
        # pycuda's async copies want page-locked memory; a synchronous copy is always correct.
        self._guard("copy to device", self.driver.memcpy_htod, dst, host)

    def memcpy_dtoh_async(self, host: np.ndarray, src: int, stream) -> None:
        self.stream_synchronize(stream)
        self._guard("copy to host", self.driver.memcpy_dtoh, host, src)

    def describe_devices(self) -> tuple[str, list[dict]]:
        self.driver.init()
        version = self.driver.get_driver_version()
        devices = []
        for index in range(self.driver.Device.count()):
            device = self.driver.Device(index)
            major, minor = device.compute_capability()
            devices.append({"index": index, "name": _text(device.name()),
                            "compute_capability": f"{major}.{minor}",
                            "memory_mib": int(device.total_memory()) // (1 << 20)})
        return f"driver API {_cuda_version(version)}", devices

    def close(self) -> None:
        for ptr in list(self._allocations):
            self.free(ptr)
        if self._context is not None:
            try:
                self.driver.Context.pop()
                self._context.detach()
            finally:
                self._context = None


def _cuda_version(number: int) -> str:
    """CUDA's version integer (1000 * major + 10 * minor) as text: 12040 -> '12.4'."""
    return f"{number // 1000}.{(number % 1000) // 10}"


def load_cuda_binding(init: bool = True):
    """The first CUDA binding that imports and (with `init`) starts CUDA: cuda-python, then its
    older layout, then pycuda. The binding's `tried` lists the ones passed over and why; when
    none works, MissingDependency says why for each."""
    tried: list[str] = []
    imported_cuda_python = False
    for module_name, label in CUDA_BINDINGS:
        if module_name == "cuda.cudart" and imported_cuda_python:
            continue  # the same library under its old name: it would fail the same way
        try:
            module = import_cuda_binding(module_name)
        except Exception as exc:  # ImportError, or OSError when its CUDA libraries are missing
            log.debug("CUDA binding %s unavailable: %s", module_name, first_line(exc))
            tried.append(f"{label}: {first_line(exc)}")
            continue
        if module_name == "pycuda.driver":
            binding = PyCudaBinding(module, _package_version("pycuda"))
        else:
            imported_cuda_python = True
            binding = CudaPythonBinding(module, label, _package_version("cuda-bindings", "cuda-python"),
                                        native_handle_getter())
        if init:
            try:
                binding.init()
            except Exception as exc:  # CudaError, or anything a broken install raises
                log.debug("CUDA binding %s cannot start CUDA: %s", label, first_line(exc))
                tried.append(f"{label} {binding.version}: {first_line(exc)}")
                continue
        binding.tried = tried
        return binding
    raise MissingDependency(f"no CUDA Python binding works ({'; '.join(tried)}); {TRT_INSTALL_HINT}")
