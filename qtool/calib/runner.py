"""The calibration pass: run a copy of the model in onnxruntime with the observed tensors added as
outputs, and feed every batch into one streaming |x| histogram per tensor.

Inference, data loading and histogram updates overlap: data is read ahead in one thread and the
histograms of batch k are updated in another while onnxruntime runs batch k+1 (onnxruntime and
numpy both release the GIL). Memory is O(tensors x bins) plus a couple of batches in flight.
"""

from __future__ import annotations

import copy
import os
import queue
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import onnx
from onnx import helper

from qtool.calib.histogram import AbsHistogram
from qtool.errors import QtoolError
from qtool.graph.types import tensor_elem_types
from qtool.io.model import PROTOBUF_LIMIT, weights_nbytes

_DONE = object()


@dataclass
class HistogramRun:
    histograms: dict[str, AbsHistogram]
    num_samples: int
    num_batches: int
    seconds: float


def augment_with_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of the model whose graph also outputs `tensors` (the user's model is untouched)."""
    augmented = copy.deepcopy(model)
    existing = {value.name for value in augmented.graph.output}
    types = tensor_elem_types(model)
    for name in tensors:
        if name not in existing:
            elem = types.get(name, onnx.TensorProto.FLOAT)
            augmented.graph.output.append(helper.make_tensor_value_info(name, elem, None))
    return augmented


def create_session(model: onnx.ModelProto, providers: list[str] | None = None,
                   intra_op_threads: int = 0):
    """An onnxruntime CPU session for an in-memory model. Models too large for one protobuf
    are written to a private temporary folder (never beside the user's files)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    providers = providers or ["CPUExecutionProvider"]
    # This rewrite folds a Q/DQ conv's bias in the model's float type and overflows with FP16
    # models (opset 19+ FP16 Q/DQ gave 0% top-1 on EfficientNet-Lite0 with it enabled).
    extra = {"disabled_optimizers": ["WeightBiasQuantization"]}
    try:
        if weights_nbytes(model) < PROTOBUF_LIMIT - (64 << 20):
            return ort.InferenceSession(model.SerializeToString(), options, providers=providers, **extra)
        with tempfile.TemporaryDirectory(prefix="qtool-") as tmp:
            path = Path(tmp) / "model.onnx"
            onnx.save_model(model, str(path), save_as_external_data=True,
                            all_tensors_to_one_file=True, location="model.onnx.data")
            return ort.InferenceSession(str(path), options, providers=providers, **extra)
    except Exception as exc:
        raise QtoolError(f"onnxruntime cannot load the model: {_first_line(exc)}") from None


def run_session(session, feeds: dict[str, np.ndarray], output_names: list[str] | None = None):
    try:
        return session.run(output_names, feeds)
    except Exception as exc:
        raise QtoolError(f"onnxruntime failed on a batch: {_first_line(exc)}") from None


def prefetch(iterable: Iterable, depth: int = 2) -> Iterator:
    """Iterate in a background thread, `depth` items ahead; errors re-raised in the consumer."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        items.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((True, _DONE))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            items.put((False, exc))

    thread = threading.Thread(target=produce, daemon=True, name="qtool-prefetch")
    thread.start()
    try:
        while True:
            ok, item = items.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()


class _OutputBuffers:
    """Runs the augmented session into two reused sets of output arrays, alternately.

    Letting onnxruntime allocate every observed tensor anew for each batch costs page faults and
    copies comparable to the inference itself; writing into arrays that are already mapped does
    not. A set is handed to the histogram worker and comes back through `release` once counted,
    so onnxruntime fills one set while numpy reads the other. A batch of another input shape
    (dynamic axes) gets sets of its own.
    """

    SETS = 2

    def __init__(self, session, outputs: list[str]):
        self.session = session
        self.outputs = outputs
        self.key = None
        self.free: queue.Queue = queue.Queue()

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], object]:
        key = tuple((name, value.shape, value.dtype.str) for name, value in feeds.items())
        if key != self.key:
            values = run_session(self.session, feeds, self.outputs)
            self.key, self.free = key, queue.Queue()
            for _ in range(self.SETS - 1):
                self.free.put(self._bound_set([np.empty_like(v) for v in values]))
            # onnxruntime's freshly allocated arrays join the pool once they have been counted
            return values, (self.free, self._bound_set(values))
        buffers = self.free.get()
        binding, values = buffers
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        try:
            self.session.run_with_iobinding(binding)
        except Exception as exc:
            raise QtoolError(f"onnxruntime failed on a batch: {_first_line(exc)}") from None
        return values, (self.free, buffers)

    def _bound_set(self, values: list[np.ndarray]):
        binding = self.session.io_binding()
        for name, value in zip(self.outputs, values):
            binding.bind_output(name, "cpu", 0, value.dtype, list(value.shape), value.ctypes.data)
        return binding, values

    @staticmethod
    def release(token) -> None:
        if token is not None:
            pool, buffers = token
            pool.put(buffers)


