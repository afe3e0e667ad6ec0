import numpy as np
import onnxruntime as ort

from qtool.calib.histogram import AbsHistogram
from qtool.calib.runner import augment_with_outputs, collect_histograms
from qtool.graph.observe import tensors_to_observe
from tests.tiny_models import conv_relu_gemm


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
