"""The calibration pass: run a copy of the model in onnxruntime with the observed tensors added as
outputs, and feed every batch into one streaming |x| histogram per tensor. Tensors that need only
their max or their channel means are pooled inside onnxruntime instead (qtool.calib.pooled), in a
session of its own that only the batches needing those statistics run in (collect_histograms).

Inference, data loading and histogram updates overlap: data is read ahead in one thread and the
histograms of batch k are updated in another while onnxruntime runs batch k+1 (onnxruntime and
numpy both release the GIL). Memory is O(tensors x bins) plus the observed tensors of two runs
(a run being at most RUN_SAMPLES samples of an image batch, and fewer when their observed tensors
exceed RUN_OUTPUT_BYTES).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from qtool.backends.providers import Providers
from qtool.backends.providers import resolve as resolve_providers
from qtool.calib.channelmean import ChannelMean
from qtool.calib.histogram import AbsHistogram
from qtool.calib.pooled import PooledMax, pooling_nodes
from qtool.errors import QtoolError, first_line
from qtool.graph.constants import runtime_inputs
from qtool.graph.types import tensor_elem_types
from qtool.io.external import save_external, stored_nbytes
from qtool.io.model import PROTOBUF_LIMIT, has_unloaded_weights, weights_nbytes

_DONE = object()
# With pooling in the graph, a batch costs EfficientNet-Lite0 about 1.35x plain inference (the
# pooled tensors are read again, late and cold). Batches that need no pooled statistic run in a
# second, lean session; channel means are pooled in every MEAN_EVERY-th counted batch only, which
# over any real data set is still thousands of values per channel and sample, spread over all of
# it (a data set sorted by class would bias the first batches alone).
MEAN_EVERY = 4
# Below this many samples (when the data set's size is known) one session does everything: a
# second costs about as much as inferring 15 images.
LEAN_MIN_SAMPLES = 64
# A second session holds a second copy of the weights: above this many bytes of them it costs
# more memory than the pooled tensors it spares (all-MiniLM-L6-v2: 90 MB of weights, two
# sessions 1.59x plain inference's peak RSS).
LEAN_MAX_WEIGHT_BYTES = 32 << 20
# Samples per run for batches of large samples (image-like inputs, see _split_batch). onnxruntime
# runs the pooling nodes last, so the pooled session holds every pooled tensor of a run at once,
# and each of the two output sets holds a run's observed tensors: with batches of 10, runs of 4
# took PP-OCRv4 detection from 1.27 GB to 0.81 GB and recognition from 0.88 to 0.57 GB, and both
# ran faster (EfficientNet-Lite0 with batches of 32: 2 GB and 3x slower per sample than with 8).
RUN_SAMPLES = 4
# Runs take fewer samples when their observed tensors would exceed this many bytes: the size per
# sample is known after the first run, which takes one sample. (PP-OCRv6 small detection at
# 640x640 observes 196 MB per sample: runs of 4 peaked at 2.4 GB where plain inference needs
# 0.73 GB; runs of 1 peaked at 0.83 GB and were faster. PP-OCRv4 recognition, 25 MB per sample:
# 326 MB in runs of 2, 277 MB in runs of 1, against 202 MB for plain inference.)
RUN_OUTPUT_BYTES = 32 << 20
# Per-sample input size from which batches are split: tiny samples (digits, CIFAR) run whole,
# where a run's fixed cost would outweigh anything a smaller run saves.
SPLIT_MIN_SAMPLE_BYTES = 64 << 10

@dataclass
class HistogramRun:
    histograms: dict[str, AbsHistogram]
    means: dict[str, ChannelMean]
    maxima: dict[str, PooledMax]  # the max-only tensors
    num_samples: int
    num_batches: int
    seconds: float


def augment_with_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of the model whose graph also outputs `tensors` (the user's model is untouched).

    This copies the weights too; create_session(model, extra_outputs=...) does not."""
    augmented = copy.deepcopy(model)
    augmented.graph.output.extend(output_infos(model, tensors))
    return augmented


