"""Run a TensorRT engine on numpy feeds: `TensorRTRunner`, a context manager.

    with TensorRTRunner("model.engine") as runner:
        outputs = runner.run({"input": batch})      # dict name -> np.ndarray

Uses TensorRT's name-based I/O API (num_io_tensors, get_tensor_name/mode/dtype/shape,
set_input_shape, set_tensor_address, execute_async_v3), the same in TensorRT 10 and 11, and the
CUDA binding behind qtool.backends.tensorrt.cuda. For engines with several optimization profiles
each batch runs on the first profile whose ranges hold its shapes. Device buffers are kept and
grown as needed between batches.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qtool.backends.imports import TRT_INSTALL_HINT, import_tensorrt
from qtool.backends.tensorrt.adapter import TrtAdapter
from qtool.backends.tensorrt.logger import shared_logger
from qtool.errors import MissingDependency, QtoolError, first_line
from qtool.io.model import InputSpec

log = logging.getLogger("qtool")

NUMPY_DTYPES = {
    "FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
    "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8,
}


def numpy_dtype(trt_dtype, tensor: str) -> np.dtype:
    name = str(getattr(trt_dtype, "name", trt_dtype)).rsplit(".", 1)[-1]
    if name not in NUMPY_DTYPES:
        raise QtoolError(f"tensor {tensor!r} has TensorRT type {name}, which numpy cannot hold")
    return np.dtype(NUMPY_DTYPES[name])


@dataclass
class EngineTensor:
    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple          # -1 for a dynamic dimension
    profiles: list        # inputs with dynamic dims: [(min, opt, max)] per profile

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.shape)


def _fits(shape: tuple, shape_range) -> bool:
    low, _, high = shape_range
    return len(shape) == len(low) and all(a <= s <= b for s, a, b in zip(shape, low, high))


class TensorRTRunner:
    """Deserialize an engine once and run batches through it."""

    def __init__(self, engine, *, log_level: str = "WARNING", trt=None, cuda=None):
        self._source = engine
        self._log_level = log_level
        self._trt = trt
        self._cuda = cuda
        self._owns_cuda = cuda is None
        self.runtime = self.engine = self.context = self.stream = self.logger = None
        self.tensors: list[EngineTensor] = []
        self.tensorrt_version = ""
        self._profile = 0
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity)

    @property
    def label(self) -> str:
        return str(self._source) if isinstance(self._source, (str, os.PathLike)) else "the engine"

    def __enter__(self) -> TensorRTRunner:  # noqa: PYI034 (typing.Self needs 3.11)
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _read_engine(self) -> bytes:
        if isinstance(self._source, (bytes, bytearray, memoryview)):
            return bytes(self._source)
        path = Path(self._source)
        if not path.is_file():
            raise QtoolError(f"engine not found: {path}")
        return path.read_bytes()

    def open(self) -> None:
        data = self._read_engine()
        trt = self._trt if self._trt is not None else import_tensorrt()
        self._trt = trt
        adapter = TrtAdapter.for_module(trt)
        self.tensorrt_version = adapter.version
        if self._cuda is None:
            from qtool.backends.tensorrt.cuda import load_cuda_binding

            self._cuda = load_cuda_binding()
        self.logger = shared_logger(trt, self._log_level)
        try:
            self.runtime = trt.Runtime(self.logger)
        except (TypeError, RuntimeError) as exc:
            raise MissingDependency(
                f"TensorRT {adapter.version} cannot start CUDA "
                f"({self.logger.last_error() or first_line(exc)}); {TRT_INSTALL_HINT}"
            ) from None
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise QtoolError(
                f"TensorRT {adapter.version} cannot load {self.label}: "
                + (self.logger.last_error() or "not an engine, or one built by another TensorRT "
                   "version or for another GPU")
            )
        self.tensors = self._describe_tensors()
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise QtoolError(f"cannot create an execution context for {self.label}: "
                             + (self.logger.last_error() or "out of GPU memory?"))
        self.stream = self._cuda.stream_create()
        self._profile = 0

    def _describe_tensors(self) -> list[EngineTensor]:
        trt, engine = self._trt, self.engine
        tensors = []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            if engine.is_shape_inference_io(name):
                raise QtoolError(f"engine tensor {name!r} is a shape tensor; qtool run does not support those")
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            profiles = []
            if is_input and any(d < 0 for d in shape):
                for profile in range(engine.num_optimization_profiles):
                    low, opt, high = engine.get_tensor_profile_shape(name, profile)
                    profiles.append((tuple(low), tuple(opt), tuple(high)))
            tensors.append(EngineTensor(name, is_input, numpy_dtype(engine.get_tensor_dtype(name), name),
                                        shape, profiles))
        return tensors

    @property
    def inputs(self) -> list[EngineTensor]:
        return [t for t in self.tensors if t.is_input]

    @property
    def outputs(self) -> list[EngineTensor]:
        return [t for t in self.tensors if not t.is_input]

    @property
    def input_specs(self) -> list[InputSpec]:
        """The engine's inputs as qtool InputSpecs (None for dynamic dims), for the data readers."""
        return [InputSpec(t.name, t.dtype, tuple(d if d >= 0 else None for d in t.shape)) for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def _check_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = {}
        for tensor in self.inputs:
            if tensor.name not in feeds:
                raise QtoolError(f"no data for engine input {tensor.name!r} (got: {', '.join(feeds) or 'nothing'})")
            array = np.ascontiguousarray(feeds[tensor.name])
            if array.dtype != tensor.dtype:
                raise QtoolError(f"input {tensor.name!r}: the engine takes {tensor.dtype}, the data is {array.dtype}")
            if len(array.shape) != len(tensor.shape) or any(
                    d >= 0 and d != s for d, s in zip(tensor.shape, array.shape)):
                raise QtoolError(f"input {tensor.name!r}: shape {list(array.shape)} does not fit the "
                                 f"engine's {list(tensor.shape)}")
            arrays[tensor.name] = array
        extra = sorted(set(feeds) - set(arrays))
        if extra:
            log.debug("ignoring feeds that are not engine inputs: %s", ", ".join(extra))
        return arrays

    def _select_profile(self, arrays: dict[str, np.ndarray]) -> int:
        dynamic = [t for t in self.inputs if t.dynamic]
        if not dynamic:
            return self._profile
        count = len(dynamic[0].profiles)
        order = [self._profile] + [p for p in range(count) if p != self._profile]
        for profile in order:
            if all(_fits(arrays[t.name].shape, t.profiles[profile]) for t in dynamic):
                return profile
        ranges = "; ".join(
            f"{t.name} {list(arrays[t.name].shape)} vs " + ", ".join(
                f"profile {p}: {list(r[0])}..{list(r[2])}" for p, r in enumerate(t.profiles))
            for t in dynamic)
        raise QtoolError(f"the batch fits no optimization profile of {self.label} ({ranges})")

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, capacity = self._buffers.get(name, (None, 0))
        if ptr is None or capacity < nbytes:
            if ptr is not None:
                self._cuda.free(ptr)
                del self._buffers[name]
            ptr = self._cuda.malloc(max(nbytes, 1))
            self._buffers[name] = (ptr, max(nbytes, 1))
        return ptr

    def run(self, feeds: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run one batch; returns a new array per output (those named in `outputs`, or all)."""
        if self.context is None:
            raise RuntimeError("TensorRTRunner.run() outside its `with` block")
        arrays = self._check_feeds(feeds)
        names = list(outputs) if outputs is not None else self.output_names
        unknown = [name for name in names if name not in self.output_names]
        if unknown:
            raise QtoolError(f"{self.label} has no output {unknown[0]!r} (outputs: {', '.join(self.output_names)})")
        context, cuda, handle = self.context, self._cuda, self._cuda.stream_handle(self.stream)
        profile = self._select_profile(arrays)
        if profile != self._profile:
            # The Python bindings raise RuntimeError where setOptimizationProfileAsync returns
            # false; the bool is checked too, in case a binding returns it instead.
            try:
                switched, reason = context.set_optimization_profile_async(profile, handle), ""
            except RuntimeError as exc:
                switched, reason = False, first_line(exc)
            if not switched:
                raise QtoolError(f"TensorRT cannot switch {self.label} to optimization profile "
                                 f"{profile}: " + (self.logger.last_error() or reason or "no reason given"))
            self._profile = profile
        for name, array in arrays.items():
            if not context.set_input_shape(name, tuple(array.shape)):
                raise QtoolError(f"TensorRT rejects shape {list(array.shape)} for input {name!r}: "
                                 + (self.logger.last_error() or "outside the engine's profile"))
        for name, array in arrays.items():
            ptr = self._buffer(name, array.nbytes)
            cuda.memcpy_htod_async(ptr, array, self.stream)
            context.set_tensor_address(name, ptr)
        results = {}
        for tensor in self.outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(tensor.name))
            if any(d < 0 for d in shape):
                raise QtoolError(f"output {tensor.name!r} has a data-dependent shape {list(shape)}; "
                                 "qtool run does not support those")
            host = np.empty(shape, tensor.dtype)
            ptr = self._buffer(tensor.name, host.nbytes)
            context.set_tensor_address(tensor.name, ptr)
            results[tensor.name] = (host, ptr)
        if not context.execute_async_v3(handle):
            raise QtoolError(f"TensorRT failed to run {self.label}: "
                             + (self.logger.last_error() or "execute_async_v3 returned False"))
        for host, ptr in results.values():
            cuda.memcpy_dtoh_async(host, ptr, self.stream)
        cuda.stream_synchronize(self.stream)
        return {name: results[name][0] for name in names}

    def close(self) -> None:
        cuda = self._cuda
        if cuda is not None:
            for ptr, _ in self._buffers.values():
                try:
                    cuda.free(ptr)
                except QtoolError as exc:
                    log.warning("%s", exc)
            if self.stream is not None:
                try:
                    cuda.stream_destroy(self.stream)
                except QtoolError as exc:
                    log.warning("%s", exc)
        self._buffers = {}
        self.stream = None
        # Release TensorRT objects before the CUDA context they live in.
        self.context = self.engine = self.runtime = None
        if cuda is not None and self._owns_cuda:
            cuda.close()
            self._cuda = None
