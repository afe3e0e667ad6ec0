"""Placement conformance: Q/DQ where TensorRT fuses it into INT8 layers, and nowhere it only
costs time. These are the placement rules (qtool's own, in the placement package) seen from the
model's side, read from the same op table (graph/op_types), so a model quantize writes passes.

Data movement (Reshape, Transpose, Slice, Cast, ...) and max pooling commute with per-tensor
scaling; TensorRT moves Q/DQ across them, so these checks look through them.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx

from qtool.graph.op_types import (
    AVERAGE_POOL_OPS,
    CAST_OPS,
    FOLDED_INTO_CONV_OPS,
    INT8_COMPUTE_OPS,
    INT8_CONSUMER_OPS,
    PASS_THROUGH_OPS,
    RELU_LIKE_OPS,
    RESIDUAL_ADD_OPS,
    RESIDUAL_FUSING_OPS,
    SCALE_SHARING_OPS,
    WEIGHTED_DATA_INPUTS,
    WEIGHTED_OPS,
)
from qtool.graph.topology import node_label
from qtool.quantize.check.findings import Finding, finding, format_values, names
from qtool.quantize.check.graph import QdqGraph
from qtool.quantize.check.scales import same_values


def check_weighted_outputs(g: QdqGraph) -> Iterator[Finding]:
    for node in g.nodes:
        if node.op_type not in WEIGHTED_OPS or not node.output:
            continue
        out = node.output[0]
        # Casts between the op and its Q (FP16 conversion below opset 19) change nothing here.
        users, output_use = g.final_consumers(out, CAST_OPS)
        quantizers = [user for user in users if g.is_quantize(user)]
        if not quantizers:
            continue
        others = [user for user in users if not g.is_quantize(user)]
        problems = _output_qdq_problems(g, node, quantizers, others, output_use)
        if problems:
            yield finding("weighted-output-quantized", node,
                          f"output '{out}' is quantized by {names(quantizers)} but "
                          + "; ".join(problems)
                          + ": quantize the inputs of the next weighted op instead")


def _output_qdq_problems(g: QdqGraph, node: onnx.NodeProto, quantizers: list[onnx.NodeProto],
                         others: list[onnx.NodeProto], output_use: bool) -> list[str]:
    """Why the Q/DQ pairs on a weighted op's output cost more than they gain (nothing if not)."""
    problems: list[str] = []
    blocked: list[onnx.NodeProto] = []
    readers: list[onnx.NodeProto] = []  # every node reading the dequantized output
    to_output = False
    for quantizer in quantizers:
        for dq, _ in g.readers(quantizer.output[0]):
            if not g.is_dequantize(dq):
                continue
            finals, reaches = g.final_consumers(dq.output[0], PASS_THROUGH_OPS)
            to_output |= reaches
            readers += finals
            blocked += [f for f in finals if f.op_type not in INT8_COMPUTE_OPS
                        and not _residual_of_other_conv(g, f, node)
                        and all(f is not b for b in blocked)]
    # Read in float too, the output cannot be written in INT8, so the Q runs alone. That is
    # the price of a next weighted op (or Concat, or residual Add) in INT8, which needs its
    # input quantized; an average pool gains too little from it.
    if (others or output_use) and readers and all(
            f.op_type in AVERAGE_POOL_OPS for f in readers):
        problems.append("the float output is also used by "
                        + (names(others) if others else "the graph output")
                        + f", so the Q runs alone for {names(readers)} only")
    if blocked:
        problems.append(f"the Q/DQ then feeds {names(blocked)}, which would otherwise fuse "
                        f"into the {node.op_type}")
    if to_output:
        problems.append("the Q/DQ then reaches a graph output")
    return problems


def _residual_of_other_conv(g: QdqGraph, add: onnx.NodeProto, source: onnx.NodeProto) -> bool:
    """True when `add` is an Add that fuses into a conv other than `source`: one of its inputs
    comes straight (through a folded BatchNormalization at most) from another quantized Conv
    that feeds nothing else. The dequantized value is then that fusion's residual input, which
    is exactly where TensorRT wants a Q/DQ; the Add was never going to fuse into `source`."""
    if add.op_type not in RESIDUAL_ADD_OPS:
        return False
    for tensor in add.input:
        consumer = add
        while tensor:
            users = [user for user, _ in g.readers(tensor)]
            producer = g.producer_of(tensor)
            if len(users) != 1 or users[0] is not consumer or tensor in g.graph_outputs \
                    or producer is None:
                break
            if producer.op_type in FOLDED_INTO_CONV_OPS and producer.input:
                consumer, tensor = producer, producer.input[0]
                continue
            if producer.op_type in RESIDUAL_FUSING_OPS and producer is not source and \
                    g.source_dequantize(producer.input[0]) is not None:
                return True
            break
    return False


def check_dq_consumers(g: QdqGraph) -> Iterator[Finding]:
    through = PASS_THROUGH_OPS | RELU_LIKE_OPS
    for node in g.dequantize_nodes:
        finals, _ = g.final_consumers(node.output[0], through)
        unfused = [f for f in finals if f.op_type not in INT8_CONSUMER_OPS]
        if unfused:
            yield finding("dq-unfused-consumer", node,
                          f"feeds {names(unfused)}, which TensorRT cannot run in INT8: the "
                          "Q/DQ only adds rounding error and time there")


def check_partially_quantized(g: QdqGraph) -> Iterator[Finding]:
    for node in g.nodes:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < WEIGHTED_DATA_INPUTS:
            continue
        inputs = list(node.input[:WEIGHTED_DATA_INPUTS])
        quantized = [g.source_dequantize(name) is not None for name in inputs]
        if any(quantized) and not all(quantized):
            done = inputs[quantized.index(True)]
            missing = inputs[quantized.index(False)]
            role = "weight" if missing in g.constant_derived else "input"
            yield finding("partially-quantized", node,
                          f"'{done}' is quantized but {role} '{missing}' is not: TensorRT runs "
                          f"the {node.op_type} in float and the Q/DQ only costs time")


def check_concat_scales(g: QdqGraph) -> Iterator[Finding]:
    for node in g.nodes:
        if node.op_type not in SCALE_SHARING_OPS:
            continue
        inputs = [name for name in node.input if name]
        sources = [g.source_dequantize(name) for name in inputs]
        if not any(sources):
            continue
        plain = [name for name, dq in zip(inputs, sources) if dq is None and name not in g.constant_derived]
        if plain:
            yield finding("concat-scale-mismatch", node,
                          f"inputs {', '.join(repr(n) for n in plain)} are not quantized while "
                          "others are: TensorRT runs the Concat in float")
            continue
        scales = [(dq, g.scale(dq)) for dq in sources if dq is not None]
        if any(scale is None for _, scale in scales):
            continue
        first = scales[0][1]
        if any(not same_values(first, scale) for _, scale in scales[1:]):
            listed = ", ".join(f"{format_values(s)} from '{node_label(dq)}'" for dq, s in scales)
            yield finding("concat-scale-mismatch", node,
                          f"inputs have different scales ({listed}): TensorRT requantizes them; "
                          "give all Concat inputs one scale")
