"""Topology's walks: readers looking forward through given op types, and the node a tensor comes
from looking back through them."""

from __future__ import annotations

from onnx import helper

from qtool.graph.topology import Topology
from tests.helpers.onnx_graphs import value


def _graph(nodes, outputs=("y",)):
    return helper.make_graph(nodes, "g", [value("x", [2])], [value(name, [2]) for name in outputs])


def test_consumer_nodes_name_each_read():
    nodes = [helper.make_node("Add", ["x", "x"], ["y"], name="add")]
    topo = Topology.of(_graph(nodes))
    assert [(node.name, slot) for node, slot in topo.consumer_nodes("x")] == [("add", 0), ("add", 1)]
    assert topo.consumer_nodes("y") == []


def test_reads_through_looks_past_given_ops_at_their_first_input():
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
        helper.make_node("Relu", ["r"], ["a"], name="relu"),
        helper.make_node("Reshape", ["a", "x"], ["b"], name="reshape_by_x"),  # x read as a shape
        helper.make_node("Identity", ["x"], ["y"], name="copy"),
    ]
    topo = Topology.of(_graph(nodes))
    reads, reaches_output = topo.reads_through("x", {"Reshape", "Identity"})
    assert [(topo.nodes[index].name, slot) for index, slot in reads] == [
        ("reshape_by_x", 1), ("relu", 0)]
    assert reaches_output  # through the Identity
    reads, reaches_output = topo.reads_through("a", set())
    assert [topo.nodes[index].name for index, _ in reads] == ["reshape_by_x"]
    assert not reaches_output


def test_origin_looks_back_through_given_ops():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Flatten", ["a"], ["f"], name="flatten"),
        helper.make_node("Constant", [], ["c"], name="const", value_float=1.0),
        helper.make_node("Identity", ["c"], ["y"], name="copy"),
    ]
    topo = Topology.of(_graph(nodes))
    assert topo.origin("f", {"Flatten"}) == 0
    assert topo.origin("f", {"Flatten", "Relu"}) is None  # a graph input
    assert topo.origin("y", {"Identity"}) == 2
    assert topo.origin("y", {"Identity", "Constant"}) == 2  # a node without inputs is the origin
    assert topo.origin("", {"Identity"}) is None


def test_origin_stops_at_a_cycle():
    nodes = [helper.make_node("Identity", ["b"], ["a"]), helper.make_node("Identity", ["a"], ["b"])]
    topo = Topology.of(_graph(nodes, outputs=("a",)))
    assert topo.origin("a", {"Identity"}) is None