class _HistogramWorker:
    """Updates histograms in a background thread so numpy overlaps with onnxruntime."""

    def __init__(self, histograms: dict[str, AbsHistogram]):
        self.histograms = histograms
        self.jobs: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, daemon=True, name="qtool-histograms")
        self.thread.start()

    def _work(self):
        while True:
            job = self.jobs.get()
            if job is _DONE:
                return
            pairs, token = job
            try:
                if self.error is None:
                    for name, value in pairs:
                        self.histograms[name].update(value)
            except BaseException as exc:
                self.error = exc
            finally:
                _OutputBuffers.release(token)

    def submit(self, pairs: list[tuple[str, np.ndarray]], token=None):
        if self.error is not None:
            raise self.error
        self.jobs.put((pairs, token))

    def close(self):
        self.jobs.put(_DONE)
        self.thread.join()
        if self.error is not None:
            raise self.error


def parse_shard(text: str | None) -> tuple[int, int]:
    """'K/N' -> (K, N): this run takes batches K, K+N, K+2N, ..."""
    if not text:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise QtoolError(f"--shard must look like K/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise QtoolError(f"--shard {text}: need 0 <= K < N")
    return index, count


def collect_histograms(model: onnx.ModelProto, batches: Iterable[dict[str, np.ndarray]],
                       tensors: list[str], *, bins: int = 2048, shard: tuple[int, int] = (0, 1),
                       on_batch: Callable[[int], None] | None = None) -> HistogramRun:
    """Run every batch through the model and histogram |x| of each observed tensor.

    With a shard K/N (N > 1) this run counts batches K, K+N, ...; batch 0 is always run so every
    shard shares the grid (bin width) of batch 0 and `merge-calib` gives exactly one run's result.
    """
    if not tensors:
        raise QtoolError("the model has no tensors to calibrate (no Conv, Gemm, MatMul, ... inputs)")
    start = time.perf_counter()
    histograms = {name: AbsHistogram(bins) for name in tensors}
    index, count = shard
    num_samples = num_batches = 0
    # Graph inputs are observed straight from the feeds: onnxruntime does not copy an input to a
    # bound output buffer, and asking it to is wasted work anyway.
    fed = {value.name for value in model.graph.input}
    computed = [name for name in tensors if name not in fed]
    session = create_session(augment_with_outputs(model, computed))
    runner = _OutputBuffers(session, computed)
    worker = _HistogramWorker(histograms)
    try:
        for batch_index, feeds in enumerate(prefetch(batches)):
            mine = batch_index % count == index
            if not mine and batch_index != 0:
                continue
            values, token = runner.run(feeds) if computed else ([], None)
            named = {name: feeds[name] for name in tensors if name in fed}
            named.update(zip(computed, values))
            pairs = [(name, named[name]) for name in tensors]
            if not mine:  # batch 0 seen by another shard: fix the grid only
                for name, value in pairs:
                    histograms[name].fix_grid(_finite_abs_max(value))
                _OutputBuffers.release(token)
                continue
            worker.submit(pairs, token)
            samples = _batch_size(feeds)
            num_samples += samples
            num_batches += 1
            if on_batch is not None:
                on_batch(samples)
    finally:
        worker.close()
    if num_batches == 0:
        raise QtoolError("no calibration batches were run (empty data, or a shard with no batches)")
    return HistogramRun(histograms, num_samples, num_batches, time.perf_counter() - start)


def _finite_abs_max(value: np.ndarray) -> float:
    magnitude = np.abs(value[np.isfinite(value)]) if value.size else value
    return float(magnitude.max()) if magnitude.size else 0.0


def _batch_size(feeds: dict[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()))
    return int(first.shape[0]) if first.ndim else 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:400]
