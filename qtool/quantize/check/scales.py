"""Scales and zero-points: build-time constants, positive and finite scales, symmetric (zero)
zero-points, per-channel scales only on weights and along their output channels, and a Q that
agrees with its DQ.

A per-channel Q/DQ without an `axis` attribute is a warning: ONNX's default axis 1 is legal and
sometimes intended. When axis 1 is actually wrong for the weighted op that uses the weight, or
does not match the scale's length, the separate `per-channel-wrong-axis` /
`scale-shape-mismatch` errors say so.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import numpy as np
import onnx

from qtool.graph.attributes import attribute
from qtool.graph.op_types import (
    CAST_OPS,
    DEQUANTIZE_LINEAR,
    WEIGHT_INPUT,
    WEIGHTED_OPS,
    weight_output_axis,
)
from qtool.graph.topology import node_label
from qtool.quantize.check.findings import Finding, finding, format_values
from qtool.quantize.check.graph import QdqGraph


def same_values(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Equal shapes and values (NaN equals NaN); two missing values are the same too."""
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                                equal_nan=True)


def _constant_qparam(g: QdqGraph, node: onnx.NodeProto, name: str, what: str,
                     need: str) -> Generator[Finding, None, np.ndarray | None]:
    """Yields a finding when a scale or zero-point is not a build-time constant; returns its
    value, or None when it has none to check (computed from constants only: not a finding)."""
    value = g.value(name)
    if value is None and name not in g.constant_derived:
        yield finding("qparams-not-constant", node,
                      f"{what} '{name}' depends on run-time data; TensorRT needs {need}")
    return value


def check_scales(g: QdqGraph) -> Iterator[Finding]:
    for node in g.qdq_nodes:
        name = g.scale_name(node)
        if not name:
            continue
        scale = yield from _constant_qparam(g, node, name, "scale", "build-time constant scales")
        if scale is None:
            continue
        values = np.asarray(scale, dtype=np.float64).ravel()
        if values.size == 0:  # onnxruntime refuses it when it folds the DequantizeLinear
            yield finding("scale-shape-mismatch", node, f"scale '{name}' has no values")
            continue
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            where = "" if values.size == 1 else f" ({int(bad.sum())} of {values.size}, first at index {index})"
            yield finding("scale-invalid", node,
                          f"scale '{name}' is {values[index]:g}{where}; scales must be positive "
                          "and finite")


def check_zero_points(g: QdqGraph) -> Iterator[Finding]:
    for node in g.qdq_nodes:
        name = g.zero_point_name(node)
        if not name:
            continue
        zero_point = yield from _constant_qparam(g, node, name, "zero-point",
                                                 "a build-time constant 0")
        if zero_point is None:
            continue
        values = np.asarray(zero_point).astype(np.float64).ravel()
        nonzero = np.flatnonzero(values != 0)
        if nonzero.size:
            where = "" if values.size == 1 else f" ({nonzero.size} of {values.size} non-zero)"
            yield finding("zero-point-nonzero", node,
                          f"zero-point '{name}' is {values[nonzero[0]]:g}{where}; TensorRT "
                          "supports only symmetric quantization (zero-point 0)")
        scale = g.scale(node)
        if scale is not None and scale.size != values.size:
            yield finding("zero-point-shape", node,
                          f"zero-point '{name}' has {values.size} values but the scale has "
                          f"{scale.size}")


def _expected_weight_axis(consumer: onnx.NodeProto, slot: int, rank: int | None) -> int | None:
    """Output-channel axis of a weighted op's weight input; None when not a weight slot."""
    if slot != WEIGHT_INPUT:
        return None
    return weight_output_axis(consumer.op_type, rank, bool(attribute(consumer, "transB", 0)))


def _weight_consumers(g: QdqGraph, tensor: str) -> list[tuple[onnx.NodeProto, int]]:
    """(weighted op, slot) reading a tensor directly or through Identity/Cast."""
    reads, _ = g.topo.reads_through(tensor, CAST_OPS)
    return [(g.nodes[index], slot) for index, slot in reads
            if g.nodes[index].op_type in WEIGHTED_OPS]


