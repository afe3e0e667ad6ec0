"""Cross-layer equalization: move weight range between two consecutive weighted ops.

Data-free quantization (Nagel et al. 2019): for y = W2 f(W1 x + b1) with f positively
homogeneous (f(s v) = s f(v) for s > 0, per channel), scaling output channel i of the first op
by 1/s_i and input channel i of the second op by s_i leaves y unchanged. Per-channel weight
quantization of the first op does not care, but the activation between the ops is quantized per
tensor and the second op's weights per output channel: channels with tiny ranges next to huge ones
lose their precision. With r1_i = max |W1[i, ...]| (output channel i of the first op) and
r2_i = max |W2[:, i, ...]| (input channel i of the second op),

    s_i = sqrt(r1_i / r2_i) = sqrt(r1_i r2_i) / r2_i

makes both ranges sqrt(r1_i r2_i). Chains (op1 -> op2 -> op3) couple neighbouring pairs through
the middle op's weights, so all pairs are swept again until every step is within `tolerance` of 1
or `iterations` sweeps were made.

Pairs: a Conv, Gemm or MatMul with a constant weight (a MatMul may have a constant bias in the
single Add reading it), whose output is read only by nothing or by one Relu, LeakyRelu or PRelu
(each positively homogeneous per channel: PRelu's slope multiplies a channel and commutes with
its scale), whose output in turn is read only by a Conv, Gemm or MatMul as its data input, with a
constant weight. Channel layouts must agree: Conv to Conv (channel axis 1), Gemm/MatMul to
Gemm/MatMul (last axis); a Gemm second op must not transpose A. Grouped convolutions map input
channel c of the second op to the rows of its group (depthwise: output channels c*m..c*m+m-1).
Clip (ReLU6) is not homogeneous (its bound would have to scale per channel) and stops a pair, as
does any other op between, a tensor read twice (or a graph output), a weight or bias read by
another node, and a constant that is not float32.

Channels where either range is zero keep scale 1, and the product of all steps of a pair is kept
within [1/max_scale, max_scale]. Arithmetic is float64 on working copies; each rewritten constant
is rounded to float32 once at the end. Only constant values change: nodes, names, shapes and
attributes stay as they are. The input model is not modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from qtool.graph.attributes import attribute
from qtool.graph.topology import Topology, node_label
from qtool.placement.plan import Skip
from qtool.quantize.rescale import (
    STANDARD_DOMAINS,
    Constants,
    Skipped,
    clamp_scales,
    copy_model,
    count_reasons,
)

WEIGHTED = ("Conv", "Gemm", "MatMul")
HOMOGENEOUS = ("Relu", "LeakyRelu", "PRelu")

# Reason codes for pairs not equalized (stable: reports count them).
BRANCHING = "branching"
NOT_HOMOGENEOUS = "not_homogeneous"
UNSUPPORTED_WEIGHT = "unsupported_weight"
UNSUPPORTED_BIAS = "unsupported_bias"
UNSUPPORTED_LAYOUT = "unsupported_layout"
CHANNEL_MISMATCH = "channel_mismatch"


@dataclass
class EqualizedPair:
    first: str
    second: str
    activation: str  # op type between the two, "" when none
    channels: int
    scale_min: float = 1.0  # range of the total scale s applied to the channels
    scale_max: float = 1.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Equalization:
    """What the pass did: the pairs equalized (graph order), those left alone and why."""

    pairs: list[EqualizedPair] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    iterations: int = 0
    converged: bool = True

    def skipped_by_reason(self) -> dict[str, int]:
        return count_reasons(self.skipped)

    def to_dict(self) -> dict:
        return {"pairs": len(self.pairs), "iterations": self.iterations,
                "converged": self.converged, "pair_list": [p.to_dict() for p in self.pairs],
                "skipped": [s.to_dict() for s in self.skipped],
                "skipped_by_reason": self.skipped_by_reason()}


# ---------------------------------------------------------------------------------------------
# Pure numerics


def equalization_scales(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """s_i = sqrt(r1_i / r2_i); 1 where either range is zero (nothing to balance)."""
    r1 = np.asarray(r1, np.float64)
    r2 = np.asarray(r2, np.float64)
    live = (r1 > 0) & (r2 > 0)
    scales = np.ones(r1.shape)
    scales[live] = np.sqrt(r1[live] / r2[live])
    return scales


# ---------------------------------------------------------------------------------------------
# Weighted ops as rescalable layers


@dataclass
class _RescalableLayer:
    """One weighted op; `kn` views a dense weight as [K, N] (Gemm transB stores [N, K])."""

    consts: Constants
    node: onnx.NodeProto
    kind: str  # "conv" (channels on axis 1) or "dense" (channels on the last axis)
    weight: str
    group: int = 1
    trans_b: bool = False
    bias: str | None = None  # set when the op is the first of a pair

    def w(self) -> np.ndarray:
        value = self.consts.get(self.weight)
        return value.T if self.trans_b else value

    @property
    def out_channels(self) -> int:
        return self.w().shape[0] if self.kind == "conv" else self.w().shape[1]

    @property
    def in_channels(self) -> int:
        return self.w().shape[1] * self.group if self.kind == "conv" else self.w().shape[0]

    def out_range(self) -> np.ndarray:
        w = np.abs(self.w())
        if self.kind == "conv":
            return w.reshape(w.shape[0], -1).max(axis=1)
        return w.max(axis=0)

    def _grouped(self) -> np.ndarray:
        """The conv weight as [g, O/g, C/g, k] (a view)."""
        w = self.w()
        return w.reshape(self.group, w.shape[0] // self.group, w.shape[1], -1)

    def in_range(self) -> np.ndarray:
        if self.kind == "conv":
            return np.abs(self._grouped()).max(axis=(1, 3)).reshape(-1)
        return np.abs(self.w()).max(axis=1)

    def scale_out(self, factor: np.ndarray) -> None:
        w = self.w()
        if self.kind == "conv":
            w *= factor.reshape((-1,) + (1,) * (w.ndim - 1))
        else:
            w *= factor[np.newaxis, :]
        self.consts.mark(self.weight)
        if self.bias is not None:
            self.consts.get(self.bias)[...] *= factor  # [O] or [..., N]: the last axis
            self.consts.mark(self.bias)

    def scale_in(self, factor: np.ndarray) -> None:
        if self.kind == "conv":
            grouped = self._grouped()
            grouped *= factor.reshape(self.group, 1, -1, 1)
        else:
            self.w()[...] *= factor[:, np.newaxis]
        self.consts.mark(self.weight)


@dataclass
class _EqualizablePair:
    """Two consecutive weighted layers, with at most a positively homogeneous activation between
    them, whose channels are rescaled against each other."""

    first: _RescalableLayer
    second: _RescalableLayer
    activation: str
    total: np.ndarray  # product of the steps applied so far


class _PairFinder:
    """Finds the pairs of weighted layers that cross-layer equalization can rescale."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.topo = Topology.of(model.graph)
        self.consts = Constants(model, self.topo)
        self.layers: dict[int, _RescalableLayer] = {}

    def layer(self, index: int) -> _RescalableLayer:
        if index in self.layers:
            return self.layers[index]
        node = self.topo.nodes[index]
        if len(node.input) < 2:
            raise Skipped(UNSUPPORTED_WEIGHT, "no weight input")
        reason = self.consts.why_not_rewritable(node.input[1])
        if reason is not None:
            raise Skipped(UNSUPPORTED_WEIGHT, f"{node_label(node)}: {reason}")
        shape = self.consts.raw(node.input[1]).shape
        if node.op_type == "Conv":
            group = int(attribute(node, "group", 1))
            if len(shape) < 3 or group < 1 or shape[0] % group:
                raise Skipped(UNSUPPORTED_LAYOUT,
                              f"{node_label(node)}: weight {list(shape)}, group {group}")
            layer = _RescalableLayer(self.consts, node, "conv", node.input[1], group=group)
        else:
            if len(shape) != 2:
                raise Skipped(UNSUPPORTED_LAYOUT,
                              f"{node_label(node)}: weight is {len(shape)}-D, not 2-D")
            trans_b = node.op_type == "Gemm" and bool(attribute(node, "transB", 0))
            layer = _RescalableLayer(self.consts, node, "dense", node.input[1], trans_b=trans_b)
        self.layers[index] = layer
        return layer

    def producer_output(self, layer: _RescalableLayer) -> str:
        """The tensor carrying the first op's channels, with its bias found; may raise."""
        node = layer.node
        out = node.output[0]
        bias, label = None, node_label(node)
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2]:
            bias = node.input[2]
        elif node.op_type == "MatMul":
            index = self.topo.only_consumer(out)
            add = None if index is None else self.topo.nodes[index]
            if add is not None and add.op_type == "Add" and add.domain in STANDARD_DOMAINS:
                other = add.input[1] if add.input[0] == out else add.input[0]
                if self.consts.is_constant(other):
                    bias, out = other, add.output[0]
        if bias is not None:
            reason = self.consts.why_not_rewritable(bias)
            if reason is not None:
                raise Skipped(UNSUPPORTED_BIAS, f"{label}: bias {reason}")
            shape = self.consts.raw(bias).shape
            if not shape or shape[-1] != layer.out_channels or (
                    layer.kind == "conv" and len(shape) != 1):
                raise Skipped(UNSUPPORTED_BIAS, f"{label}: bias of shape {list(shape)} is not "
                                                f"per output channel ({layer.out_channels})")
        layer.bias = bias
        return out

    def next_node(self, tensor: str) -> int | None:
        """The single node reading `tensor`; None at a graph output; raises when read twice."""
        uses = self.topo.use_count(tensor)
        if uses > 1:
            raise Skipped(BRANCHING, f"{tensor!r} is read {uses} times")
        return self.topo.only_consumer(tensor)

    def pair_from(self, index: int) -> _EqualizablePair | None:
        first = self.layer(index)
        out = self.producer_output(first)
        following = self.next_node(out)
        if following is None:
            return None
        between = self.topo.nodes[following]
        activation = ""
        if between.op_type in HOMOGENEOUS and between.domain in STANDARD_DOMAINS:
            activation = between.op_type
            out = between.output[0]
            following = self.next_node(out)
            if following is None:
                return None
        second_node = self.topo.nodes[following]
        if second_node.op_type not in WEIGHTED or second_node.domain not in STANDARD_DOMAINS:
            if not activation and len(second_node.output) == 1 and second_node.output[0]:
                # one op between two weighted ops: say why it blocks the pair
                after = self.topo.only_consumer(second_node.output[0])
                if after is not None and self.topo.nodes[after].op_type in WEIGHTED:
                    raise Skipped(NOT_HOMOGENEOUS, f"{second_node.op_type} "
                                  f"{node_label(second_node)!r} between the two ops")
            return None
        if second_node.input[0] != out:
            raise Skipped(UNSUPPORTED_LAYOUT, f"{node_label(second_node)} reads {out!r} "
                                              "as its weight")
        second = self.layer(following)
        if first.kind != second.kind:
            raise Skipped(UNSUPPORTED_LAYOUT, f"{first.node.op_type} output channels do not "
                                              f"lie on {second.node.op_type}'s input axis")
        if second.node.op_type == "Gemm" and attribute(second.node, "transA", 0):
            raise Skipped(UNSUPPORTED_LAYOUT, f"{node_label(second.node)} transposes A")
        if first.out_channels != second.in_channels:
            raise Skipped(CHANNEL_MISMATCH, f"{first.out_channels} output channels, "
                                            f"{second.in_channels} input channels")
        return _EqualizablePair(first, second, activation, np.ones(first.out_channels))


