"""SmoothQuant: migrate activation outliers into the weights that read them.

Xiao et al. 2022. Transformer activations have a few channels (last axis) far larger than the
rest, and a per-tensor activation scale spends its range on them. For Y = X W with X [..., K] and
a constant W [K, N], dividing channel j of X by s_j and multiplying row j of W by s_j leaves Y
unchanged; the division is absorbed by the op producing X, so the graph stays as it is. With
a_j = max |X_j| over calibration data and w_j = max |W[j, :]| (the largest over every op
reading X, which all take the same s),

    s_j = a_j^alpha / w_j^(1 - alpha)

flattens X's channels (alpha = 0.5 meets halfway); channels where a_j or w_j is zero keep 1 and
s is kept within [1/max_scale, max_scale].

X qualifies when every read of it is the data input of a MatMul with a constant 2-D weight or of
a Gemm (transA = 0) with a constant B (Shape and Size reads aside), it is not a graph output, and its producer can take 1/s on
the last axis through constants only:
  LayerNormalization (axis -1; scale and bias; its mean and inverse-deviation outputs unused),
  Mul by a constant whose last axis has length K (the affine part of a decomposed LayerNorm),
  Add of such a constant, when the other input's producer qualifies too and nothing else reads it,
  MatMul with a constant 2-D weight (its columns), Gemm with a constant B (columns of B', and
  C when its last axis has length K).
Everything rewritten must be an unshared float32 constant. Arithmetic is float64; each constant
is rounded to float32 once. Runs on the FP32 model before calibration: the activations change,
so calibration must observe the smoothed model. The input model is not modified.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from qtool.graph.attributes import attribute
from qtool.graph.op_types import SHAPE_OPS
from qtool.graph.topology import Topology, node_label
from qtool.quantize.rescale import (
    STANDARD_DOMAINS,
    Constants,
    Skipped,
    clamp_scales,
    copy_model,
    count_reasons,
)

# Reason codes for activations not smoothed (stable: reports count them).
OTHER_READERS = "other_readers"
UNSUPPORTED_WEIGHT = "unsupported_weight"
CANNOT_ABSORB = "cannot_absorb"
CHANNEL_MISMATCH = "channel_mismatch"
NO_CHANNEL_ABSMAX = "no_channel_absmax"


@dataclass
class SmoothedTensor:
    tensor: str
    producer: str  # "OpType label" of the op (chain) that absorbed 1/s
    consumers: list[str]
    channels: int
    scale_min: float
    scale_max: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SkippedTensor:
    tensor: str
    reason: str
    detail: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Smoothing:
    """What the pass did; `scales` holds s (float64) of every smoothed tensor."""

    smoothed: list[SmoothedTensor] = field(default_factory=list)
    skipped: list[SkippedTensor] = field(default_factory=list)
    scales: dict[str, np.ndarray] = field(default_factory=dict)
    alpha: float = 0.5

    def skipped_by_reason(self) -> dict[str, int]:
        return count_reasons(self.skipped)

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "smoothed": len(self.smoothed),
                "smoothed_tensors": [s.to_dict() for s in self.smoothed],
                "skipped": [s.to_dict() for s in self.skipped],
                "skipped_by_reason": self.skipped_by_reason()}


# ---------------------------------------------------------------------------------------------
# Pure numerics


def smoothing_scales(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float = 0.5,
                     max_scale: float = 1e3) -> np.ndarray:
    """s_j = a_j^alpha / w_j^(1-alpha), 1 where a_j or w_j is zero, kept within max_scale."""
    a = np.asarray(act_absmax, np.float64)
    w = np.asarray(weight_absmax, np.float64)
    live = (a > 0) & (w > 0) & np.isfinite(a) & np.isfinite(w)
    scales = np.ones(a.shape)
    scales[live] = a[live] ** alpha / w[live] ** (1.0 - alpha)
    return clamp_scales(scales, max_scale)


# ---------------------------------------------------------------------------------------------
# Graph


@dataclass
class _SmoothableTensor:
    """An activation whose channels can be scaled down: where 1/s is absorbed and which
    weights take s."""

    tensor: str
    channels: int
    producer: str
    absorb: list[tuple[str, int]]  # (constant, axis along which it takes 1/s)
    consumers: list[tuple[str, str, int]]  # (label, weight constant, axis of its K rows)


class _SmoothableTensorFinder:
    """Finds the activations SmoothQuant can migrate, and why the others cannot be."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.topo = Topology.of(model.graph)
        self.consts = Constants(model, self.topo)

    def rewritable(self, name: str, what: str) -> np.ndarray:
        reason = self.consts.why_not_rewritable(name)
        if reason is not None:
            raise Skipped(UNSUPPORTED_WEIGHT, f"{what}: {reason}")
        return self.consts.raw(name)

    def consumers(self, tensor: str) -> list[tuple[str, str, int]]:
        found = []
        if tensor in self.topo.graph_outputs or self.topo.subgraph_users.get(tensor):
            raise Skipped(OTHER_READERS, f"{tensor!r} is a graph output or read by a subgraph")
        for index, slot in self.topo.consumers.get(tensor, ()):
            node = self.topo.nodes[index]
            label = node_label(node)
            if node.op_type in SHAPE_OPS and node.domain in STANDARD_DOMAINS:
                continue  # reads only the shape, which smoothing keeps
            weighted = (node.op_type in ("MatMul", "Gemm") and node.domain in STANDARD_DOMAINS
                        and slot == 0 and len(node.input) > 1)
            if not weighted or (node.op_type == "Gemm" and attribute(node, "transA", 0)):
                raise Skipped(OTHER_READERS, f"{node.op_type} {label!r} reads it other than "
                                             "as the data input of a MatMul or Gemm")
            if not self.consts.is_constant(node.input[1]):
                raise Skipped(UNSUPPORTED_WEIGHT, f"{label!r} has no constant weight")
            w = self.rewritable(node.input[1], label)
            if w.ndim != 2:
                raise Skipped(UNSUPPORTED_WEIGHT, f"{label!r}: weight is {w.ndim}-D, not 2-D")
            trans_b = node.op_type == "Gemm" and bool(attribute(node, "transB", 0))
            found.append((label, node.input[1], 1 if trans_b else 0))
        return found

    def last_axis_constant(self, name: str, channels: int, what: str) -> tuple[str, int]:
        value = self.rewritable(name, what)
        if value.ndim == 0 or value.shape[-1] != channels:
            raise Skipped(CANNOT_ABSORB, f"{what} of shape {list(value.shape)} is not per "
                                         f"channel of the last axis ({channels})")
        return name, value.ndim - 1

    def absorbers(self, tensor: str, channels: int) -> tuple[str, list[tuple[str, int]]]:
        """The producer chain of `tensor` that takes 1/s, and the constants it scales."""
        node = self.topo.producer_node(tensor)
        if node is None:
            raise Skipped(CANNOT_ABSORB, f"{tensor!r} is a graph input or a constant")
        label = f"{node.op_type} {node_label(node)}"
        if node.domain not in STANDARD_DOMAINS:
            raise Skipped(CANNOT_ABSORB, f"produced by {label}")
        op = node.op_type
        if op == "LayerNormalization":
            if int(attribute(node, "axis", -1)) != -1:
                raise Skipped(CANNOT_ABSORB, f"{label} normalizes from axis "
                                             f"{attribute(node, 'axis', -1)}, not -1")
            if any(self.topo.use_count(name) for name in node.output[1:] if name):
                raise Skipped(CANNOT_ABSORB, f"{label}: its mean or deviation output is used")
            found = [self.last_axis_constant(node.input[1], channels, f"{label} scale")]
            if len(node.input) > 2 and node.input[2]:
                found.append(self.last_axis_constant(node.input[2], channels, f"{label} bias"))
            return label, found
        if op in ("Mul", "Add") and len(node.input) == 2:
            const_slot = next((i for i in (1, 0) if self.consts.is_constant(node.input[i])), None)
            if const_slot is None:
                raise Skipped(CANNOT_ABSORB, f"{label} has no constant operand")
            found = [self.last_axis_constant(node.input[const_slot], channels, label)]
            if op == "Mul":
                return label, found
            # x + c scales as a whole only when x takes 1/s too
            other = node.input[1 - const_slot]
            if self.topo.use_count(other) != 1:
                raise Skipped(CANNOT_ABSORB, f"the input of {label} is read elsewhere too")
            inner, more = self.absorbers(other, channels)
            return f"{inner} + {label}", more + found
        if op == "MatMul" and len(node.input) == 2 and self.consts.is_constant(node.input[1]):
            w = self.rewritable(node.input[1], label)
            if w.ndim != 2 or w.shape[1] != channels:
                raise Skipped(CANNOT_ABSORB, f"{label}: weight {list(w.shape)}")
            return label, [(node.input[1], 1)]
        if op == "Gemm" and self.consts.is_constant(node.input[1]):
            w = self.rewritable(node.input[1], label)
            trans_b = bool(attribute(node, "transB", 0))
            if w.ndim != 2 or w.shape[0 if trans_b else 1] != channels:
                raise Skipped(CANNOT_ABSORB, f"{label}: weight {list(w.shape)}")
            found = [(node.input[1], 0 if trans_b else 1)]
            if len(node.input) > 2 and node.input[2]:
                found.append(self.last_axis_constant(node.input[2], channels, f"{label} C"))
            return label, found
        raise Skipped(CANNOT_ABSORB, f"produced by {label}")

    def candidates(self) -> tuple[list[_SmoothableTensor], list[SkippedTensor]]:
        seen: dict[str, None] = {}
        for node in self.topo.nodes:
            if (node.op_type in ("MatMul", "Gemm") and node.domain in STANDARD_DOMAINS
                    and len(node.input) > 1 and node.input[0]
                    and not self.consts.is_constant(node.input[0])
                    and self.consts.is_constant(node.input[1])):
                seen.setdefault(node.input[0], None)
        found, skipped = [], []
        for tensor in seen:
            try:
                consumers = self.consumers(tensor)
                rows = {self.consts.raw(w).shape[axis] for _, w, axis in consumers}
                if len(rows) != 1:
                    raise Skipped(CHANNEL_MISMATCH, f"weights with {sorted(rows)} input rows")
                channels = rows.pop()
                producer, absorb = self.absorbers(tensor, channels)
                names = [name for name, _ in absorb] + [w for _, w, _ in consumers]
                if len(set(names)) != len(names):
                    raise Skipped(UNSUPPORTED_WEIGHT, "a constant appears twice")
            except Skipped as skip:
                skipped.append(SkippedTensor(tensor, skip.reason, skip.detail))
                continue
            found.append(_SmoothableTensor(tensor, channels, producer, absorb, consumers))
        return found, skipped


