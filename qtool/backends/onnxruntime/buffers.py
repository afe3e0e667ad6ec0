"""Output memory that onnxruntime sessions write into, reused from run to run.

Calibration takes many tensors out of every run; letting onnxruntime allocate each of them anew
for every batch costs as much as the inference itself (see OutputBufferSets).
"""

from __future__ import annotations

import math
import queue

import numpy as np

from qtool.backends.onnxruntime.session import batch_errors, run_session


class OutputBufferSets:
    """Runs the calibration sessions into two reused sets of output memory, alternately.

    Letting onnxruntime allocate every observed tensor anew for each batch costs page faults and
    copies comparable to the inference itself; writing into memory that is already mapped does
    not. A set is handed to the histogram worker and comes back through `release` once counted,
    so onnxruntime fills one set while numpy reads the other. Both sessions (pooled and lean) and
    every input shape share the two sets: each output's memory is viewed in the shape a run
    needs, and grows when a shape needs more, so memory is two sets of the largest run's outputs
    whatever the mix of sessions and batch parts. (A set per session and shape took PP-OCRv4
    detection from 1.0 to 1.5 GB.)
    """

    SETS = 2
    # Output layouts remembered (session and input shape): ever-changing shapes stay bounded.
    LAYOUTS = 8

    def __init__(self):
        self.free: queue.Queue = queue.Queue()
        for _ in range(self.SETS):
            self.free.put(OutputMemory())
        self.layouts: dict[tuple, list[tuple[tuple, np.dtype]]] = {}

    def run(self, session, outputs: list[str],
            feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], object]:
        """Run `session` for `outputs`; returns their values and the token that frees them."""
        key = (id(session), tuple(outputs),
               tuple((name, value.shape, value.dtype.str) for name, value in feeds.items()))
        storage = self.free.get()
        try:
            layout = self.layouts.get(key)
            if layout is None:
                # The output shapes are unknown until a run: onnxruntime allocates this one, and
                # its arrays become the set's memory where they are larger.
                values = run_session(session, feeds, outputs)
                if len(self.layouts) >= self.LAYOUTS:
                    self.layouts.clear()
                self.layouts[key] = [(value.shape, value.dtype) for value in values]
                storage.adopt(outputs, values)
                return values, (self.free, storage)
            binding, values = storage.bound(key, session, outputs, layout)
            for name, value in feeds.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            with batch_errors():
                session.run_with_iobinding(binding)
            return values, (self.free, storage)
        except BaseException:
            self.free.put(storage)
            raise

    @staticmethod
    def release(token) -> None:
        if token is not None:
            free, storage = token
            free.put(storage)


class OutputMemory:
    """One set of output memory: a flat byte buffer per output name, viewed in each run's shapes."""

    def __init__(self):
        self.buffers: dict[str, np.ndarray] = {}
        self.bindings: dict[tuple, tuple] = {}  # layout key -> (io binding, bound views)

    def adopt(self, outputs: list[str], values: list[np.ndarray]) -> None:
        """Keep the memory of freshly allocated outputs that are larger than this set's."""
        for name, value in zip(outputs, values):
            old = self.buffers.get(name)
            if value.flags.c_contiguous and (old is None or old.nbytes < value.nbytes):
                self.buffers[name] = value.reshape(-1).view(np.uint8)
                self.bindings.clear()  # no binding may write to memory this set let go

    def bound(self, key: tuple, session, outputs: list[str], layout) -> tuple:
        cached = self.bindings.get(key)
        if cached is None:
            views = [self._view(name, shape, dtype) for name, (shape, dtype) in zip(outputs, layout)]
            binding = session.io_binding()
            for name, view in zip(outputs, views):
                binding.bind_output(name, "cpu", 0, view.dtype, list(view.shape), view.ctypes.data)
            if len(self.bindings) >= OutputBufferSets.LAYOUTS:
                self.bindings.clear()
            cached = self.bindings[key] = (binding, views)
        return cached

    def _view(self, name: str, shape: tuple, dtype: np.dtype) -> np.ndarray:
        need = math.prod(shape) * dtype.itemsize
        buffer = self.buffers.get(name)
        if buffer is None or buffer.nbytes < need:
            buffer = self.buffers[name] = np.empty(need, np.uint8)
            self.bindings.clear()
        return buffer[:need].view(dtype).reshape(shape)
