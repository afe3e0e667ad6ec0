"""Per-channel means for bias correction: which tensors, which axis, streaming, storage."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.calib.channelmean import ChannelMean
from qtool.errors import QtoolError
from qtool.graph.observe import channel_axes
from tests.tiny_models import _model, conv_relu_gemm, two_input_matmul


def test_axes_of_conv_gemm_and_matmul_inputs():
    assert channel_axes(conv_relu_gemm()) == {"x": 1, "flat": 1}
    # the attention MatMul has no constant operand; the projection's [5, 3] weight is 2-D
    assert channel_axes(two_input_matmul()) == {"sum": -1}


def test_axes_follow_trans_a_and_skip_non_constant_or_3d_weights():
    w2 = numpy_helper.from_array(np.ones((4, 3), np.float32), "w2")
    w3 = numpy_helper.from_array(np.ones((2, 4, 3), np.float32), "w3")
    nodes = [
        helper.make_node("Gemm", ["a", "w2"], ["g"], transA=1),
        helper.make_node("MatMul", ["b", "w3"], ["m"]),
        helper.make_node("Conv", ["c", "k"], ["v"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, 2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 5, 4]),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 2, 4, 4]),
         helper.make_tensor_value_info("k", TensorProto.FLOAT, [3, 2, 1, 1])],
        [helper.make_tensor_value_info("g", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, [2, 5, 3]),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 3, 4, 4])],
        [w2, w3],
    )
    assert channel_axes(model) == {"a": 0}


@pytest.mark.parametrize("axis, shape", [(1, (3, 5, 4, 4)), (-1, (2, 7, 6)), (0, (6, 9)),
                                          (1, (4, 3))])
def test_streamed_means_equal_the_mean_of_all_data(axis, shape):
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(b, *shape[1:])) * 3 + 1).astype(np.float32) for b in (2, 5, 1)]
    if axis == 0:  # the channel axis is the first: batches share it and split the other one
        batches = [(rng.normal(size=(shape[0], b)) + 2).astype(np.float32) for b in (2, 5, 1)]
    accumulator = ChannelMean(axis)
    for batch in batches:
        accumulator.update(batch)
    data = np.concatenate(batches, axis=1 if axis == 0 else 0).astype(np.float64)
    reduce = tuple(i for i in range(data.ndim) if i != axis % data.ndim)
    np.testing.assert_allclose(accumulator.mean, data.mean(axis=reduce), rtol=1e-6, atol=1e-6)
    assert accumulator.count == data.size // data.shape[axis]


def test_merge_and_round_trip():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 4, 5)).astype(np.float32), rng.normal(size=(2, 4, 5)).astype(np.float32)
    whole, left, right = ChannelMean(1), ChannelMean(1), ChannelMean(1)
    whole.update(a)
    whole.update(b)
    left.update(a)
    right.update(b)
    left.merge(right)
    np.testing.assert_allclose(left.mean, whole.mean, rtol=1e-12)
    restored = ChannelMean.from_arrays(left.to_arrays())
    np.testing.assert_array_equal(restored.mean, left.mean)
    assert restored.axis == 1 and restored.count == left.count
    assert ChannelMean.from_arrays({"counts": np.zeros(3)}) is None  # a file from before means
    with pytest.raises(QtoolError, match="malformed"):
        ChannelMean.from_arrays({"mean_sum": np.zeros((2, 2)), "mean_count": np.int64(1),
                                 "mean_axis": np.int64(1)})
    with pytest.raises(QtoolError, match="different channel counts"):
        left.merge(ChannelMean.from_arrays({"mean_sum": np.zeros(3), "mean_count": np.int64(1),
                                            "mean_axis": np.int64(1)}))


def test_a_channel_count_change_between_batches_is_an_error():
    accumulator = ChannelMean(1)
    accumulator.update(np.zeros((1, 3, 2), np.float32))
    with pytest.raises(QtoolError, match="channel count"):
        accumulator.update(np.zeros((1, 4, 2), np.float32))