def smoothable_tensors(model: onnx.ModelProto) -> list[str]:
    """The activation tensors smooth_model can rewrite, given their channel max (graph order)."""
    found, _ = _SmoothableTensorFinder(model).candidates()
    return [candidate.tensor for candidate in found]


def _along(scale: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = scale.size
    return scale.reshape(shape)


def smooth_model(model: onnx.ModelProto, act_channel_absmax: Mapping[str, np.ndarray],
                 alpha: float = 0.5, max_scale: float = 1e3) -> tuple[onnx.ModelProto, Smoothing]:
    """SmoothQuant of every qualifying activation; returns (rewritten copy, report).

    `act_channel_absmax` maps activation tensor names to max |x| per channel of the last axis,
    measured on calibration data (collect_channel_absmax); tensors without one are left alone.
    """
    if not 0.0 <= alpha <= 1.0 or max_scale < 1:
        raise ValueError("alpha must lie in [0, 1] and max_scale be >= 1")
    work = copy_model(model)
    finder = _SmoothableTensorFinder(work)
    consts = finder.consts
    result = Smoothing(alpha=alpha)
    found, result.skipped = finder.candidates()
    for candidate in found:
        stats = act_channel_absmax.get(candidate.tensor)
        stats = None if stats is None else np.asarray(stats, np.float64).reshape(-1)
        if stats is None or stats.size != candidate.channels:
            have = "none" if stats is None else f"{stats.size} values"
            result.skipped.append(SkippedTensor(
                candidate.tensor, NO_CHANNEL_ABSMAX,
                f"needs {candidate.channels} channel maxima, has {have}"))
            continue
        weight_absmax = np.zeros(candidate.channels)
        for _, name, axis in candidate.consumers:
            rows = np.moveaxis(np.abs(consts.get(name)), axis, 0)
            weight_absmax = np.maximum(weight_absmax, rows.max(axis=1))
        scales = smoothing_scales(stats, weight_absmax, alpha, max_scale)
        for name, axis in candidate.absorb:
            value = consts.get(name)
            value /= _along(scales, value.ndim, axis)
            consts.mark(name)
        for _, name, axis in candidate.consumers:
            value = consts.get(name)
            value *= _along(scales, value.ndim, axis)
            consts.mark(name)
        result.scales[candidate.tensor] = scales
        result.smoothed.append(SmoothedTensor(
            candidate.tensor, candidate.producer, [label for label, _, _ in candidate.consumers],
            candidate.channels, float(scales.min()), float(scales.max())))
    consts.write_back()
    return work, result


def collect_channel_absmax(model: onnx.ModelProto, feeds: Iterable[Mapping[str, np.ndarray]],
                           tensors: Iterable[str]) -> dict[str, np.ndarray]:
    """max |x| per channel of the last axis of each tensor, over every batch (onnxruntime CPU).

    Non-finite values are ignored. The model is not modified (the tensors are added as outputs
    of the session's copy of the graph only).
    """
    from qtool.backends.onnxruntime.session import create_session

    tensors = list(dict.fromkeys(tensors))
    if not tensors:
        return {}
    outputs = {value.name for value in model.graph.output}
    session = create_session(model, extra_outputs=[t for t in tensors if t not in outputs])
    inputs = {value.name for value in session.get_inputs()}
    absmax: dict[str, np.ndarray] = {}
    for feed in feeds:
        values = session.run(tensors, {k: v for k, v in feed.items() if k in inputs})
        for name, value in zip(tensors, values):
            value = np.asarray(value)
            flat = np.abs(value.reshape(-1, value.shape[-1]).astype(np.float64))
            flat[~np.isfinite(flat)] = 0.0
            peak = flat.max(axis=0) if flat.shape[0] else np.zeros(value.shape[-1])
            absmax[name] = peak if name not in absmax else np.maximum(absmax[name], peak)
    return absmax


def smooth_with_data(model: onnx.ModelProto, feeds: Iterable[Mapping[str, np.ndarray]],
                     alpha: float = 0.5, max_scale: float = 1e3,
                     ) -> tuple[onnx.ModelProto, Smoothing]:
    """The whole pre-step: measure the smoothable activations on `feeds`, then smooth."""
    absmax = collect_channel_absmax(model, feeds, smoothable_tensors(model))
    return smooth_model(model, absmax, alpha=alpha, max_scale=max_scale)
