"""Per weighted layer: the spread of its weight scales across output channels, the channels whose
range is degenerate, and the layers left in high precision.

Two kinds of model are read:

* a Q/DQ model (what `qtool quantize` writes, or any explicitly quantized ONNX): the scales are
  the ones its weight DequantizeLinear nodes hold, the weights are the FP32 constant in front of
  the QuantizeLinear or the dequantized INT8 constant;
* an FP32 model: the quantizer's own placement plan (with the calibration's amax) says which
  layers it would quantize and along which axis, and the scales are what it would write
  (qtool.quantize.scales.weight_scales).

Flags, per output channel c (max|w_c| is the channel's largest weight magnitude):

* ``all-zero``: every weight of the channel is 0 (its scale is the positive floor);
* ``tiny-scale``: per-channel scale below TINY_SCALE_RATIO x the layer's median scale, so the
  channel's range is negligible next to its neighbours (often a dead or pruned filter);
* ``rounds-to-zero``: with one per-tensor scale, max|w_c| <= scale / 2, so every weight of the
  channel quantizes to 0 and the channel is lost.

A Q/DQ model that stores INT8 weights keeps only the rounded values: a channel that rounded to
zero there reads as ``all-zero``. In Q/DQ models only weighted ops without any Q/DQ input are
listed as left in high precision; for FP32 models every node the quantizer skips is, with its
reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from qtool.graph.attributes import attribute
from qtool.graph.constants import constant_values
from qtool.graph.op_types import QDQ_OPS, WEIGHTED_OPS
from qtool.graph.topology import node_label
from qtool.graph.weights import weight_axis
from qtool.io.model import MIN_OPSET, ensure_opset
from qtool.placement import make_plan
from qtool.quantize.check import QdqGraph
from qtool.quantize.scales import weight_scales

TINY_SCALE_RATIO = 1e-3
ALL_ZERO = "all-zero"
TINY_SCALE = "tiny-scale"
ROUNDS_TO_ZERO = "rounds-to-zero"


@dataclass(frozen=True)
class FlaggedChannel:
    channel: int
    reason: str           # ALL_ZERO, TINY_SCALE or ROUNDS_TO_ZERO
    scale: float
    channel_amax: float

    def to_dict(self) -> dict:
        return {"channel": self.channel, "reason": self.reason, "scale": self.scale,
                "channel_amax": self.channel_amax}


@dataclass
class LayerScales:
    node: str
    op_type: str
    weight: str
    axis: int | None                 # quantization axis; None: one per-tensor scale
    scales: np.ndarray               # float32, one per channel (per-channel) or one value
    channel_amax: np.ndarray | None  # max|w| per output channel; None without a channel axis
    flagged: list[FlaggedChannel] = field(default_factory=list)

    @property
    def channels(self) -> int:
        if self.channel_amax is not None:
            return int(self.channel_amax.size)
        return int(self.scales.size)

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    def spread(self) -> tuple[float, float, float]:
        """(min, median, max) of the scales."""
        values = self.scales.astype(np.float64)
        return float(values.min()), float(np.median(values)), float(values.max())

    def to_dict(self) -> dict:
        low, median, high = self.spread()
        return {"node": self.node, "op_type": self.op_type, "weight": self.weight,
                "axis": self.axis, "channels": self.channels, "scale_min": low,
                "scale_median": median, "scale_max": high,
                "flagged": [flag.to_dict() for flag in self.flagged]}


@dataclass(frozen=True)
class KeptLayer:
    """A node left in high precision, and why."""

    node: str
    op_type: str
    reason: str

    def to_dict(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "reason": self.reason}


@dataclass
class LayerAnalysis:
    source: str                      # "qdq" (scales read from the model) or "plan" (FP32 model)
    layers: list[LayerScales]
    kept: list[KeptLayer]
    quantized_nodes: int             # nodes that run on quantized inputs
    activation_tensors: int          # activation tensors with a Q/DQ pair
    weighted_nodes: int              # weighted ops in the model

    @property
    def flagged_channels(self) -> int:
        return sum(len(layer.flagged) for layer in self.layers)

    def to_dict(self) -> dict:
        return {"source": self.source, "quantized_nodes": self.quantized_nodes,
                "activation_tensors": self.activation_tensors,
                "weighted_nodes": self.weighted_nodes,
                "layers": [layer.to_dict() for layer in self.layers],
                "kept": [kept.to_dict() for kept in self.kept]}


def channel_amax(weight: np.ndarray, axis: int | None) -> np.ndarray | None:
    """max|w| along every axis but `axis` (float64), or None when there is no channel axis."""
    if axis is None or weight.ndim == 0:
        return None
    magnitude = np.abs(np.asarray(weight, dtype=np.float64))
    others = tuple(i for i in range(magnitude.ndim) if i != axis)
    if magnitude.size == 0:
        return np.zeros(weight.shape[axis])
    return magnitude.max(axis=others) if others else magnitude


def flag_channels(scales: np.ndarray, amax: np.ndarray | None,
                  per_channel: bool) -> list[FlaggedChannel]:
    """The degenerate channels of one layer (rules in the module doc)."""
    if amax is None:
        return []
    scales = np.asarray(scales, dtype=np.float64).reshape(-1)
    flagged = []
    if per_channel:
        median = float(np.median(scales))
        for channel, (scale, peak) in enumerate(zip(scales, amax)):
            if peak == 0:
                flagged.append(FlaggedChannel(channel, ALL_ZERO, float(scale), 0.0))
            elif scale < TINY_SCALE_RATIO * median:
                flagged.append(FlaggedChannel(channel, TINY_SCALE, float(scale), float(peak)))
    else:
        scale = float(scales[0])
        for channel, peak in enumerate(amax):
            if peak == 0:
                flagged.append(FlaggedChannel(channel, ALL_ZERO, scale, 0.0))
            elif peak <= scale / 2:
                flagged.append(FlaggedChannel(channel, ROUNDS_TO_ZERO, scale, float(peak)))
    return flagged


def _layer(node: onnx.NodeProto, weight_name: str, weight: np.ndarray, scales: np.ndarray,
           axis: int | None, output_axis: int | None) -> LayerScales:
    """output_axis: the output-channel axis to analyse channels along (the quantization axis
    when per-channel)."""
    scales = np.asarray(scales, dtype=np.float32).reshape(-1)
    amax = channel_amax(weight, axis if axis is not None else output_axis)
    if amax is not None and axis is not None and amax.size != scales.size:
        amax = None  # a scale length that does not match the axis: nothing sound to compare
    return LayerScales(node_label(node), node.op_type, weight_name, axis, scales, amax,
                       flag_channels(scales, amax, axis is not None))


def analyse_layers(model: onnx.ModelProto, amax: dict[str, float] | None = None) -> LayerAnalysis:
    """Weight scales of every quantized weighted layer; Q/DQ models are read, FP32 models planned."""
    if any(node.op_type in QDQ_OPS for node in model.graph.node):
        return _from_qdq(model)
    return _from_plan(model, amax or {})


# -- FP32 model: what the quantizer would do ------------------------------------------------

def _from_plan(model: onnx.ModelProto, amax: dict[str, float]) -> LayerAnalysis:
    work = ensure_opset(model, MIN_OPSET)
    plan = make_plan(work, amax)  # the default options' placement
    values = constant_values(work)
    layers = []
    for index in sorted(plan.quantized):
        node = work.graph.node[index]
        if node.op_type not in WEIGHTED_OPS:
            continue
        for slot, name in enumerate(node.input[:2]):
            spec = plan.weights.get(name)
            if spec is None or name not in values:
                continue
            weight = np.asarray(values[name], dtype=np.float32)
            output_axis = spec.axis
            if output_axis is None:
                output_axis = weight_axis(node, slot, weight.shape).axis
            layers.append(_layer(node, name, weight, weight_scales(weight, spec.axis),
                                 spec.axis, output_axis))
    kept = [KeptLayer(skip.node, skip.op_type, f"{skip.reason}: {skip.detail}")
            for _, skip in sorted(plan.skipped.items())]
    weighted = sum(1 for node in work.graph.node if node.op_type in WEIGHTED_OPS)
    return LayerAnalysis("plan", layers, kept, len(plan.quantized), len(plan.activations),
                         weighted)


# -- Q/DQ model: what it holds ---------------------------------------------------------------


def _dq_weight(g: QdqGraph, dq: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray, int | None] | None:
    """(float weights, scales, axis) behind a weight DequantizeLinear, or None for activations."""
    scales = g.scale(dq)
    if scales is None:
        return None
    scales = np.asarray(scales, dtype=np.float32)
    axis = None
    stored = g.value(dq.input[0])
    weight = None
    if stored is not None:
        ndim = np.ndim(stored)
    else:
        quantize = g.producer_of(dq.input[0])
        if not g.is_quantize(quantize) or g.value(quantize.input[0]) is None:
            return None
        weight = np.asarray(g.value(quantize.input[0]), dtype=np.float32)
        ndim = weight.ndim
    if scales.size > 1:
        axis = int(attribute(dq, "axis", 1))
        axis = axis + ndim if axis < 0 else axis
        if not 0 <= axis < ndim:
            return None
    if weight is None:
        shape = [1] * ndim
        if axis is not None:
            shape[axis] = -1
        per_axis = scales.reshape(shape) if axis is not None else scales.reshape(())
        weight = np.asarray(stored, dtype=np.float32) * per_axis
    return weight, scales, axis


def _from_qdq(model: onnx.ModelProto) -> LayerAnalysis:
    g = QdqGraph(model)
    layers = []
    kept = []
    weighted = 0
    for node in g.nodes:
        if node.op_type not in WEIGHTED_OPS:
            continue
        weighted += 1
        found = False
        for slot, name in enumerate(node.input[:2]):
            dq = g.source_dequantize(name) if name else None
            if dq is None:
                continue
            found = True
            weight = _dq_weight(g, dq)
            if weight is None:
                continue  # an activation input
            values, scales, axis = weight
            output_axis = axis
            if output_axis is None and g.producer_of(name) is dq:
                output_axis = weight_axis(node, slot, values.shape).axis
            weight_name = dq.input[0]
            quantize = g.producer_of(dq.input[0])
            if g.is_quantize(quantize):
                weight_name = quantize.input[0]
            layers.append(_layer(node, weight_name, values, scales, axis, output_axis))
        if not found:
            kept.append(KeptLayer(node_label(node), node.op_type, "no Q/DQ on its inputs"))
    dq_outputs = {node.output[0] for node in g.dequantize_nodes if node.output}
    quantized_nodes = sum(1 for node in g.nodes if node.op_type not in QDQ_OPS
                          and any(name in dq_outputs for name in node.input))
    activations = {q.input[0] for q in g.quantize_nodes
                   if q.input and q.input[0] not in g.constant_derived}
    return LayerAnalysis("qdq", layers, kept, quantized_nodes, len(activations), weighted)