def output_infos(model: onnx.ModelProto, tensors: list[str],
                 added_nodes: list[onnx.NodeProto] = ()) -> list[onnx.ValueInfoProto]:
    """Graph outputs (element type, unknown shape) for the `tensors` that are not outputs yet.
    Outputs of `added_nodes` (pooling, which keeps the element type) take their input's type."""
    existing = {value.name for value in model.graph.output}
    types = tensor_elem_types(model)
    for node in added_nodes:
        types[node.output[0]] = types.get(node.input[0], onnx.TensorProto.FLOAT)
    return [helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None)
            for name in tensors if name not in existing]


def create_session(model: onnx.ModelProto, providers: Providers | str | None = None,
                   intra_op_threads: int = 0, *, extra_outputs: list[str] = (),
                   extra_nodes: list[onnx.NodeProto] = (),
                   external_dir: str | os.PathLike | None = None, optimize: bool = True):
    """An onnxruntime session for an in-memory model, plus `extra_outputs` as graph outputs
    and `extra_nodes` (reading only existing tensors) appended to its graph.

    `providers`: a qtool.backends.providers.Providers (or a --provider choice); default the CPU.
    A session that cannot start on a GPU provider is an error when the provider was named, and
    runs on the CPU after one warning under `auto` (onnxruntime's own fallback, which prints on
    stdout, is off).

    The model is neither copied nor modified, whatever its size:
      - weights still on disk (load_model(..., load_weights=False)): the graph goes over in memory
        and onnxruntime reads the weights from `external_dir`, the model's own folder, whose
        locations load_model has already checked;
      - in-memory weights under protobuf's limit: serialised, with the extra outputs appended as
        a second serialised message (protobuf concatenates repeated fields when merging);
      - larger in-memory weights: graph and weights written to a private temporary folder (never
        beside the user's files), one tensor at a time.
    """
    import onnxruntime as ort

    providers = resolve_providers(providers)
    options, extra = _session_settings(intra_op_threads, optimize)
    outputs = output_infos(model, list(extra_outputs), extra_nodes) if extra_outputs else []
    on_disk = has_unloaded_weights(model)
    if on_disk:
        if external_dir is None:
            raise TypeError("create_session: the model's weights are not loaded; pass external_dir")
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         str(external_dir))

    def start(names: tuple[str, ...]):
        if on_disk or weights_nbytes(model) < PROTOBUF_LIMIT - (64 << 20):
            serialized = model.SerializeToString()
            if outputs or extra_nodes:
                # appended nodes only read existing tensors, so graph order stays topological
                addition = onnx.ModelProto()
                addition.graph.node.extend(extra_nodes)
                addition.graph.output.extend(outputs)
                serialized += addition.SerializeToString()
            return ort.InferenceSession(serialized, options, providers=list(names), **extra)
        with tempfile.TemporaryDirectory(prefix="qtool-") as tmp:
            path = Path(tmp) / "model.onnx"
            save_external(model, path, "model.onnx.data", extra_outputs=outputs,
                          extra_nodes=extra_nodes)
            return ort.InferenceSession(str(path), options, providers=list(names), **extra)

    return _start_session(start, providers)


def create_file_session(path: str | os.PathLike, intra_op_threads: int = 0,
                        providers=None):
    """An onnxruntime session read by onnxruntime from the model file itself (external weights
    from its folder), with create_session's settings and providers: no copy of the model is held
    in Python. For a model file already checked by load_model."""
    import onnxruntime as ort

    providers = resolve_providers(providers)
    options, extra = _session_settings(intra_op_threads)
    return _start_session(lambda names: ort.InferenceSession(str(path), options,
                                                             providers=list(names), **extra),
                          providers)


def _start_session(start, providers):
    """start(provider names) on the chosen providers; when a GPU provider cannot start, an error
    if it was named, else the CPU (Providers.failed decides)."""
    try:
        if not providers.on_cpu:
            try:
                session = start(providers.names)
            except Exception as exc:
                providers.failed(exc)  # an error for a named provider; otherwise the CPU
            else:
                providers.check_session(session)
                return session
        return start(providers.names)
    except QtoolError:
        raise
    except Exception as exc:
        raise QtoolError(f"onnxruntime cannot load the model: {first_line(exc, 400)}") from None


