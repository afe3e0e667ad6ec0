"""The calibration pass: run a copy of the model in onnxruntime with the observed tensors added as
outputs, and feed every batch into one streaming |x| histogram per tensor. Tensors that need only
their max or their channel means are pooled inside onnxruntime instead (qtool.calib.pooled), in a
session of its own that only the batches needing those statistics run in (CalibrationPass). The
statistics are observers (qtool.calib.observer); the sessions and their reused output memory are
qtool.backends.onnxruntime's.

Inference, data loading and histogram updates overlap: data is read ahead in one thread and the
histograms of batch k are updated in another while onnxruntime runs batch k+1 (onnxruntime and
numpy both release the GIL). Memory is O(tensors x bins) plus the observed tensors of two runs
(a run being at most RUN_SAMPLES samples of an image batch, and fewer when their observed tensors
exceed RUN_OUTPUT_BYTES).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import wait
from dataclasses import dataclass

import numpy as np
import onnx

from qtool.backends.onnxruntime.buffers import OutputBufferSets
from qtool.backends.onnxruntime.providers import Providers
from qtool.backends.onnxruntime.providers import resolve as resolve_providers
from qtool.backends.onnxruntime.session import create_session
from qtool.calib.channelmean import ChannelMean
from qtool.calib.histogram import DEFAULT_BINS, AbsHistogram
from qtool.calib.observer import Observers, SessionObservations
from qtool.calib.pooled import PooledMax, pooling_nodes
from qtool.calib.worker import ObserverWorker, in_background
from qtool.errors import QtoolError
from qtool.graph.constants import runtime_inputs
from qtool.io.external import stored_nbytes
from qtool.io.prefetch import Prefetcher

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
                       tensors: list[str], *, bins: int = DEFAULT_BINS, shard: tuple[int, int] = (0, 1),
                       on_batch: Callable[[int], None] | None = None,
                       external_dir: str | os.PathLike | None = None,
                       mean_axes: dict[str, int] | None = None,
                       max_only: dict[str, float] | None = None,
                       pooled_means: list[str] = (),
                       expected_samples: int | None = None,
                       split_parts: bool = True,
                       providers: Providers | None = None,
                       elem_types: dict[str, int] | None = None) -> HistogramRun:
    """Run every batch through the model and histogram |x| of each tensor in `tensors`.

    The tensors to observe are the caller's: `tensors` (histogrammed), `mean_axes` (histogrammed
    tensors whose per-channel means are also kept: tensor -> channel axis), `max_only` (tensors,
    never negative and of rank >= 3, of which only max|x| is needed, each with the largest value
    its activation can produce) and `pooled_means` (tensors of rank >= 3, channels on axis 1,
    whose channel means are needed); the last two are pooled inside onnxruntime and never leave
    it whole (qtool.calib.pooled). How the batches run is CalibrationPass's.

    `external_dir`: the model's folder, for a model loaded without its weights (see
    create_session); onnxruntime then reads them from there and they are never in memory twice.
    `providers`: where onnxruntime runs (qtool.backends.onnxruntime.providers; default the CPU);
    the observers count what they are given the same way whatever produced it.
    `expected_samples`: the data set's size, when known. `split_parts=False`: batches never run
    in parts (for inputs whose batch axis is not axis 0). `elem_types`: the model's element
    types (qtool.graph.facts), so that no session infers shapes again.
    """
    max_only = max_only or {}
    providers = resolve_providers(providers)
    if not tensors and not max_only:
        raise QtoolError("the model has no tensors to calibrate (no Conv, Gemm, MatMul, ... inputs)")
    start = time.perf_counter()
    observers = Observers(tensors, bins, mean_axes or {}, max_only, pooled_means)
    calibration = CalibrationPass(model, observers, shard, expected_samples,
                                  external_dir=external_dir, split_parts=split_parts,
                                  providers=providers, elem_types=elem_types)
    stream = Prefetcher(batches)  # reading starts while the sessions are built
    calibration.run(stream, on_batch)
    if calibration.num_batches == 0:
        raise QtoolError("no calibration batches were run (empty data, or a shard with no batches)")
    return HistogramRun(observers.histograms, observers.means, observers.maxima,
                        calibration.num_samples, calibration.num_batches,
                        time.perf_counter() - start)


@dataclass
class CalibrationSession:
    """A calibration session, the outputs it is run for, the outputs of its pooling nodes, and
    which observer counts which output."""

    session: object  # onnxruntime.InferenceSession
    outputs: list[str]
    max_outputs: dict[str, str]   # max-only tensor -> its GlobalMaxPool output
    mean_outputs: dict[str, str]  # tensor -> its GlobalAveragePool output
    observations: SessionObservations


class CalibrationPass:
    """The batches of one calibration, through one or two sessions, into the observers.

    Pooling is only paid where it is needed. A lean session without it is built in the
    background and takes every batch that needs no pooled statistic: one after every max-only
    tensor has reached its bound (a ReLU6 output reaching 6, usually in the first batch; its max
    cannot change after that) that is not one of the every MEAN_EVERY-th counted batches, from
    which all channel means are taken. With fewer than LEAN_MIN_SAMPLES samples (the data set's
    size, when known) one session takes every batch and the means come from all of them. When
    every tensor to pool is taken out for its histogram anyway (channel means of histogrammed
    tensors only), nothing is pooled: numpy takes the means from the every MEAN_EVERY-th batch,
    in the one lean session (a second session costs its memory, 48 MB on Magika, and spares only
    the pooling). Which session ran a batch never changes a result.

    Batches of image-like inputs (splits_by_sample) of at least SPLIT_MIN_SAMPLE_BYTES per sample
    run in parts: of one sample in a pooled session holding tensors that are not taken out, and
    until every histogram has its grid, else of run_samples(...) samples, from the observed
    bytes per sample of the very first run. A histogram's grid thus comes from the first sample
    where it is not all zero, whichever session ran it.

    With a shard K/N (N > 1) this run counts batches K, K+N, ...; other batches are run (not
    counted) while some tensor has no grid yet, so every shard puts each tensor on the grid of
    the first batch (or part) where it is not all zero, exactly like one whole run, and
    `merge-calib` gives exactly that run's result. (A tensor that is zero in every batch makes
    each shard run every batch; the result is still exact.)
    """

    def __init__(self, model: onnx.ModelProto, observers: Observers, shard: tuple[int, int],
                 expected_samples: int | None, *, external_dir: str | os.PathLike | None,
                 split_parts: bool, providers: Providers,
                 elem_types: dict[str, int] | None = None):
        self.model, self.observers, self.elem_types = model, observers, elem_types
        self.external_dir, self.providers = external_dir, providers
        self.index, self.count = shard
        self.num_samples = self.num_batches = 0
        # Graph inputs are observed straight from the feeds: onnxruntime does not copy an input
        # to a bound output buffer, and asking it to is wasted work anyway.
        self.fed = {value.name for value in model.graph.input}
        self.computed = [name for name in observers.tensors if name not in self.fed]
        self.taken = {name for node in model.graph.node for name in node.output} | self.fed
        # Pooled tensors that are not taken out anyway: only these make pooling hold more than
        # a lean run, and only their pooling spares taking tensors out. Without them, channel
        # means come from the histogrammed tensors in numpy and one lean session does everything.
        self.held = set(observers.bounds) | (set(observers.pooled_means) - set(observers.tensors))
        self.large = expected_samples is None or expected_samples >= LEAN_MIN_SAMPLES
        self.split = split_parts and splits_by_sample(model)
        self.part_samples = 1  # until the first run has shown how large a sample's tensors are
        self.grids_fixed = False
        self.buffers = OutputBufferSets()  # shared by both sessions
        self.pooled = self.lean = self.worker = None
        self.mean_every = 1

    def start_session(self, pool: bool) -> CalibrationSession:
        observers = self.observers
        nodes, max_outputs, mean_outputs = pooling_nodes(
            list(observers.bounds) if pool else [],
            list(observers.pooled_means) if pool and self.held else [], set(self.taken))
        outputs = self.computed + list(max_outputs.values()) + list(mean_outputs.values())
        session = create_session(self.model, self.providers, extra_outputs=outputs,
                                 extra_nodes=nodes, external_dir=self.external_dir,
                                 elem_types=self.elem_types)
        return CalibrationSession(session, outputs, max_outputs, mean_outputs,
                                  observers.for_session(max_outputs, mean_outputs))

    def run(self, stream: Prefetcher, on_batch: Callable[[int], None] | None) -> None:
        """Every batch of `stream`; threads are joined after a complete run and abandoned
        (never waited on) when an error or a signal unwinds it."""
        completed = False
        try:
            if self.held and self.large and weight_bytes(self.model) <= LEAN_MAX_WEIGHT_BYTES:
                # built alongside the pooled session, so that it is ready early and its building
                # does not compete with the first runs
                self.lean = in_background(self.start_session, False)
            self.pooled = self.start_session(True)
            # means from every MEAN_EVERY-th batch where they are pooled or replace pooling
            sampled_means = self.lean is not None or (
                self.large and self.observers.pooled_means and not self.held)
            self.mean_every = MEAN_EVERY if sampled_means else 1
            self.worker = ObserverWorker()
            for batch_index, feeds in enumerate(stream):
                samples = self.run_batch(batch_index, feeds)
                if samples is not None and on_batch is not None:
                    on_batch(samples)
            completed = True
        finally:
            stream.close()
            if completed:
                self.worker.close()
                if self.lean is not None:
                    wait([self.lean])  # no session left building behind a finished run
            elif self.worker is not None:
                self.worker.abandon()  # unwinding: waiting on threads could hang

    def run_batch(self, batch_index: int, feeds: dict[str, np.ndarray]) -> int | None:
        """Run one batch; its sample count when it was counted (this shard's), else None."""
        observers, worker = self.observers, self.worker
        mine = batch_index % self.count == self.index
        if not mine:
            # Another shard's batch is run only while some tensor has no grid yet: each takes
            # its grid from the first batch where it is not all zero, as one whole run would.
            if batch_index:
                worker.drain()
            if observers.grids_fixed():
                return None
        means_batch = mine and self.num_batches % self.mean_every == 0
        session = self.pooled
        if (self.lean is not None and self.lean.done() and mine and not means_batch
                and observers.saturated()):
            session = self.lean.result()
        if not self.grids_fixed and batch_index:
            worker.drain()  # until every grid is fixed, parts must not depend on timing
            self.grids_fixed = observers.grids_fixed()
        # The pooling nodes run last, so a pooled run holds every pooled tensor to its end: with
        # tensors that are not taken out anyway, runs take one sample (EfficientNet-Lite0's
        # pooled session grew by 170 MB in runs of 4, by 50 MB in runs of 1). So do all runs
        # while some histogram has no grid: its grid then comes from the first sample where it
        # is not all zero, in any session.
        holding = session is self.pooled and bool(self.held)
        size = self.part_samples if self.grids_fixed and not holding else 1
        parts = _split_batch(feeds, size) if self.split else [feeds]
        for part_index, part in enumerate(parts):
            self.run_part(session, part, mine, means_batch, first=batch_index == part_index == 0)
        if not mine:
            return None
        samples = _batch_size(feeds)
        self.num_samples += samples
        self.num_batches += 1
        return samples

    def run_part(self, session: CalibrationSession, part: dict[str, np.ndarray], mine: bool,
                 means_batch: bool, first: bool) -> None:
        """Run one part of a batch and hand its values to the observers (to the grids only, for
        a batch that is not counted)."""
        values, token = (self.buffers.run(session.session, session.outputs, part)
                         if session.outputs else ([], None))
        if first:
            self.part_samples = run_samples(values, _batch_size(part))
        named = {name: part[name] for name in self.observers.tensors if name in self.fed}
        named.update(zip(session.outputs, values))
        if not mine:  # fix the grid only
            self.observers.fix_grids(named)
            OutputBufferSets.release(token)
            return
        self.worker.submit(Observers.count(session.observations, named, means_batch), token)


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


