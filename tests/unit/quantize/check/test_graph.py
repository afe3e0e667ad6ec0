"""QdqGraph: the facts checks read, on the topology placement uses."""

from __future__ import annotations

import numpy as np

from qtool.graph.op_types import CAST_OPS, PASS_THROUGH_OPS
from qtool.quantize.check import QdqGraph
from tests.helpers.qdq_graphs import clean_model, simple


def test_producers_readers_and_qdq_nodes():
    g = QdqGraph(clean_model())
    assert g.producer_of("c1").name == "c1"
    assert g.producer_of("x") is None
    assert [(node.name, slot) for node, slot in g.readers("x_deq")] == [("c1", 0), ("add", 1)]
    assert len(g.qdq_nodes) == 20
    assert len(g.quantize_nodes) == len(g.dequantize_nodes) == 10
    assert g.opset == 13


def test_final_consumers_are_each_listed_once():
    def build(b):
        x = b.qdq("x", "x")
        flat = b.node("Flatten", [x], "flat")
        b.node("Add", [flat, b.node("Reshape", [x, b.const("s", np.array([1, -1]))], "r")], "y",
               name="add")
    g = QdqGraph(simple(build))
    finals, reaches_output = g.final_consumers("x_deq", PASS_THROUGH_OPS)
    assert [node.name for node in finals] == ["add"]
    assert not reaches_output
    finals, reaches_output = g.final_consumers("y", CAST_OPS)
    assert finals == [] and reaches_output


def test_source_dequantize_looks_through_data_movement_and_relu():
    def build(b):
        relu = b.node("Relu", [b.node("Flatten", [b.qdq("x", "x")], "flat")], "relu")
        b.node("Softmax", [relu], "y", name="softmax")
    g = QdqGraph(simple(build))
    assert g.source_dequantize("relu").name == "x_dq"
    assert g.source_dequantize("y") is None
    assert g.source_dequantize("x") is None


def test_constants_values_and_qparams():
    g = QdqGraph(clean_model())
    q = g.producer_of("x_int")
    assert g.scale_name(q) == "x_scale" and g.zero_point_name(q) == "x_zp"
    assert float(g.scale(q)) == np.float32(0.05) and int(g.zero_point(q)) == 0
    assert "w1" in g.constant_derived and "x_int" not in g.constant_derived
    assert g.value("x_int") is None
    assert g.is_per_channel(g.producer_of("w1_int")) and not g.is_per_channel(q)
    assert g.shapes["w1"] == (4, 4, 3, 3)