def _session_settings(intra_op_threads: int = 0, optimize: bool = True):
    """(SessionOptions, extra InferenceSession arguments) of every qtool session; `optimize`
    False: no graph optimizations."""
    import onnxruntime as ort

    # onnxruntime's own log lines (coloured, multi-line) would come before qtool's one-line
    # error about the same failure: only fatal ones are let through.
    ort.set_default_logger_severity(4)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    # Idle onnxruntime threads spin by default, burning the core that the histogram thread (or
    # data decoding) needs between runs: calibration of EfficientNet-Lite0 took 14.8 s with
    # spinning and 10.7 s without.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # This rewrite folds a Q/DQ conv's bias in the model's float type and overflows with FP16
    # models (opset 19+ FP16 Q/DQ gave 0% top-1 on EfficientNet-Lite0 with it enabled).
    # onnxruntime's own provider fallback (which prints on stdout) is off: _start_session decides.
    extra = {"disabled_optimizers": ["WeightBiasQuantization"], "enable_fallback": 0}
    return options, extra


def run_session(session, feeds: dict[str, np.ndarray], output_names: list[str] | None = None):
    with _batch_errors():
        return session.run(output_names, feeds)


@contextlib.contextmanager
def _batch_errors():
    """onnxruntime's errors on a batch (wrong shapes, failed kernels) as one user-facing line."""
    try:
        yield
    except Exception as exc:
        raise QtoolError(f"onnxruntime failed on a batch: {first_line(exc, 400)}") from None


