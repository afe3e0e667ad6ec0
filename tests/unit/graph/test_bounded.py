"""Which tensors a bounded activation limits, and how calibration thresholds them."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from qtool.calib.histogram import AbsHistogram
from qtool.calib.thresholding import build_calibration
from qtool.graph.bounded import bounded_ranges


def _graph(nodes, initializers=(), opset=17):
    """A graph for the analysis only (never run, so not checked)."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _scalar(name, value):
    return numpy_helper.from_array(np.array(value, np.float32), name)


def test_clip_with_both_ends_and_what_keeps_its_range():
    nodes = [
        helper.make_node("Clip", ["x", "lo", "hi"], ["relu6"]),
        helper.make_node("MaxPool", ["relu6"], ["pooled"], kernel_shape=[2, 2]),
        helper.make_node("Clip", ["x", "lo"], ["relu"]),  # no max: unbounded
        helper.make_node("Concat", ["pooled", "relu"], ["mixed"], axis=1),
        helper.make_node("Concat", ["relu6", "relu6"], ["both"], axis=1),
        helper.make_node("Sigmoid", ["x"], ["gate"]),
        helper.make_node("Flatten", ["gate"], ["flat"]),
        helper.make_node("Add", ["flat", "flat"], ["sum"]),
    ]
    found = bounded_ranges(_graph(nodes, [_scalar("lo", 0.0), _scalar("hi", 6.0)]))
    assert found == {"relu6": (0.0, 6.0), "pooled": (0.0, 6.0), "both": (0.0, 6.0),
                     "gate": (0.0, 1.0), "flat": (0.0, 1.0)}


def test_clip_bounds_as_attributes_before_opset_11_and_as_constant_nodes():
    old = _graph([helper.make_node("Clip", ["x"], ["y"], min=0.0, max=6.0),
                  helper.make_node("Clip", ["y"], ["z"], min=0.0)], opset=10)
    assert bounded_ranges(old) == {"y": (0.0, 6.0)}
    nodes = [helper.make_node("Constant", [], ["hi"], value=numpy_helper.from_array(
                 np.array(1.0, np.float32))),
             helper.make_node("Clip", ["x", "", "hi"], ["y"]),  # min omitted: unbounded below
             helper.make_node("Clip", ["x", "hi", "hi"], ["z"]),
             helper.make_node("Tanh", ["x"], ["t"]),
             helper.make_node("Concat", ["t", "z"], ["tz"], axis=1)]
    assert bounded_ranges(_graph(nodes)) == {"z": (1.0, 1.0), "t": (-1.0, 1.0), "tz": (-1.0, 1.0)}


def test_bounded_tensors_take_their_max_and_say_so():
    rng = np.random.default_rng(0)
    values = np.minimum(rng.exponential(0.3, size=20000), 6.0)  # a ReLU6 output
    values[:10] = 6.0  # with a few saturated values
    histograms = {}
    for name in ("relu6", "other"):
        histograms[name] = AbsHistogram(2048)
        histograms[name].update(values.astype(np.float32))

    def build(method, bounded):
        return build_calibration(histograms, method=method, params={}, bins=2048, sha256="0" * 64,
                                 model_file=None, inputs=[], num_samples=1, num_batches=1,
                                 shard=None, config={}, bounded=bounded)

    plain = build("entropy", set())
    ruled = build("entropy", {"relu6", "not-observed"})
    assert plain.tensors["relu6"].amax < 6.0  # entropy clips the saturated pile
    assert ruled.tensors["relu6"].amax == histograms["relu6"].abs_max == 6.0
    assert ruled.tensors["relu6"].rule == "bounded" and ruled.tensors["other"].rule is None
    assert ruled.tensors["other"].amax == plain.tensors["other"].amax
    assert build("max", {"relu6"}).tensors["relu6"].rule == "bounded"


def test_tensors_observed_by_their_max_alone_keep_max_and_non_finite_count():
    from qtool.calib.histogram import EMPTY_BIN_WIDTH
    from qtool.calib.merge import merge
    from qtool.calib.pooled import PooledMax

    def build(maxima):
        return build_calibration({}, method="entropy", params={}, bins=2048, sha256="0" * 64,
                                 model_file=None, inputs=[], num_samples=1, num_batches=1,
                                 shard=None, config={}, maxima=maxima)

    shards = [build({"relu6": PooledMax(2.5, 3), "zero": PooledMax()}),
              build({"relu6": PooledMax(4.0, 1), "zero": PooledMax()})]
    relu6, zero = shards[0].tensors["relu6"], shards[0].tensors["zero"]
    assert (relu6.amax, relu6.abs_max, relu6.nan, relu6.count, relu6.rule) == (
        2.5, 2.5, 3, 0, "bounded")
    assert zero.amax == EMPTY_BIN_WIDTH and zero.abs_max == 0.0  # never a zero scale
    merged = merge(shards).calibration.tensors["relu6"]
    assert (merged.amax, merged.nan, merged.rule) == (4.0, 4, "bounded")  # max of maxima, sum


def test_only_float32_tensors_of_known_rank_3_or_more_are_pooled():
    from qtool.calib.routes import observation_routes

    def routes(elem_type, shape):
        dtype = np.float16 if elem_type == TensorProto.FLOAT16 else np.float32
        constants = [numpy_helper.from_array(np.array(0, dtype), "lo"),
                     numpy_helper.from_array(np.array(6, dtype), "hi"),
                     numpy_helper.from_array(np.ones((2, 3, 1, 1), dtype), "w")]
        graph = helper.make_graph(
            [helper.make_node("Clip", ["x", "lo", "hi"], ["c"]),
             helper.make_node("Conv", ["c", "w"], ["y"])], "g",
            [helper.make_tensor_value_info("x", elem_type, shape)],
            [helper.make_tensor_value_info("y", elem_type, None)], constants)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        return observation_routes(model, ["c"], bounded_ranges(model), {"c": 1})

    pooled = routes(TensorProto.FLOAT, ["N", 3, 4, 4])
    assert pooled.max_only == ["c"] and pooled.pooled_means == ["c"] and pooled.histograms == []
    for elem_type, shape in ((TensorProto.FLOAT16, ["N", 3, 4, 4]), (TensorProto.FLOAT, None)):
        whole = routes(elem_type, shape)
        assert whole.max_only == [] and whole.pooled_means == [] and whole.histograms == ["c"]
        assert whole.mean_axes == {"c": 1}
