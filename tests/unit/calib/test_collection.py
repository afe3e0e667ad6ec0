import threading
import time
from concurrent.futures import Future

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from qtool.backends.onnxruntime.buffers import OutputBufferSets
from qtool.backends.onnxruntime.session import augment_with_outputs, create_session
from qtool.calib import collection
from qtool.calib.collection import collect_histograms
from qtool.calib.histogram import AbsHistogram, grid_width
from qtool.calib.worker import ObserverWorker
from qtool.errors import QtoolError
from qtool.graph.observe import tensors_to_observe
from tests.tiny_models import conv_relu_gemm, relu6_conv


def _batches(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": (rng.normal(size=(n, 2, 6, 6)) * (1 + k % 3)).astype(np.float32)}
            for k, n in enumerate(sizes)]


def test_histograms_equal_direct_counting_with_reused_buffers():
    model = conv_relu_gemm()
    tensors = tensors_to_observe(model)
    sizes = [4, 4, 4, 4, 2, 2, 4, 4, 3]  # repeated shapes reuse buffers; changes get new ones
    batches = _batches(sizes)
    run = collect_histograms(model, batches, tensors, bins=64)
    session = ort.InferenceSession(augment_with_outputs(model, tensors).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    expected = {name: AbsHistogram(64) for name in tensors}
    for feeds in batches:
        for name, value in zip(tensors, session.run(tensors, feeds)):
            expected[name].update(value)
    assert run.num_batches == len(sizes) and run.num_samples == sum(sizes)
    for name in tensors:
        np.testing.assert_array_equal(run.histograms[name].hist, expected[name].hist)
        assert run.histograms[name].abs_max == expected[name].abs_max


def test_sessions_and_shapes_share_two_sets_of_output_memory():
    """Runs of two sessions at three batch sizes give the values of plain runs, and all of them
    write into two sets of memory, each output's as large as the largest run needs."""
    model = conv_relu_gemm()
    tensors = [name for name in tensors_to_observe(model) if name != "x"]  # computed ones
    assert len(tensors) > 1
    lean = create_session(model, extra_outputs=tensors[:1])
    full = create_session(model, extra_outputs=tensors)
    buffers = OutputBufferSets()
    for session, outputs, feeds in [(s, t, f) for f in _batches([4, 2, 8, 4, 2])
                                    for s, t in ((lean, tensors[:1]), (full, tensors))]:
        values, token = buffers.run(session, outputs, feeds)
        for value, expected in zip(values, session.run(outputs, feeds)):
            np.testing.assert_array_equal(value, expected)
        OutputBufferSets.release(token)
    sets = [buffers.free.get_nowait() for _ in range(OutputBufferSets.SETS)]
    assert buffers.free.empty()
    widest = dict(zip(tensors, full.run(tensors, _batches([8])[0])))
    # (runs alternate between the sets, so each set holds what its own runs needed)
    assert set().union(*(storage.buffers for storage in sets)) == set(tensors)
    for storage in sets:
        for name, buffer in storage.buffers.items():
            assert buffer.nbytes == widest[name].nbytes


def test_shard_fixes_grid_from_batch_zero():
    model = conv_relu_gemm()
    tensors = tensors_to_observe(model)
    batches = _batches([3, 3, 3, 3])
    whole = collect_histograms(model, batches, tensors, bins=64)
    shards = [collect_histograms(model, batches, tensors, bins=64, shard=(k, 2)) for k in range(2)]
    for name in tensors:
        merged = shards[0].histograms[name].copy()
        merged.merge(shards[1].histograms[name])
        np.testing.assert_array_equal(merged.hist, whole.histograms[name].hist)
    assert shards[0].num_batches == shards[1].num_batches == 2


def _relu6_conv_model() -> onnx.ModelProto:
    """x[N, 2, 4, 4] -> Clip(0, 6) "clipped" -> 1x1 Conv -> y."""
    return relu6_conv(np.random.default_rng(7).normal(size=(2, 2, 1, 1)), 4)


def _relu6_conv_run(monkeypatch, batches_count=9, seed=0):
    """The model above, its batches, and a runner of collect_histograms that records the extra
    outputs of every session it builds."""
    rng = np.random.default_rng(seed)
    model = _relu6_conv_model()
    batches = [{"x": (rng.normal(size=(3, 2, 4, 4)) * 4).astype(np.float32)}
               for _ in range(batches_count)]
    sessions = []
    real = collection.create_session

    def recording(*args, **kwargs):
        sessions.append(kwargs.get("extra_outputs"))
        return real(*args, **kwargs)

    monkeypatch.setattr(collection, "create_session", recording)

    def run(bound, expected=None):
        return collection.collect_histograms(model, batches, ["x"], max_only={"clipped": bound},
                                         pooled_means=["clipped"], mean_axes={"x": 1},
                                         expected_samples=expected)

    return batches, sessions, run


def test_lean_session_changes_no_statistic(monkeypatch):
    """A ReLU6 output at 6 cannot go higher: later batches may run in a session without pooling,
    and every statistic comes out as if they had not."""
    _, sessions, run = _relu6_conv_run(monkeypatch)
    switched = run(6.0)
    pooling = [any("max" in name or "mean" in name for name in outputs) for outputs in sessions]
    assert sorted(pooling) == [False, True]  # a pooled and a lean session, built concurrently
    stayed = run(float("inf"))  # never reached: every batch needs the max pooling
    assert switched.maxima["clipped"].abs_max == stayed.maxima["clipped"].abs_max == 6.0
    for name in ("clipped", "x"):
        np.testing.assert_array_equal(switched.means[name].mean, stayed.means[name].mean)
    np.testing.assert_array_equal(switched.histograms["x"].hist, stayed.histograms["x"].hist)
    assert switched.num_samples == stayed.num_samples == 27


def test_large_weights_keep_one_session(monkeypatch):
    """A second session would hold a second copy of the weights: above the limit, one pooled
    session runs every batch, with the same statistics."""
    batches, sessions, run = _relu6_conv_run(monkeypatch)
    two = run(6.0)
    assert len(sessions) == 2
    sessions.clear()
    monkeypatch.setattr(collection, "LEAN_MAX_WEIGHT_BYTES",
                        collection.weight_bytes(_relu6_conv_model()) - 1)
    one = run(6.0)
    assert len(sessions) == 1
    assert one.maxima["clipped"].abs_max == two.maxima["clipped"].abs_max == 6.0
    np.testing.assert_array_equal(one.histograms["x"].hist, two.histograms["x"].hist)
    # the pooled session computes the means of every batch
    every = np.concatenate([b["x"] for b in batches])
    np.testing.assert_allclose(one.means["x"].mean, every.astype(np.float64).mean(axis=(0, 2, 3)),
                               rtol=1e-5)


def test_channel_means_come_from_every_fourth_batch(monkeypatch):
    batches, _, run = _relu6_conv_run(monkeypatch, batches_count=9)
    result = run(6.0)
    assert collection.MEAN_EVERY == 4
    sampled = np.concatenate([batches[k]["x"] for k in (0, 4, 8)])
    np.testing.assert_allclose(result.means["x"].mean, sampled.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(result.means["clipped"].mean,
                               np.clip(sampled, 0, 6).mean(axis=(0, 2, 3)), rtol=1e-6)
    # the histograms and the max still see every batch
    assert result.histograms["x"].count == sum(b["x"].size for b in batches)


def test_small_data_set_keeps_one_session_and_every_batch_for_means(monkeypatch):
    batches, sessions, run = _relu6_conv_run(monkeypatch, batches_count=5)
    result = run(6.0, expected=15)
    assert len(sessions) == 1 and 15 < collection.LEAN_MIN_SAMPLES
    every = np.concatenate([b["x"] for b in batches])
    np.testing.assert_allclose(result.means["x"].mean, every.mean(axis=(0, 2, 3)), rtol=1e-6)
    sessions.clear()
    run(6.0, expected=collection.LEAN_MIN_SAMPLES)
    assert len(sessions) == 2


def test_pooled_means_of_histogrammed_tensors_need_no_lean_session(monkeypatch):
    """"clipped" leaves the session for its histogram anyway: pooling its means would spare
    nothing, so one session without pooling takes every batch and numpy takes the means from
    every 4th batch."""
    batches, sessions, _ = _relu6_conv_run(monkeypatch, batches_count=9)
    result = collection.collect_histograms(_relu6_conv_model(), batches, ["x", "clipped"],
                                       pooled_means=["clipped"], expected_samples=1000)
    assert len(sessions) == 1 and not any("mean" in name for name in sessions[0])
    sampled = np.clip(np.concatenate([batches[k]["x"] for k in (0, 4, 8)]), 0, 6)
    np.testing.assert_allclose(result.means["clipped"].mean, sampled.mean(axis=(0, 2, 3)),
                               rtol=1e-6)
    assert result.histograms["clipped"].count == 27 * 2 * 16
    small = collection.collect_histograms(_relu6_conv_model(), batches, ["x", "clipped"],
                                      pooled_means=["clipped"], expected_samples=27)
    every = np.clip(np.concatenate([b["x"] for b in batches]), 0, 6)
    np.testing.assert_allclose(small.means["clipped"].mean, every.mean(axis=(0, 2, 3)), rtol=1e-6)


def test_image_batches_run_in_parts_like_smaller_batches(monkeypatch):
    """Batches of 6 run in parts of 4 and 2: every statistic equals a run fed those parts as
    batches (the histograms' grid comes from the first part)."""
    monkeypatch.setattr(collection, "SPLIT_MIN_SAMPLE_BYTES", 0)  # these samples are tiny
    batches, _, _ = _relu6_conv_run(monkeypatch, batches_count=3)
    big = [{"x": np.concatenate([batches[k]["x"], batches[k + 1]["x"]])} for k in (0, 1)]
    big[0]["x"][5] *= 10  # the first batch's largest values lie outside its first part
    parts = [{"x": b["x"][s:s + collection.RUN_SAMPLES]} for b in big for s in (0, 4)]
    assert [p["x"].shape[0] for p in parts] == [4, 2, 4, 2]

    def run(data):
        model = _relu6_conv_model()
        return collection.collect_histograms(model, data, ["x", "y"], max_only={"clipped": 6.0},
                                         pooled_means=["clipped"], expected_samples=12)

    whole, split = run(big), run(parts)
    assert whole.num_samples == split.num_samples == 12 and whole.num_batches == 2
    for name in ("x", "y"):
        np.testing.assert_array_equal(whole.histograms[name].hist, split.histograms[name].hist)
        assert whole.histograms[name].bin_width == split.histograms[name].bin_width
    first_part = float(np.abs(parts[0]["x"]).max())
    assert whole.histograms["x"].bin_width == grid_width(first_part, 2048) < grid_width(
        float(np.abs(big[0]["x"]).max()), 2048)
    np.testing.assert_allclose(whole.means["clipped"].mean, split.means["clipped"].mean, rtol=1e-12)
    assert whole.maxima["clipped"].abs_max == split.maxima["clipped"].abs_max


def _built_at_once(function, *args) -> Future:
    """Stands in for the background build of the lean session: done before the first batch, so
    which session runs each batch no longer depends on timing."""
    future = Future()
    future.set_result(function(*args))
    return future


def _record_runs(monkeypatch) -> list[tuple[bool, int]]:
    """(pooled, samples) of every session run, in order."""
    runs = []
    real_run = OutputBufferSets.run

    def recording(self, session, outputs, feeds):
        runs.append((any("clipped" in name for name in outputs), len(feeds["x"])))
        return real_run(self, session, outputs, feeds)

    monkeypatch.setattr(OutputBufferSets, "run", recording)
    return runs


def test_a_tensor_that_stays_zero_does_not_keep_batches_pooled(monkeypatch):
    """"y" (a conv with zero weights) never gets a grid. Batches run in parts in either session,
    so the grid could not depend on the session, and after the first one they need no pooling
    for it: every statistic equals a run whose batches all run pooled."""
    monkeypatch.setattr(collection, "SPLIT_MIN_SAMPLE_BYTES", 0)
    model = relu6_conv(np.zeros((2, 2, 1, 1)), 4)
    rng = np.random.default_rng(3)
    batches = [{"x": (rng.normal(size=(7, 2, 4, 4)) * 4).astype(np.float32)} for _ in range(10)]
    runs = _record_runs(monkeypatch)
    monkeypatch.setattr(collection, "in_background", _built_at_once)

    def run(bound):
        runs.clear()
        return collection.collect_histograms(model, batches, ["x", "y"], max_only={"clipped": bound},
                                         pooled_means=["clipped"], expected_samples=70)

    lean = run(6.0)
    pooled_parts = sum(pooled for pooled, _ in runs)
    # "y" has no grid, so every batch runs in parts of one sample: pooled, the means batches
    # 0, 4 and 8
    assert pooled_parts == 3 * 7
    assert {size for _, size in runs} == {1} and len(runs) == 70
    pooled = run(float("inf"))  # the max never reaches its bound: every batch pooled
    assert all(pooled_run for pooled_run, _ in runs) and len(runs) == 70
    assert not lean.histograms["y"].has_grid and lean.histograms["y"].count == 70 * 2 * 16
    for name in ("x", "y"):
        np.testing.assert_array_equal(lean.histograms[name].hist, pooled.histograms[name].hist)
        assert lean.histograms[name].bin_width == pooled.histograms[name].bin_width
    assert lean.maxima["clipped"].abs_max == pooled.maxima["clipped"].abs_max == 6.0
    np.testing.assert_array_equal(lean.means["clipped"].mean, pooled.means["clipped"].mean)


def test_pooled_runs_take_one_sample_and_lean_runs_the_budget(monkeypatch):
    monkeypatch.setattr(collection, "SPLIT_MIN_SAMPLE_BYTES", 0)
    monkeypatch.setattr(collection, "in_background", _built_at_once)
    model = relu6_conv(np.ones((2, 2, 1, 1)), 4)
    rng = np.random.default_rng(5)
    batches = [{"x": (rng.normal(size=(7, 2, 4, 4)) * 4).astype(np.float32)} for _ in range(10)]
    runs = _record_runs(monkeypatch)
    collection.collect_histograms(model, batches, ["x", "y"], max_only={"clipped": 6.0},
                              pooled_means=["clipped"], expected_samples=70)
    # pooled: the means batches 0, 4 and 8, in parts of one sample; lean: parts of 4 and 3
    assert [size for pooled, size in runs if pooled] == [1] * 21
    assert [size for pooled, size in runs if not pooled] == [4, 3] * 7


def test_an_abandoned_worker_ends_without_being_waited_for(monkeypatch):
    monkeypatch.setattr(ObserverWorker, "POLL_SECONDS", 0.01)
    worker = ObserverWorker()
    counted = []
    worker.submit([(counted.append, 1)])
    worker.drain()
    worker.abandon()
    worker.thread.join(timeout=5)
    assert not worker.thread.is_alive() and counted == [1]


def test_a_failing_run_leaves_no_thread_behind(monkeypatch):
    """An error in the middle of the batches (here: a batch of the wrong rank) unwinds without
    joining the threads, and they all end shortly after."""
    monkeypatch.setattr(ObserverWorker, "POLL_SECONDS", 0.01)
    before = {thread.name for thread in threading.enumerate()}
    batches, _, run = _relu6_conv_run(monkeypatch, batches_count=4)
    batches.append({"x": np.zeros((2, 4, 4), np.float32)})  # batch 4: a means batch, run pooled
    with pytest.raises(QtoolError, match="onnxruntime failed on a batch"):
        run(6.0, expected=1000)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
            thread.name.startswith("qtool-") and thread.name not in before
            for thread in threading.enumerate()):
        time.sleep(0.01)
    assert not [thread.name for thread in threading.enumerate()
                if thread.name.startswith("qtool-") and thread.name not in before]


def test_only_image_like_inputs_with_a_dynamic_batch_are_split():
    from onnx import TensorProto, helper

    def model(*shape):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
        return helper.make_model(graph)

    assert collection.splits_by_sample(model("N", 3, 8, 8))
    assert collection.splits_by_sample(model(-1, 3, 8, 8))  # Paddle2ONNX's way to say dynamic
    assert not collection.splits_by_sample(model(8, 3, 8, 8))  # static batch
    assert not collection.splits_by_sample(model("S", "N", 16))  # may be sequence-first


def test_run_samples_follow_the_observed_bytes_per_sample(monkeypatch):
    monkeypatch.setattr(collection, "RUN_OUTPUT_BYTES", 1000)
    values = [np.zeros((2, 25), np.float32), np.zeros((2, 25), np.float64)]  # 300 bytes a sample
    assert collection.run_samples(values, 2) == 3
    assert collection.run_samples(values * 4, 2) == 1  # 1200 bytes a sample: never under one
    assert collection.run_samples(values[:1], 2) == collection.RUN_SAMPLES  # 100: capped
    assert collection.run_samples([], 1) == collection.RUN_SAMPLES  # nothing taken out


@pytest.mark.parametrize("budget_samples", [1, 2, 4])
def test_runs_shrink_to_the_output_budget_and_change_no_statistic(monkeypatch, budget_samples):
    """Without pooling, the first batch runs in parts of one sample; its first run's observed
    bytes fix the size of every later part. Every statistic equals a run fed those parts as
    batches."""
    monkeypatch.setattr(collection, "SPLIT_MIN_SAMPLE_BYTES", 0)
    batches, _, _ = _relu6_conv_run(monkeypatch, batches_count=4)
    big = [{"x": np.concatenate([b["x"], b["x"][:2] * 3])} for b in batches]  # 5 samples each
    model = _relu6_conv_model()
    sizes = []
    real_run = OutputBufferSets.run

    def recording(self, session, outputs, feeds):
        values, token = real_run(self, session, outputs, feeds)
        sizes.append((len(feeds["x"]), sum(value.nbytes for value in values)))
        return values, token

    monkeypatch.setattr(OutputBufferSets, "run", recording)

    def run(data):
        sizes.clear()
        return collection.collect_histograms(model, data, ["x", "y", "clipped"], mean_axes={"x": 1})

    probe = run(big[:1])
    per_sample = sizes[0][1]
    monkeypatch.setattr(collection, "RUN_OUTPUT_BYTES", per_sample * budget_samples + per_sample // 2)
    whole = run(big)
    later = [budget_samples] * (5 // budget_samples) + [5 % budget_samples] * (5 % budget_samples > 0)
    assert [count for count, _ in sizes] == [1] * 5 + later * 3
    parts = [{"x": b["x"][start:start + count]} for index, b in enumerate(big)
             for start, count in _starts([1] * 5 if index == 0 else later)]
    split = run(parts)
    assert probe.num_samples == 5 and whole.num_samples == split.num_samples == 20
    for name in ("x", "y", "clipped"):
        np.testing.assert_array_equal(whole.histograms[name].hist, split.histograms[name].hist)
        assert whole.histograms[name].bin_width == split.histograms[name].bin_width
    np.testing.assert_allclose(whole.means["x"].mean, split.means["x"].mean, rtol=1e-12)


def _starts(counts: list[int]) -> list[tuple[int, int]]:
    starts = np.cumsum([0, *counts[:-1]])
    return list(zip(starts.tolist(), counts))


def test_only_batches_of_large_samples_are_split():
    def batch(count, side):
        return {"x": np.zeros((count, 3, side, side), np.float32), "m": np.ones((count, 5))}

    small = batch(8, 64)  # 48 KiB + 40 bytes per sample: runs whole
    assert [part is small for part in collection._split_batch(small, 4)] == [True]
    large = batch(10, 96)  # 108 KiB per sample: parts of 4, 4 and 2, every input cut alike
    parts = collection._split_batch(large, 4)
    assert [(len(p["x"]), len(p["m"])) for p in parts] == [(4, 4), (4, 4), (2, 2)]
    assert all(np.shares_memory(p["x"], large["x"]) for p in parts)  # views, no copies
    mismatched = {"x": large["x"], "m": np.ones((3, 5))}
    assert [part is mismatched for part in collection._split_batch(mismatched, 4)] == [True]
