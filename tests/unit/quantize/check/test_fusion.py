"""Placement conformance: Q/DQ where TensorRT fuses it (weighted inputs, residual Adds, pools,
Concats with one scale) and nowhere it only costs time."""

from __future__ import annotations

import numpy as np
import pytest

from qtool.quantize.check import check_model
from tests.helpers.qdq_graphs import clean_model, found, simple


def test_quantized_conv_output_before_relu():
    assert found(clean_model(relu_before_q=False)) == {("weighted-output-quantized", "c1")}


def test_quantized_weighted_output_reaching_the_graph_output():
    def build(b):
        c = b.node("Conv", [b.qdq("x", "x"), b.weight("w", (2, 4, 1, 1))], "c", name="conv")
        b.node("Identity", [b.qdq(c, "c")], "y")
    findings = check_model(simple(build)).findings
    assert {(f.code, f.node) for f in findings} == {("weighted-output-quantized", "conv")}
    assert "graph output" in findings[0].message


def test_quantized_weighted_output_feeding_the_next_conv_is_fine():
    def build(b):
        c = b.node("Conv", [b.qdq("x", "x"), b.weight("w", (4, 4, 1, 1))], "c", name="conv")
        b.node("Conv", [b.qdq(c, "c"), b.weight("w2", (2, 4, 1, 1))], "y", name="conv2")
    assert found(simple(build)) == set()


def residual_block(b, *, other: str = "Conv", batchnorm: bool = False) -> None:
    """conv -> Q/DQ, read by the next conv and as the residual of an Add whose other input
    comes from `other` (a Conv: the Add fuses there; a Relu: it fuses nowhere)."""
    c = b.node("Conv", [b.qdq("x", "x"), b.weight("w", (4, 4, 1, 1))], "c", name="conv")
    skip = b.qdq(c, "c")
    branch = b.node("Conv", [skip, b.weight("w2", (4, 4, 1, 1))], "c2", name="conv2")
    if other != "Conv":
        branch = b.node(other, [branch], "act", name="act")
    if batchnorm:
        stats = [b.const(f"bn_{k}", np.full(4, v, np.float32))
                 for k, v in (("g", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0))]
        branch = b.node("BatchNormalization", [branch, *stats], "bn", name="bn")
    b.node("Add", [branch, skip], "y", name="add")


@pytest.mark.parametrize("batchnorm", [False, True])
def test_quantized_weighted_output_as_the_residual_of_another_convs_add_is_fine(batchnorm):
    # what the residual rule writes between two blocks (EfficientNet, ResNet): the Add fuses
    # into conv2, with the Q/DQ of conv's output as its residual input
    assert found(simple(lambda b: residual_block(b, batchnorm=batchnorm))) == set()


def test_quantized_weighted_output_feeding_an_add_that_fuses_nowhere():
    findings = check_model(simple(lambda b: residual_block(b, other="Relu"))).findings
    assert {(f.code, f.node) for f in findings} == {("weighted-output-quantized", "conv")}
    assert "Add 'add'" in findings[0].message


def test_weighted_output_also_used_in_float_by_the_next_conv_is_fine():
    # the Q cannot fuse into conv (its float output is needed), but conv2 runs in INT8 only
    # through it: that is TensorRT's rule (quantize every input of a weighted op)
    def build(b):
        c = b.node("Conv", [b.qdq("x", "x"), b.weight("w", (4, 4, 1, 1))], "c", name="conv")
        c2 = b.node("Conv", [b.qdq(c, "c"), b.weight("w2", (4, 4, 1, 1))], "c2", name="conv2")
        b.node("Sub", [c2, c], "y", name="sub")
    assert found(simple(build)) == set()


def attention_block(b, *, pool_quantized: bool, conv_reader: bool = False) -> None:
    """PP-OCRv6's attention: c = conv(x); a = hardsigmoid(conv(global_pool(c))); y = c + c * a.
    The pool reads c through Q/DQ or in float; with `conv_reader` a third conv reads c too."""
    c = b.node("Conv", [b.qdq("x", "x"), b.weight("w", (4, 4, 1, 1))], "c", name="conv")
    pooled = b.node("GlobalAveragePool", [b.qdq(c, "c") if pool_quantized else c], "p", name="gap")
    a = b.node("Conv", [b.qdq(pooled, "p"), b.weight("w2", (4, 4, 1, 1))], "a0", name="conv_se")
    a = b.node("HardSigmoid", [a], "a", name="hsig")
    m = b.node("Mul", [c, a], "m", name="mul")
    y = b.node("Add", [c, m], "y" if not conv_reader else "s", name="add")
    if conv_reader:
        c3 = b.node("Conv", [b.qdq(c, "c3"), b.weight("w3", (4, 4, 1, 1))], "c3", name="conv3")
        b.node("Add", [y, c3], "y", name="sum")


def test_weighted_output_quantized_only_for_a_pool_while_read_in_float():
    findings = check_model(simple(lambda b: attention_block(b, pool_quantized=True))).findings
    assert {(f.code, f.node) for f in findings} == {("weighted-output-quantized", "conv")}
    assert ("also used by Mul 'mul', Add 'add', so the Q runs alone for GlobalAveragePool 'gap' "
            "only") in findings[0].message
    assert found(simple(lambda b: attention_block(b, pool_quantized=False))) == set()
    # a conv reading the output needs its Q anyway
    assert found(simple(lambda b: attention_block(b, pool_quantized=True, conv_reader=True))) == set()


