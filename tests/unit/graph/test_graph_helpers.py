"""Graph helpers used by quantization: topology, weight axes, skeleton shape inference."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from qtool.graph.shapes import KEEP_DATA_ELEMENTS, inference_skeleton, tensor_infos
from qtool.graph.topology import Topology, node_label
from qtool.graph.weights import WeightAxis, weight_axis
from tests.helpers.onnx_graphs import build, init, value


def test_topology_counts_every_use():
    then_branch = helper.make_graph([helper.make_node("Identity", ["a"], ["t"])], "then", [],
                                    [value("t", [2])])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Neg", ["a"], ["b"], name="neg"),
        helper.make_node("If", ["cond"], ["c"], name="if", then_branch=then_branch, else_branch=then_branch),
        helper.make_node("Add", ["b", "b"], ["y"], name="add"),
        helper.make_node("Abs", ["x"], [""]),
    ]
    graph = helper.make_graph(nodes, "g", [value("x", [2]), value("cond", [], TensorProto.BOOL)],
                              [value("y", [2]), value("c", [2])])
    topo = Topology.of(graph)
    assert topo.producer["b"] == 1
    assert topo.use_count("a") == 2  # neg, and the If body
    assert topo.only_consumer("a") is None
    assert topo.use_count("b") == 2 and topo.only_consumer("b") is None  # same node, twice
    assert topo.only_consumer("x") is None
    assert topo.use_count("y") == 1 and topo.only_consumer("y") is None  # a graph output
    assert topo.only_consumer("cond") == 2
    assert node_label(nodes[4]) == "<unnamed Abs>"
    assert node_label(helper.make_node("Abs", ["x"], ["z"])) == "z"


@pytest.mark.parametrize("op, slot, shape, attrs, expected", [
    ("Conv", 1, (8, 3, 3, 3), {}, 0),
    ("ConvTranspose", 1, (3, 8, 3, 3), {}, 1),
    ("ConvTranspose", 1, (4, 4, 3, 3), {"group": 2}, None),
    ("Gemm", 1, (8, 4), {}, 1),
    ("Gemm", 1, (4, 8), {"transB": 1}, 0),
    ("MatMul", 1, (8, 4), {}, 1),
    ("MatMul", 1, (2, 8, 4), {}, None),
    ("MatMul", 1, (8,), {}, None),
    ("MatMul", 0, (8, 4), {}, None),
])
def test_weight_axis(op, slot, shape, attrs, expected):
    node = helper.make_node(op, ["a", "b"], ["y"], **attrs)
    result = weight_axis(node, slot, shape)
    assert result.axis == expected
    assert (result.reason is None) == (expected is not None)


def test_conv_transpose_per_tensor_is_requested_not_a_fallback():
    node = helper.make_node("ConvTranspose", ["a", "b"], ["y"])
    assert weight_axis(node, 1, (3, 8, 3, 3), conv_transpose_per_tensor=True) == WeightAxis(None, None)


def test_skeleton_drops_large_float_data_but_keeps_types_and_shapes():
    big = np.ones((64, 64), np.float32)
    shape = np.array([64, 64], np.int64)
    nodes = [
        helper.make_node("Constant", [], ["c"], value=onnx.numpy_helper.from_array(big)),
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "c"], ["s"]),
        helper.make_node("Reshape", ["s", "shape"], ["y"]),
    ]
    model = build(nodes, [value("x", [64, 64])], [value("y", [64, 64])],
                  [init("w", big), init("shape", shape)])
    skeleton = inference_skeleton(model)
    w = next(t for t in skeleton.graph.initializer if t.name == "w")
    assert list(w.dims) == [64, 64] and not w.raw_data and not w.float_data
    assert big.size > KEEP_DATA_ELEMENTS
    kept = next(t for t in skeleton.graph.initializer if t.name == "shape")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(kept), shape)
    assert not skeleton.graph.node[0].attribute[0].t.raw_data
    assert model.graph.initializer[0].raw_data  # the original keeps its data
    infos = tensor_infos(model)
    assert infos["h"].elem_type == TensorProto.FLOAT and infos["h"].shape == (64, 64)
    assert infos["s"].shape == (64, 64) and infos["y"].shape == (64, 64)
    assert infos["c"].shape == (64, 64) and infos["shape"].elem_type == TensorProto.INT64


def test_types_fall_back_to_the_skeleton_when_the_model_cannot_be_serialised(monkeypatch):
    """Over 2 GB, shape inference on the full model fails; calibration must still see the types."""
    from qtool.graph.observe import tensors_to_observe
    from qtool.graph.types import float_tensors

    real = onnx.shape_inference.infer_shapes

    def refuse_weights(model, *args, **kwargs):
        if any(len(t.raw_data) > 4096 for t in model.graph.initializer):
            raise ValueError("Message onnx.ModelProto exceeds maximum protobuf size of 2GB")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", refuse_weights)
    big = np.ones((64, 64), np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w"], ["y"])]
    model = build(nodes, [value("x", [1, 64])], [value("y", [1, 64])], [init("w", big)])
    assert {"x", "h", "r", "y"} <= float_tensors(model)
    assert tensors_to_observe(model) == ["x", "r"]
    assert tensor_infos(model)["r"].shape == (1, 64)