def check_per_channel(g: QdqGraph) -> Iterator[Finding]:
    for node in g.qdq_nodes:
        scale = g.scale(node)
        if scale is None or scale.size <= 1:
            continue
        data = node.input[0]
        if data not in g.constant_derived:
            yield finding("per-channel-activation", node,
                          f"per-channel scale ({scale.size} values) on activation '{data}'; "
                          "TensorRT supports per-channel scales only for weights")
            continue
        yield from _per_channel_weight(g, node, scale)


def _per_channel_weight(g: QdqGraph, node: onnx.NodeProto, scale: np.ndarray) -> Iterator[Finding]:
    data = node.input[0]
    axis_attr = attribute(node, "axis")
    if axis_attr is None:
        yield finding("per-channel-implicit-axis", node,
                      f"per-channel scale ({scale.size} values) without an axis attribute: "
                      "ONNX then uses axis 1; write the axis explicitly")
    axis = 1 if axis_attr is None else int(axis_attr)
    shape = g.shapes.get(data)
    rank = len(shape) if shape is not None else None
    if rank is not None and rank > 0:
        axis = axis + rank if axis < 0 else axis
    if scale.ndim > 1 and attribute(node, "block_size", 0) == 0:
        yield finding("scale-shape-mismatch", node,
                      f"scale has shape {list(scale.shape)}; per-channel scales are 1-D")
        return
    if shape is not None and 0 <= axis < len(shape) and shape[axis] and scale.ndim == 1 \
            and shape[axis] != scale.size:
        yield finding("scale-shape-mismatch", node,
                      f"scale has {scale.size} values but axis {axis} of '{data}' "
                      f"{list(shape)} has {shape[axis]}")
    if node.op_type != DEQUANTIZE_LINEAR:
        return  # the weighted op reads the DQ; a Q's axis is compared with its DQ's
    for consumer, slot in _weight_consumers(g, node.output[0]):
        expected = _expected_weight_axis(consumer, slot, rank)
        if expected is not None and expected != axis:
            yield finding("per-channel-wrong-axis", node,
                          f"per-channel scale along axis {axis} of weight '{data}', but "
                          f"{consumer.op_type} '{node_label(consumer)}' has its output "
                          f"channels on axis {expected}")


def check_pairs(g: QdqGraph) -> Iterator[Finding]:
    for quantizer in g.quantize_nodes:
        for dq, _ in g.readers(quantizer.output[0]):
            if not g.is_dequantize(dq):
                continue
            differences = _pair_differences(g, quantizer, dq)
            if differences:
                yield finding("qdq-pair-mismatch", dq,
                              f"differs from its QuantizeLinear '{node_label(quantizer)}' in "
                              + ", ".join(differences))


def _pair_differences(g: QdqGraph, quantizer: onnx.NodeProto, dq: onnx.NodeProto) -> list[str]:
    differences = []
    q_scale, dq_scale = g.scale(quantizer), g.scale(dq)
    if q_scale is not None and dq_scale is not None and not same_values(q_scale, dq_scale):
        differences.append(f"scale {format_values(q_scale)} vs {format_values(dq_scale)}")
    q_zero, dq_zero = g.zero_point(quantizer), g.zero_point(dq)
    if (q_zero is not None or dq_zero is not None) and not same_values(
            _zeros_like_missing(q_zero, dq_zero), _zeros_like_missing(dq_zero, q_zero)):
        differences.append("zero-point")
    per_channel = g.is_per_channel(quantizer) or g.is_per_channel(dq)
    q_axis, dq_axis = attribute(quantizer, "axis", 1), attribute(dq, "axis", 1)
    if per_channel and q_axis != dq_axis:
        differences.append(f"axis {q_axis} vs {dq_axis}")
    return differences


def _zeros_like_missing(value: np.ndarray | None, other: np.ndarray | None) -> np.ndarray | None:
    """A missing zero-point means 0: compare it as zeros shaped like the given one."""
    if value is None and other is not None:
        return np.zeros_like(np.asarray(other, np.float64))
    return value