@pytest.mark.parametrize("op", ["Softmax", "Sigmoid", "LayerNormalization", "Mul"])
def test_dequantize_feeding_an_op_without_int8(op):
    def build(b):
        x = b.qdq("x", "x")
        if op == "LayerNormalization":
            b.node(op, [x, b.const("g", np.ones(6, np.float32))], "y", name="op")
        elif op == "Mul":
            b.node(op, [x, x], "y", name="op")
        else:
            b.node(op, [x], "y", name="op")
    findings = check_model(simple(build, opset=17)).findings
    assert {(f.code, f.node) for f in findings} == {("dq-unfused-consumer", "x_dq")}
    assert f"{op} 'op'" in findings[0].message


def test_dequantize_seen_through_reshape_and_relu():
    def build(b):
        flat = b.node("Flatten", [b.qdq("x", "x")], "flat")
        b.node("Softmax", [b.node("Relu", [flat], "relu")], "y", name="softmax")
    assert found(simple(build)) == {("dq-unfused-consumer", "x_dq")}


@pytest.mark.parametrize("quantize_input", [True, False])
def test_partially_quantized_weighted_op(quantize_input):
    def build(b):
        x = b.qdq("x", "x") if quantize_input else "x"
        w = b.const("wf", np.ones((2, 4, 1, 1), np.float32)) if quantize_input else b.weight("w", (2, 4, 1, 1))
        b.node("Conv", [x, w], "y", name="conv")
    findings = check_model(simple(build)).findings
    assert {(f.code, f.node) for f in findings} == {("partially-quantized", "conv")}
    assert ("weight 'wf'" in findings[0].message) == quantize_input


def test_concat_inputs_with_different_scales():
    findings = check_model(clean_model(branch_scale=0.2)).findings
    assert {(f.code, f.node) for f in findings} == {("concat-scale-mismatch", "cat")}
    assert "0.1 from 'r2_dq'" in findings[0].message and "0.2 from 'r3_dq'" in findings[0].message


def test_concat_with_an_unquantized_input():
    def build(b):
        b.node("Concat", [b.qdq("x", "x"), "x"], "y", name="cat", axis=1)
    findings = check_model(simple(build)).findings
    assert {(f.code, f.node) for f in findings} == {("concat-scale-mismatch", "cat")}
    assert "not quantized" in findings[0].message


# -- placement and check read one op table: what placement quantizes, check accepts ------------

def _tiny_models():
    from tests import tiny_models
    from tests.helpers import onnx_graphs
    from tests.helpers import placement_models as placed

    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 8)).astype(np.float32)
    return {
        "conv_relu_gemm": tiny_models.conv_relu_gemm(batch=1),
        "two_input_matmul": tiny_models.two_input_matmul(),
        "relu6_conv": tiny_models.relu6_conv(rng.normal(size=(3, 2, 1, 1)), 4),
        "state_step": tiny_models.state_step(batch=1),
        "sequence_head": tiny_models.sequence_head(rng.normal(size=(6, 4))),
        "attention_block": onnx_graphs.attention_block(w, w.T.copy(), w + 1),
        "conv_bn_relu": placed.conv_bn_relu()[0],
        "attention": placed.attention()[0],
        "conv_transpose": placed.conv_transpose(1)[0],
        "grouped_conv_transpose": placed.conv_transpose(2)[0],
        "identity_residual": placed.identity_residual(),
        "two_conv_residual": placed.two_conv_residual(True),
        "pooling": placed.pooling_model(),
        "pooled_attention": placed.pooled_attention(),
        "pooled_attention_conv_reader": placed.pooled_attention(conv_reader=True),
        "concat": placed.concat_model(True),
        "constant_node_conv": placed.constant_node_conv()[0],
        "three_convs": placed.three_convs(),
    }


@pytest.mark.parametrize("name", list(_tiny_models()))
def test_every_op_placement_quantizes_is_one_check_accepts(name):
    from qtool.graph.observe import tensors_to_observe
    from qtool.graph.op_types import WEIGHTED_DATA_INPUTS, WEIGHTED_OPS
    from qtool.quantize.api import quantize_model
    from qtool.quantize.check import QdqGraph

    model = _tiny_models()[name]
    amax = {tensor: 1.0 + index for index, tensor in enumerate(tensors_to_observe(model))}
    quantized, summary = quantize_model(model, amax)
    assert summary.quantized, "placement quantized nothing: the model tests nothing here"
    report = check_model(quantized, ignore=("onnxruntime-load",))
    assert report.passed(strict=True), [finding.format() for finding in report.findings]
    # the weighted ops placement quantized are the ones check sees quantized, whole
    g = QdqGraph(quantized)
    seen = {node.op_type: 0 for node in g.nodes if node.op_type in WEIGHTED_OPS}
    for node in g.nodes:
        if node.op_type in WEIGHTED_OPS and all(
                g.source_dequantize(name) is not None for name in node.input[:WEIGHTED_DATA_INPUTS]):
            seen[node.op_type] += 1
    assert {op: count for op, count in seen.items() if count} == {
        op: count for op, count in summary.quantized.items() if op in WEIGHTED_OPS}