class prefetch(Iterator):  # lower case: it reads like a function, for x in prefetch(source)
    """Iterate in a background thread, `depth` items ahead; errors re-raised in the consumer.

    The thread starts at once, so reading overlaps whatever the caller does before its first
    item (building an onnxruntime session). `close()`, or dropping the iterator, stops it.
    """

    def __init__(self, iterable: Iterable, depth: int = 2):
        items: queue.Queue = queue.Queue(maxsize=depth)
        stop = threading.Event()
        self._items, self._stop = items, stop

        # The thread sees only the queue and the event, never self: an abandoned iterator is
        # then collected, and __del__ stops the thread.
        def put(entry) -> bool:
            """Queue an entry unless the consumer has gone (then a full queue would block forever)."""
            while not stop.is_set():
                try:
                    items.put(entry, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce():
            iterator = iter(())
            try:
                iterator = iter(iterable)
                for item in iterator:
                    if not put((True, item)):
                        return
                put((True, _DONE))
            except BaseException as exc:  # handed to the consumer, which re-raises it
                put((False, exc))
            finally:
                # A consumer that stopped early leaves a half-read source: close it here, in the
                # one thread that runs it, so its own clean-up (files, decoder threads) runs now.
                close = getattr(iterator, "close", None)
                if close is not None:
                    with contextlib.suppress(Exception):  # its clean-up must not mask anything
                        close()

        threading.Thread(target=produce, daemon=True, name="qtool-prefetch").start()

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        ok, item = self._items.get()
        if not ok or item is _DONE:
            self.close()
            if not ok:
                raise item
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()

    def __del__(self):
        self.close()


class _OutputBuffers:
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
            self.free.put(_OutputStorage())
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
            with _batch_errors():
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


class _OutputStorage:
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
            if len(self.bindings) >= _OutputBuffers.LAYOUTS:
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


class _HistogramWorker:
    """Runs the observers' updates in a background thread so numpy overlaps with onnxruntime."""

    # How often an idle worker looks whether it was abandoned.
    POLL_SECONDS = 0.5

    def __init__(self):
        self.jobs: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.abandoned = False
        self.thread = threading.Thread(target=self._work, daemon=True, name="qtool-histograms")
        self.thread.start()

    def _work(self):
        while True:
            try:
                job = self.jobs.get(timeout=self.POLL_SECONDS)
            except queue.Empty:
                if self.abandoned:
                    return
                continue
            if job is _DONE or self.abandoned:
                return
            updates, token = job
            try:
                if self.error is None:
                    for update, value in updates:
                        update(value)
            except BaseException as exc:
                self.error = exc
            finally:
                _OutputBuffers.release(token)
                # hold no arrays between jobs: their memory is the sessions' to reuse or free
                job = updates = token = update = value = None
                self.jobs.task_done()

    def drain(self) -> None:
        """Wait until every submitted batch is counted (the histograms are then up to date)."""
        self.jobs.join()
        if self.error is not None:
            raise self.error

    def submit(self, updates: list[tuple[Callable, np.ndarray]], token=None):
        """Call update(value) for each pair, in order, in the worker thread."""
        if self.error is not None:
            raise self.error
        self.jobs.put((updates, token))

    def close(self):
        self.jobs.put(_DONE)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """Let the thread end on its own, without waiting for it or touching its queue: the
        caller is unwinding an error or a signal, and a signal can leave a lock that the main
        thread took inside a `with` block held (the thread is a daemon, so that cannot hold up
        the process's exit either)."""
        self.abandoned = True


def _in_background(function: Callable, *args) -> Future:
    """function(*args) in a daemon thread, its result or exception in the returned future. (An
    executor's threads are joined at exit, so one stuck behind a signal would hang the process.)"""
    future: Future = Future()

    def run():
        try:
            result = function(*args)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    threading.Thread(target=run, daemon=True, name="qtool-session").start()
    return future


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
                       on_batch: Callable[[int], None] | None = None,
                       external_dir: str | os.PathLike | None = None,
                       mean_axes: dict[str, int] | None = None,
                       max_only: dict[str, float] | None = None,
                       pooled_means: list[str] = (),
                       expected_samples: int | None = None,
                       split_parts: bool = True,
                       providers: Providers | None = None) -> HistogramRun:
    """Run every batch through the model and histogram |x| of each observed tensor.

    `external_dir`: the model's folder, for a model loaded without its weights (see
    create_session); onnxruntime then reads them from there and they are never in memory twice.
    `providers`: where onnxruntime runs (qtool.backends.providers; default the CPU); the observers
    count what they are given the same way whatever produced it.

    `mean_axes`: histogrammed tensors whose per-channel means are also kept (tensor -> channel
    axis). `max_only`: tensors (never negative, rank >= 3) of which only max|x| is needed, each
    with the largest value its activation can produce, and `pooled_means`: tensors (rank >= 3,
    channels on axis 1) whose channel means are needed; both are pooled inside onnxruntime and
    never leave it whole (qtool.calib.pooled).

    Pooling is only paid where it is needed. A lean session without it is built in the
    background and takes every batch that needs no pooled statistic: one after every max-only
    tensor has reached its bound (a ReLU6 output reaching 6, usually in the first batch; its max
    cannot change after that) that is not one of the every MEAN_EVERY-th counted batches, from
    which all channel means are taken. With fewer than LEAN_MIN_SAMPLES samples
    (`expected_samples`: the data set's size, when known) one session takes every batch and the
    means come from all of them. When every tensor to pool is taken out for its histogram anyway
    (channel means of histogrammed tensors only), nothing is pooled: numpy takes the means from
    the every MEAN_EVERY-th batch, in the one lean session (a second session costs its memory,
    48 MB on Magika, and spares only the pooling). Which session ran a batch never changes a
    result.

    Batches of image-like inputs (splits_by_sample) of at least SPLIT_MIN_SAMPLE_BYTES per sample
    run in parts (`split_parts=False`: never, for inputs whose batch axis is not axis 0): of one
    sample in a pooled session holding tensors that are not taken out, and until every histogram
    has its grid, else of run_samples(...) samples, from the observed bytes per sample of the very
    first run. A histogram's grid thus comes from the first sample where it is not all zero,
    whichever session ran it.

    With a shard K/N (N > 1) this run counts batches K, K+N, ...; other batches are run (not
    counted) while some tensor has no grid yet, so every shard puts each tensor on the grid of
    the first batch (or part) where it is not all zero, exactly like one whole run, and `merge-calib`
    gives exactly that run's result. (A tensor that is zero in every batch makes each shard run
    every batch; the result is still exact.)
    """
    max_only = max_only or {}
    providers = resolve_providers(providers)
    if not tensors and not max_only:
        raise QtoolError("the model has no tensors to calibrate (no Conv, Gemm, MatMul, ... inputs)")
    start = time.perf_counter()
    histograms = {name: AbsHistogram(bins) for name in tensors}
    means = {name: ChannelMean(axis) for name, axis in (mean_axes or {}).items()
             if name in histograms and name not in pooled_means}
    means.update((name, ChannelMean(1)) for name in pooled_means)
    maxima = {name: PooledMax() for name in max_only}
    index, count = shard
    num_samples = num_batches = 0
    # Graph inputs are observed straight from the feeds: onnxruntime does not copy an input to a
    # bound output buffer, and asking it to is wasted work anyway.
    fed = {value.name for value in model.graph.input}
    computed = [name for name in tensors if name not in fed]
    taken = {name for node in model.graph.node for name in node.output} | fed
    # Pooled tensors that are not taken out anyway: only these make pooling hold more than a
    # lean run, and only their pooling spares taking tensors out. Without them, channel means
    # come from the histogrammed tensors in numpy and one lean session does everything.
    held = set(max_only) | (set(pooled_means) - set(tensors))
    large = expected_samples is None or expected_samples >= LEAN_MIN_SAMPLES

    def start_session(pool: bool) -> _Session:
        nodes, max_outputs, mean_outputs = pooling_nodes(
            list(max_only) if pool else [], list(pooled_means) if pool and held else [],
            set(taken))
        outputs = computed + list(max_outputs.values()) + list(mean_outputs.values())
        session = create_session(model, providers, extra_outputs=outputs, extra_nodes=nodes,
                                 external_dir=external_dir)
        return _Session(session, outputs, max_outputs, mean_outputs)

    stream = prefetch(batches)  # reading starts while the sessions are built
    buffers = _OutputBuffers()  # shared by both sessions
    worker = lean = None
    completed = False
    try:
        if held and large and weight_bytes(model) <= LEAN_MAX_WEIGHT_BYTES:
            # built alongside the pooled session, so that it is ready early and its building
            # does not compete with the first runs
            lean = _in_background(start_session, False)
        pooled = start_session(True)
        # means from every MEAN_EVERY-th batch where they are pooled or replace pooling
        sampled_means = lean is not None or (large and pooled_means and not held)
        mean_every = MEAN_EVERY if sampled_means else 1
        split = split_parts and splits_by_sample(model)
        part_samples = 1  # until the first run has shown how large a sample's tensors are
        grids_fixed = False
        worker = _HistogramWorker()
        for batch_index, feeds in enumerate(stream):
            mine = batch_index % count == index
            if not mine:
                # Another shard's batch is run only while some tensor has no grid yet: each takes
                # its grid from the first batch where it is not all zero, as one whole run would.
                if batch_index:
                    worker.drain()
                if all(hist.has_grid for hist in histograms.values()):
                    continue
            means_batch = mine and num_batches % mean_every == 0
            saturated = all(maxima[name].abs_max >= bound for name, bound in max_only.items())
            session = pooled
            if lean is not None and lean.done() and mine and not means_batch and saturated:
                session = lean.result()
            if not grids_fixed and batch_index:
                worker.drain()  # until every grid is fixed, parts must not depend on timing
                grids_fixed = all(hist.has_grid for hist in histograms.values())
            # The pooling nodes run last, so a pooled run holds every pooled tensor to its end:
            # with tensors that are not taken out anyway, runs take one sample (EfficientNet-
            # Lite0's pooled session grew by 170 MB in runs of 4, by 50 MB in runs of 1). So do
            # all runs while some histogram has no grid: its grid then comes from the first
            # sample where it is not all zero, in any session.
            holding = session is pooled and bool(held)
            size = part_samples if grids_fixed and not holding else 1
            parts = _split_batch(feeds, size) if split else [feeds]
            for part_index, part in enumerate(parts):
                values, token = (buffers.run(session.session, session.outputs, part)
                                 if session.outputs else ([], None))
                if batch_index == 0 and part_index == 0:
                    part_samples = run_samples(values, _batch_size(part))
                named = {name: part[name] for name in tensors if name in fed}
                named.update(zip(session.outputs, values))
                if not mine:  # fix the grid only
                    for name in tensors:
                        histograms[name].fix_grid_from(named[name])
                    _OutputBuffers.release(token)
                    continue
                # maxima here, at once (they are tiny): the next batch knows if it needs pooling
                for name, out in session.max_outputs.items():
                    maxima[name].update(named[out])
                updates = [(histograms[name].update, named[name]) for name in tensors]
                if means_batch:
                    updates += [(means[name].update, named[name])
                                for name in means if name not in session.mean_outputs]
                    updates += [(means[name].update_pooled, named[out])
                                for name, out in session.mean_outputs.items()]
                worker.submit(updates, token)
            if not mine:
                continue
            samples = _batch_size(feeds)
            num_samples += samples
            num_batches += 1
            if on_batch is not None:
                on_batch(samples)
        completed = True
    finally:
        stream.close()
        if completed:
            worker.close()
            if lean is not None:
                wait([lean])  # no session left building behind a finished run
        elif worker is not None:
            worker.abandon()  # unwinding: waiting on threads could hang
    if num_batches == 0:
        raise QtoolError("no calibration batches were run (empty data, or a shard with no batches)")
    return HistogramRun(histograms, means, maxima, num_samples, num_batches,
                        time.perf_counter() - start)


