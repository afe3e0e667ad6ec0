"""Q/DQ scales under FP16: weight scales below float16's smallest normal number are raised to
2**-14 (requantizing stored INT8 weights), and every scale is snapped to a float16 value."""

from __future__ import annotations

import logging

import numpy as np
import onnx

from qtool.graph.attributes import attribute
from qtool.quantize.fp16.numbers import FP16_MIN_NORMAL, half_safe_scale
from qtool.quantize.fp16.ops import DQ, FP16_QDQ_OPSET, Q
from qtool.quantize.fp16.working_graph import GraphUnderConversion

log = logging.getLogger("qtool")


def raise_tiny_weight_scales(g: GraphUnderConversion) -> None:
    """Weight scales below float16's smallest normal number (2**-14) become 2**-14, so the
    weights' DequantizeLinear can output float16 like every other (a float32 DQ would leave
    DQ -> Cast -> op). Such channels have |w| < 127 * 2**-14 (about 0.0078; near-dead,
    often all zero), so nothing clips and each weight moves by at most 2**-15. INT8 weights
    stored as constants are requantized to the new scale; a Q of float32 weights requantizes
    itself. Activation scales are left as they are (see the package notes)."""
    if g.opset < FP16_QDQ_OPSET:
        return
    g.constant_derived = g.closure(set(g.initializers) | set(g.constant_nodes), set())
    names = {n.input[1] for n in g.nodes if n.op_type in (Q, DQ) and len(n.input) > 1}
    for name in sorted(names):
        value = g.constant_value(name) if g.is_constant(name) else None
        if value is None or value.dtype != np.float32 or name in g.graph_outputs:
            continue
        tiny = (value > 0) & (value < FP16_MIN_NORMAL)
        readers = _weight_scale_readers(g, name) if tiny.any() else None
        if readers is None:
            continue
        raised = np.where(tiny, np.float32(FP16_MIN_NORMAL), value).astype(np.float32)
        stored = [n for n in readers if n.op_type == DQ and g.is_constant(n.input[0])]
        requantized = [_requantized(g, n, value, raised) for n in stored]
        if any(r is None for r in requantized):
            continue
        for node, weights in zip(stored, requantized):
            g.replace_constant(node.input[0], weights)
        g.replace_constant(name, raised)
        log.debug("fp16: %d weight scale(s) of %s raised to 2**-14", int(tiny.sum()), name)


def _weight_scale_readers(g: GraphUnderConversion, name: str) -> list[onnx.NodeProto] | None:
    """The Q/DQ nodes reading scale `name` when it quantizes weights only: every reader
    takes it as its scale and quantizes a constant (Q) or dequantizes a constant or one of
    those Q's outputs (DQ); None otherwise."""
    readers = [g.nodes[i] for i, slot in g.consumers.get(name, ()) if slot == 1]
    if not readers or len(readers) != len(g.consumers.get(name, ())):
        return None
    q_outputs = {n.output[0] for n in readers if n.op_type == Q}
    for node in readers:
        source = node.input[0]
        if node.op_type == Q and source in g.constant_derived:
            continue
        if node.op_type == DQ and (source in q_outputs or g.is_constant(source)):
            continue
        return None
    return readers


def _requantized(g: GraphUnderConversion, node: onnx.NodeProto, old: np.ndarray,
                 new: np.ndarray) -> np.ndarray | None:
    """The INT8 constant `node` dequantizes, on scale `new` instead of `old` (None when it
    is not plain symmetric INT8 read by this node alone)."""
    weights = g.constant_value(node.input[0])
    zero = g.constant_value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if (weights is None or weights.dtype != np.int8 or len(g.consumers.get(node.input[0], ())) != 1
            or (zero is not None and np.any(zero != 0)) or attribute(node, "block_size", 0)):
        return None
    if old.ndim == 1 and old.size > 1:
        axis = attribute(node, "axis", 1)
        axis = axis + weights.ndim if axis < 0 else axis
        shape = [1] * weights.ndim
        shape[axis] = old.size
        old, new = old.reshape(shape), new.reshape(shape)
    values = weights.astype(np.float64) * old.astype(np.float64) / new.astype(np.float64)
    return np.clip(np.round(values), -128, 127).astype(np.int8)


def snap_scales(g: GraphUnderConversion) -> None:
    """Round Q/DQ scales to float16-representable values (both nodes of a pair agree)."""
    if not any(g.nodes[i].op_type in (Q, DQ) for i in g.half):
        return
    for name in {n.input[1] for n in g.nodes if n.op_type in (Q, DQ) and len(n.input) > 1}:
        readers = g.consumers.get(name, ())
        if not g.is_constant(name) or name in g.graph_outputs or any(
                g.nodes[i].op_type not in (Q, DQ) or s != 1 for i, s in readers):
            continue
        value = g.constant_value(name)
        if value is None or value.dtype != np.float32 or not half_safe_scale(value):
            continue
        g.replace_constant(name, value.astype(np.float16).astype(np.float32))
