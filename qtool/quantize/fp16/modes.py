"""Deciding which nodes run in float16: schema and op rules first, then the exceptions that keep
size arithmetic, constant folds and Q/DQ pairs in float32 (see the package notes)."""

from __future__ import annotations

import onnx

from qtool.graph.attributes import attribute
from qtool.graph.op_types import SHAPE_OPS
from qtool.quantize.fp16.numbers import FLOAT, HALF, half_safe_scale
from qtool.quantize.fp16.ops import ACCUMULATING_SCATTERS, DQ, Q
from qtool.quantize.fp16.order import has_subgraph
from qtool.quantize.fp16.working_graph import GraphUnderConversion


def decide_modes(g: GraphUnderConversion) -> None:
    """Fill g.half with the nodes that run in float16."""
    g.half = {i for i in range(len(g.nodes)) if _may_be_half(g, i)}
    constants = set(g.initializers) | set(g.constant_nodes)
    shape_seeds = {node.output[0] for node in g.nodes if node.op_type in SHAPE_OPS and node.output}
    # ConstantOfShape fills a data tensor: its value is not arithmetic on sizes.
    not_sizes = (Q, DQ, "ConstantOfShape")
    shape_derived = g.closure(shape_seeds, constants, skip=not_sizes)
    g.constant_derived = g.closure(constants, set(), skip=())
    for index, node in enumerate(g.nodes):
        if node.op_type in not_sizes:
            continue
        reads = [name for name in node.input if name]
        if reads and any(name in shape_derived for name in reads) and all(
                name in shape_derived or name in constants for name in reads):
            g.half.discard(index)  # arithmetic on sizes: keep exact
    _keep_fp32_quantizer_inputs(g)
    _keep_fp32_constant_folds(g)
    _decide_qdq(g)


def _may_be_half(g: GraphUnderConversion, index: int) -> bool:
    node, schema = g.nodes[index], g.schemas[index]
    if (node.op_type in g.fp32_ops or (node.name and node.name in g.fp32_nodes)
            or node.domain not in ("", "ai.onnx") or has_subgraph(node)
            or node.op_type == "Constant" or not schema.ok):
        return False
    if node.op_type == "Cast" and attribute(node, "to") not in (FLOAT, HALF):
        return False
    if node.op_type in ACCUMULATING_SCATTERS and attribute(node, "reduction", b"none") not in (b"none", "none"):
        return False
    for names, formal, outputs in ((node.input, schema.input, False), (node.output, schema.output, True)):
        for slot, name in enumerate(names):
            if not name:
                continue
            elem = g.types.get(name, 0)
            if elem == 0 and outputs and g.unused(name):
                continue  # an unread optional output (Dropout's mask): its type is moot
            if elem == 0:
                return False  # unknown type: never guess
            param = formal(slot)
            if param is None:
                return False
            convertible, type_str, _ = param
            if elem == FLOAT and not convertible and type_str != "tensor(float)":
                return False  # a type variable without float16 (QuantizeLinear-13's x)
    return True


def _keep_fp32_constant_folds(g: GraphUnderConversion) -> None:
    """Constant-only float computations read only as float32 stay float32 (no round trip)."""
    for index in reversed(range(len(g.nodes))):
        node = g.nodes[index]
        if index not in g.half or node.op_type in (Q, DQ):
            continue
        reads = [name for name in node.input if name]
        if not reads or not all(name in g.constant_derived for name in reads):
            continue
        float_outputs = [name for name in node.output if name and g.types.get(name) == FLOAT]
        if float_outputs and not any(g.wanted_half(name) for name in float_outputs):
            g.half.discard(index)


def _scale_is_half_safe(g: GraphUnderConversion, node: onnx.NodeProto) -> bool:
    scale = node.input[1] if len(node.input) > 1 else ""
    value = g.constant_value(scale)
    return value is not None and half_safe_scale(value)


def _keep_fp32_quantizer_inputs(g: GraphUnderConversion) -> None:
    """Q/DQ (float16-capable from opset 19) stay float32 when their scale is not a normal
    float16 number, and a Q of constants (weights) always reads them in float32."""
    for index, node in enumerate(g.nodes):
        if node.op_type not in (Q, DQ) or index not in g.half:
            continue
        if not _scale_is_half_safe(g, node) or (
                node.op_type == Q and node.input[0] in g.constant_derived):
            g.half.discard(index)


def _decide_qdq(g: GraphUnderConversion) -> None:
    """Q/DQ in float16 only where that saves a Cast: see the package notes."""
    for index, node in enumerate(g.nodes):  # DQ: float16 when a reader wants float16
        if node.op_type == DQ and index in g.half:
            out = node.output[0]
            readers = [(i, s) for i, s in g.consumers.get(out, ()) if g.nodes[i].op_type != Q]
            wants = any(g.required(i, s) == HALF for i, s in readers)
            if not wants and not (out in g.graph_outputs and not g.keep_io):
                g.half.discard(index)
    for index, node in enumerate(g.nodes):  # Q: float16 when its input arrives in float16
        if node.op_type == Q and index in g.half and g.produced_type(node.input[0]) != HALF:
            g.half.discard(index)