@dataclass
class _Session:
    """A calibration session, the outputs it is run for, and the outputs of its pooling nodes."""

    session: object  # onnxruntime.InferenceSession
    outputs: list[str]
    max_outputs: dict[str, str]   # max-only tensor -> its GlobalMaxPool output
    mean_outputs: dict[str, str]  # tensor -> its GlobalAveragePool output


def splits_by_sample(model: onnx.ModelProto) -> bool:
    """True when every input is image-like (rank >= 4) with a dynamic first dimension: a batch
    then runs in parts of fewer samples without changing any sample's values. (A dynamic first
    dimension of lower rank may be a sequence rather than the batch.)"""
    inputs = runtime_inputs(model)
    for value in inputs:
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape") or len(tensor_type.shape.dim) < 4:
            return False
        first = tensor_type.shape.dim[0]
        if first.HasField("dim_value") and first.dim_value >= 0:  # -1: dynamic (Paddle2ONNX)
            return False
    return bool(inputs)


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the main graph's initializers (loaded or still on disk) and Constant tensors:
    what each session holds a copy of."""
    constants = [attr.t for node in model.graph.node if node.op_type == "Constant"
                 for attr in node.attribute if attr.type == onnx.AttributeProto.TENSOR]
    return sum(stored_nbytes(tensor) for tensor in [*model.graph.initializer, *constants])


def run_samples(values: list[np.ndarray], samples: int) -> int:
    """Samples per run from one run's observed tensors: at most RUN_SAMPLES, and fewer where
    their bytes would exceed RUN_OUTPUT_BYTES (never under one)."""
    per_sample = sum(value.nbytes for value in values) / max(samples, 1)
    if per_sample <= 0:
        return RUN_SAMPLES
    return max(1, min(RUN_SAMPLES, int(RUN_OUTPUT_BYTES // per_sample)))


def _split_batch(feeds: dict[str, np.ndarray], size: int) -> list[dict[str, np.ndarray]]:
    """The batch in parts of at most `size` samples; whole when its samples are small (under
    SPLIT_MIN_SAMPLE_BYTES of input each) or the inputs disagree on the sample count."""
    count = _batch_size(feeds)
    if count <= size or any(value.ndim == 0 or value.shape[0] != count for value in feeds.values()):
        return [feeds]
    if sum(value.nbytes for value in feeds.values()) < SPLIT_MIN_SAMPLE_BYTES * count:
        return [feeds]
    return [{name: value[start:start + size] for name, value in feeds.items()}
            for start in range(0, count, size)]


def _batch_size(feeds: dict[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()))
    return int(first.shape[0]) if first.ndim else 1