def equalize_model(model: onnx.ModelProto, iterations: int = 20, tolerance: float = 1e-4,
                   max_scale: float = 1e3) -> tuple[onnx.ModelProto, Equalization]:
    """Cross-layer equalization of every eligible pair; returns (rewritten copy, report).

    Sweeps all pairs at most `iterations` times, stopping once no step moves a scale by more
    than `tolerance` (relative); each pair's total scale stays within [1/max_scale, max_scale].
    """
    if iterations < 1 or tolerance < 0 or max_scale < 1:
        raise ValueError("iterations >= 1, tolerance >= 0 and max_scale >= 1 are required")
    work = copy_model(model)
    finder = _PairFinder(work)
    result = Equalization()
    pairs: list[_EqualizablePair] = []
    for index, node in enumerate(finder.topo.nodes):
        if node.op_type not in WEIGHTED or node.domain not in STANDARD_DOMAINS:
            continue
        if len(node.input) < 2 or not finder.consts.is_constant(node.input[1]):
            continue  # not a weighted op with a constant weight: nothing to start from
        try:
            pair = finder.pair_from(index)
        except Skipped as skip:
            result.skipped.append(Skip(node_label(node), node.op_type, skip.reason, skip.detail))
            continue
        if pair is not None:
            pairs.append(pair)

    result.converged = not pairs
    for sweep in range(1, iterations + 1):
        worst = 0.0
        for pair in pairs:
            step = equalization_scales(pair.first.out_range(), pair.second.in_range())
            total = clamp_scales(pair.total * step, max_scale)
            step = total / pair.total
            pair.total = total
            pair.first.scale_out(1.0 / step)
            pair.second.scale_in(step)
            worst = max(worst, float(np.max(np.abs(step - 1.0), initial=0.0)))
        result.iterations = sweep
        if worst <= tolerance:
            result.converged = True
            break
    finder.consts.write_back()

    for pair in pairs:
        result.pairs.append(EqualizedPair(
            node_label(pair.first.node), node_label(pair.second.node), pair.activation,
            pair.total.size, float(pair.total.min(initial=np.inf)),
            float(pair.total.max(initial=-np.inf))))
    return work, result
