"""Q/DQ structure: whether the model has Q/DQ at all, the opset and integer types they need, and
whether every QuantizeLinear has its DequantizeLinear (and every activation DQ its Q)."""

from __future__ import annotations

from collections.abc import Iterator

from onnx import TensorProto

from qtool.graph.op_types import PASS_THROUGH_OPS, QUANTIZE_LINEAR
from qtool.graph.topology import node_label
from qtool.quantize.check.findings import MODEL, Finding, finding, names
from qtool.quantize.check.graph import QdqGraph

INT8_TYPES = {TensorProto.INT8}
LOW_PRECISION_TYPES = {TensorProto.FLOAT8E4M3FN, TensorProto.INT4, TensorProto.FLOAT4E2M1}


def check_has_qdq(g: QdqGraph) -> Iterator[Finding]:
    if not g.qdq_nodes:
        yield finding("no-qdq", MODEL,
                      "no QuantizeLinear/DequantizeLinear nodes: nothing to check "
                      "(`qtool quantize` inserts them)")


def check_opset_per_channel(g: QdqGraph) -> Iterator[Finding]:
    if g.opset >= 13:
        return
    for node in g.qdq_nodes:
        if g.is_per_channel(node):
            yield finding("opset-per-channel", node,
                          f"per-channel {node.op_type} needs opset 13 (the model has opset "
                          f"{g.opset}); upgrade the model's opset")


def check_dtypes(g: QdqGraph) -> Iterator[Finding]:
    for node in g.qdq_nodes:
        elem = g.quantized_type(node)
        if not elem or elem in INT8_TYPES:
            continue
        type_name = TensorProto.DataType.Name(elem)
        if elem in LOW_PRECISION_TYPES:
            yield finding("qdq-dtype-low-precision", node,
                          f"quantizes to {type_name}: TensorRT runs it on recent GPUs only "
                          "(FP8: Ada/Hopper+, INT4: weight-only, FP4: Blackwell)")
            continue
        yield finding("qdq-dtype-unsupported", node, _unsupported_type(g, node, elem, type_name))


def _unsupported_type(g: QdqGraph, node, elem: int, type_name: str) -> str:
    if elem == TensorProto.UINT8 and node.op_type == QUANTIZE_LINEAR and not g.zero_point_name(node):
        return ("quantizes to UINT8, the ONNX default for a QuantizeLinear without "
                "zero-point (onnxruntime clips negatives; TensorRT would read INT8); "
                "add an INT8 zero-point 0")
    if elem == TensorProto.UINT8:
        return "uses UINT8; TensorRT runs INT8 (UINT8 only on DLA): use INT8 with zero-point 0"
    if elem == TensorProto.INT32:
        return ("uses INT32 (a quantized bias?); TensorRT takes INT8/FP8/INT4/FP4 Q/DQ "
                "only: keep biases in float")
    return f"uses {type_name}; TensorRT takes INT8 (or FP8/INT4/FP4) Q/DQ only"


def check_dangling(g: QdqGraph) -> Iterator[Finding]:
    for node in g.quantize_nodes:
        out = node.output[0]
        users = [user for user, _ in g.readers(out)]
        others = [user for user in users if not g.is_dequantize(user)]
        if not users and out not in g.graph_outputs:
            yield finding("dangling-quantize", node, f"output '{out}' is not used")
        elif others or out in g.graph_outputs:
            where = names(others) if others else "a graph output"
            yield finding("dangling-quantize", node,
                          f"integer output '{out}' feeds {where}, not a DequantizeLinear")
    for node in g.dequantize_nodes:
        data = node.input[0]
        if data in g.constant_derived:
            continue  # pre-quantized weights: DQ only is the normal form
        origin = g.topo.origin(data, PASS_THROUGH_OPS)
        source = None if origin is None else g.nodes[origin]
        if not g.is_quantize(source):
            where = "a graph input" if source is None else f"{source.op_type} '{node_label(source)}'"
            yield finding("dangling-dequantize", node,
                          f"input '{data}' comes from {where}, not a QuantizeLinear")
