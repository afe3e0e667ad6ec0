"""Bias correction: fold the expected output shift caused by weight quantization into the bias.

Rounding a weight W to INT8 changes the op's output by dW * x on average, where
dW = W - dequantize(quantize(W)). With the per-input-channel mean E[x] of the activation input
recorded during calibration, the expected shift of every output channel is known and is
given back once through the bias, b += dW E[x] (the analytic bias correction of data-free
quantization, Nagel et al. 2019). The error that remains has zero mean over the calibration data.

The rule, for every node the plan quantizes whose constant weight the plan quantizes too:

    dW = W - DQ(Q(W)), with exactly the scales and axis the insertion pass uses
        (scales.weight_scales + quantize_int8 along the plan's weight axis, or per tensor).
        DQ(Q(W)) is the float32 value DequantizeLinear produces; the difference is float64.
    Conv, W [O, C/g, k...], group g, activation mean m along axis 1 (length C):
        shift[o] = sum over c', k of dW[o, c', k] * m[(o // (O/g)) * (C/g) + c']
        Padding is ignored: this is the expected shift of interior outputs.
        A Conv without a bias gets one ([O], the correction itself).
    Gemm, Y = alpha * A' B' + beta * C, mean of A along axis 1 (transA=0) or 0 (transA=1):
        shift[n] = alpha * sum_k m[k] * dB'[k, n]; C += shift / beta, C broadcast to
        broadcast(C.shape, [N]) (so [] and [1] become [N], while [N], [1, N], [M, N] keep theirs).
        C absent: a C input holding shift / beta is added. beta = 0: C contributes nothing, so C
        becomes the shift (in C's broadcast shape, [N] when absent) and beta becomes 1; that is
        exact only if 0 * C was zero, so a C holding NaN or Inf is left alone (skipped).
        A C computed at run time is skipped.
    MatMul, A [..., K] x constant B [K, N], mean of A along the last axis:
        shift[n] = sum_k m[k] * dB[k, n]. MatMul has no bias: when its output feeds exactly one
        node, an Add whose other input is a constant broadcasting with [N], the shift is added to
        that constant (broadcast to broadcast(shape, [N])); otherwise the node is skipped.
    ConvTranspose: not corrected (skipped with a reason).

The shift is computed in float64, added to the float32 bias in float64 and rounded to float32
once. A node is corrected only when its activation input has channel means along the axis above
with the length the weight expects; otherwise it is skipped with a reason. A bias tensor read by
anything else too (another node, a subgraph, a graph output) is left as it is and this node
gets a corrected copy under a new unique name; an unshared bias is replaced in place (so of
several corrected nodes sharing one bias and nothing else, the last takes the original). Nodes keep
their order and their inputs except that bias slot; the only attribute ever changed is a Gemm's
beta (0 -> 1, above). Runs on the working copy before Q/DQ insertion and before any FP16
conversion; it reads every weight one at a time, so large models are not held twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qtool.graph.attributes import attribute
from qtool.graph.topology import Topology, node_label
from qtool.placement.plan import Plan, Skip
from qtool.quantize.insert import NameAllocator
from qtool.quantize.rescale import (
    STANDARD_DOMAINS,
    Skipped,
    constant_sources,
    count_reasons,
    read_source,
    write_source,
)
from qtool.quantize.scales import broadcast_scale, quantize_int8, weight_scales

ChannelMeans = dict[str, tuple[int, np.ndarray]]

# Status of the whole pass.
APPLIED = "applied"
DISABLED = "disabled"
NO_CHANNEL_MEANS = "no_channel_means"

# Reason codes for nodes not corrected (stable: the JSON summary reports them).
MISSING_MEANS = "no_channel_means"
MEANS_MISMATCH = "channel_means_mismatch"
UNSUPPORTED_OP = "unsupported_op"
UNSUPPORTED_WEIGHT = "unsupported_weight"
NO_BIAS = "no_constant_bias"
UNSUPPORTED_BIAS = "unsupported_bias"
NOT_FINITE = "not_finite"


@dataclass
class BiasCorrection:
    """What the pass did: `status` is applied, disabled or no_channel_means (none were given)."""

    status: str = DISABLED
    corrected: list[str] = field(default_factory=list)  # node labels, graph order
    skipped: list[Skip] = field(default_factory=list)

    def skipped_by_reason(self) -> dict[str, int]:
        return count_reasons(self.skipped)

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "corrected": len(self.corrected),
            "corrected_nodes": list(self.corrected),
            "skipped": [skip.to_dict() for skip in self.skipped],
            "skipped_by_reason": self.skipped_by_reason(),
        }


# ---------------------------------------------------------------------------------------------
# Pure numerics


def weight_error(weight: np.ndarray, axis: int | None) -> np.ndarray:
    """dW = W - DQ(Q(W)) in float64, with the scales the Q/DQ insertion writes for this weight."""
    w = np.asarray(weight, dtype=np.float32)
    scales = weight_scales(w, axis)
    q = quantize_int8(w, scales, axis)
    # DequantizeLinear's float32 result (int8 * float32 scale, rounded once to float32)
    dequantized = q.astype(np.float32) * broadcast_scale(scales, w.ndim, axis)
    return w.astype(np.float64) - dequantized.astype(np.float64)


def conv_shift(dw: np.ndarray, mean: np.ndarray, group: int = 1) -> np.ndarray:
    """Expected Conv output shift [O] for weight error dw [O, C/g, k...] and input means [C]."""
    dw = np.asarray(dw, dtype=np.float64)
    out_channels, per_group_in = dw.shape[0], dw.shape[1]
    per_group_out = out_channels // group
    blocks = dw.reshape(group, per_group_out, per_group_in, -1).sum(axis=3)  # [g, O/g, C/g]
    means = np.asarray(mean, dtype=np.float64).reshape(group, per_group_in)
    return np.einsum("gop,gp->go", blocks, means).reshape(out_channels)


def matmul_shift(db: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Expected shift [N] of A @ B for weight error db [K, N] and means of A's last axis [K]."""
    return np.asarray(mean, dtype=np.float64) @ np.asarray(db, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Graph pass


@dataclass
class _BiasTarget:
    """Where a node's shift goes: input `slot` of `node` (a constant, or a new one if absent)."""

    node: onnx.NodeProto
    slot: int
    tensor: str | None  # the current constant; None adds a new input
    value: np.ndarray  # current float32 value (zeros of the new shape when absent)
    divisor: float = 1.0  # Gemm beta
    set_beta_one: bool = False


class _BiasCorrectionPass:
    """Bias correction over one model: reads its constants and channel means, works out each
    weighted node's expected output shift and writes it into the node's bias."""

    def __init__(self, model: onnx.ModelProto, plan: Plan, means: ChannelMeans) -> None:
        self.model = model
        self.plan = plan
        self.means = means
        self.topo = Topology.of(model.graph)
        self.names = NameAllocator(model)
        self.sources = constant_sources(model)
        self.new_initializers: list[onnx.TensorProto] = []
        self.uses: dict[str, int] = {}  # reads left of each bias, as nodes move to corrected copies

    # --- reading ------------------------------------------------------------------------------

    def constant(self, name: str) -> np.ndarray | None:
        source = self.sources.get(name)
        return None if source is None else read_source(source)

    def channel_mean(self, tensor: str, axis: int, length: int) -> np.ndarray:
        entry = self.means.get(tensor)
        if entry is None:
            raise Skipped(MISSING_MEANS, f"no channel means for {tensor!r}")
        try:
            got_axis, mean = entry
            got_axis = int(got_axis)
            mean = np.asarray(mean, dtype=np.float64)
        except (TypeError, ValueError):
            raise Skipped(MEANS_MISMATCH,
                          f"channel means of {tensor!r} are not (axis, array)") from None
        if got_axis != axis or mean.ndim != 1 or mean.size != length:
            raise Skipped(MEANS_MISMATCH,
                          f"channel means of {tensor!r} are {mean.size} along axis {got_axis}; "
                          f"the op needs {length} along axis {axis}")
        if not np.all(np.isfinite(mean)):
            raise Skipped(NOT_FINITE, f"channel means of {tensor!r} are not finite")
        return mean

    def weight(self, index: int) -> tuple[str, np.ndarray, int | None]:
        """The node's quantized right-hand weight: (name, float32 value, plan axis)."""
        name = self.plan.rewires.get((index, 1))
        spec = self.plan.weights.get(name) if name is not None else None
        if spec is None:
            raise Skipped(UNSUPPORTED_WEIGHT, "the quantized weight is not the second input")
        value = self.constant(name)
        if value is None:
            raise Skipped(UNSUPPORTED_WEIGHT, f"weight {name!r} is not a dense constant")
        if value.size == 0:  # no output channel: nothing to correct
            raise Skipped(UNSUPPORTED_WEIGHT, f"weight {name!r} of shape {list(value.shape)} "
                                              f"has no elements")
        return name, np.asarray(value, dtype=np.float32), spec.axis

    def bias_value(self, name: str, what: str) -> np.ndarray:
        value = self.constant(name)
        if value is None:
            raise Skipped(NO_BIAS, f"{what} {name!r} is computed at run time, not a constant")
        if value.dtype != np.float32:
            raise Skipped(UNSUPPORTED_BIAS, f"{what} {name!r} is {value.dtype}, not float32")
        return value

    # --- per op -------------------------------------------------------------------------------

    def conv(self, index: int) -> tuple[np.ndarray, _BiasTarget]:
        node = self.topo.nodes[index]
        _, w, axis = self.weight(index)
        group = int(attribute(node, "group", 1))
        if w.ndim < 2 or group < 1 or w.shape[0] % group:
            raise Skipped(UNSUPPORTED_WEIGHT,
                          f"weight shape {list(w.shape)} does not fit group {group}")
        mean = self.channel_mean(node.input[0], 1, w.shape[1] * group)
        shift = conv_shift(weight_error(w, axis), mean, group)
        out = w.shape[0]
        if len(node.input) > 2 and node.input[2]:
            bias = self.bias_value(node.input[2], "bias")
            if bias.shape != (out,):
                raise Skipped(UNSUPPORTED_BIAS,
                              f"bias {node.input[2]!r} has shape {list(bias.shape)}")
            return shift, _BiasTarget(node, 2, node.input[2], bias)
        return shift, _BiasTarget(node, 2, None, np.zeros(out, np.float32))

    def gemm(self, index: int) -> tuple[np.ndarray, _BiasTarget]:
        node = self.topo.nodes[index]
        _, b, axis = self.weight(index)
        if b.ndim != 2:
            raise Skipped(UNSUPPORTED_WEIGHT, f"weight is {b.ndim}-D, Gemm needs 2-D")
        trans_a, trans_b = int(attribute(node, "transA", 0)), int(attribute(node, "transB", 0))
        alpha, beta = float(attribute(node, "alpha", 1.0)), float(attribute(node, "beta", 1.0))
        db = weight_error(b, axis)
        if trans_b:
            db = db.T
        mean = self.channel_mean(node.input[0], 0 if trans_a else 1, db.shape[0])
        shift = alpha * matmul_shift(db, mean)
        n = db.shape[1]
        if len(node.input) > 2 and node.input[2]:
            c = self.bias_value(node.input[2], "C")
            shape = _broadcast_shape(c.shape, n, "C")
            if beta == 0.0:
                if not np.all(np.isfinite(c)):
                    raise Skipped(UNSUPPORTED_BIAS, "beta is 0 and C holds NaN or Inf")
                return shift, _BiasTarget(node, 2, node.input[2], np.zeros(shape, np.float32),
                                          set_beta_one=True)
            return shift, _BiasTarget(node, 2, node.input[2], c, divisor=beta)
        zeros = np.zeros(n, np.float32)
        if beta == 0.0:
            return shift, _BiasTarget(node, 2, None, zeros, set_beta_one=True)
        return shift, _BiasTarget(node, 2, None, zeros, divisor=beta)

    def matmul(self, index: int) -> tuple[np.ndarray, _BiasTarget]:
        node = self.topo.nodes[index]
        _, b, axis = self.weight(index)
        if b.ndim != 2:
            raise Skipped(UNSUPPORTED_WEIGHT,
                          f"weight is {b.ndim}-D; only a 2-D [K, N] one is corrected")
        mean = self.channel_mean(node.input[0], -1, b.shape[0])
        shift = matmul_shift(weight_error(b, axis), mean)
        consumer = self.topo.only_consumer(node.output[0])
        add = None if consumer is None else self.topo.nodes[consumer]
        if add is None or add.op_type != "Add" or add.domain not in STANDARD_DOMAINS:
            raise Skipped(NO_BIAS, "the output does not feed exactly one Add of a constant")
        slot = 1 if add.input[0] == node.output[0] else 0
        other = add.input[slot]
        if other == node.output[0] or other not in self.sources:
            raise Skipped(NO_BIAS, "the Add after it does not add a constant")
        c = self.bias_value(other, "Add constant")
        _broadcast_shape(c.shape, b.shape[1], "the Add constant")
        return shift, _BiasTarget(add, slot, other, c)

    # --- writing ------------------------------------------------------------------------------

    def apply(self, shift: np.ndarray, target: _BiasTarget) -> None:
        n = shift.shape[0]
        shape = _broadcast_shape(target.value.shape, n, "bias")
        with np.errstate(over="ignore", invalid="ignore"):
            total = target.value.astype(np.float64) + shift / target.divisor
            corrected = np.broadcast_to(total, shape).astype(np.float32)
        if not np.all(np.isfinite(corrected)):
            raise Skipped(NOT_FINITE, "the corrected bias is not finite in float32")
        node = target.node
        if target.tensor is None:
            name = self.add_initializer(f"{node_label(node)}_bias", corrected)
            while len(node.input) <= target.slot:
                node.input.append("")
            node.input[target.slot] = name
        elif self.uses.setdefault(target.tensor, self.topo.use_count(target.tensor)) > 1:
            node.input[target.slot] = self.add_initializer(f"{target.tensor}_corrected", corrected)
            self.uses[target.tensor] -= 1
        else:
            self.replace(target.tensor, corrected)
        if target.set_beta_one:
            kept = [attr for attr in node.attribute if attr.name != "beta"]
            del node.attribute[:]
            node.attribute.extend(kept)
            node.attribute.append(helper.make_attribute("beta", 1.0))

    def add_initializer(self, base: str, value: np.ndarray) -> str:
        name = self.names.tensor(base)
        self.new_initializers.append(numpy_helper.from_array(value, name))
        return name

    def replace(self, name: str, value: np.ndarray) -> None:
        write_source(self.sources[name], numpy_helper.from_array(value, name))
        # A declared shape (old IR lists initializers as inputs too) follows a broadcast value.
        graph = self.model.graph
        for info in list(graph.input) + list(graph.value_info):
            if info.name == name and info.type.HasField("tensor_type"):
                info.type.tensor_type.shape.CopyFrom(
                    helper.make_tensor_type_proto(TensorProto.FLOAT, value.shape).tensor_type.shape)

    def finish(self) -> None:
        graph = self.model.graph
        graph.initializer.extend(self.new_initializers)
        if self.model.ir_version < 4:
            graph.input.extend(helper.make_tensor_value_info(init.name, init.data_type, init.dims)
                               for init in self.new_initializers)


def _broadcast_shape(shape: tuple, n: int, what: str) -> tuple:
    try:
        return np.broadcast_shapes(tuple(shape), (n,))
    except ValueError:
        raise Skipped(UNSUPPORTED_BIAS,
                      f"{what} of shape {list(shape)} does not broadcast with [{n}]") from None


_HANDLERS = {"Conv": _BiasCorrectionPass.conv, "Gemm": _BiasCorrectionPass.gemm,
             "MatMul": _BiasCorrectionPass.matmul}


def correct_biases(model: onnx.ModelProto, plan: Plan,
                   channel_means: ChannelMeans) -> BiasCorrection:
    """Correct the biases of the plan's weight-quantized nodes in `model` (in place).

    Call between planning and Q/DQ insertion: node indices are the plan's, and the weights and
    biases must still be the float ones.
    """
    result = BiasCorrection(status=APPLIED)
    work = _BiasCorrectionPass(model, plan, channel_means)
    for index in sorted(plan.quantized):
        node = work.topo.nodes[index]
        if node.op_type == "ConvTranspose":
            result.skipped.append(Skip(node_label(node), node.op_type, UNSUPPORTED_OP,
                                       "ConvTranspose biases are not corrected"))
            continue
        handler = _HANDLERS.get(node.op_type)
        has_weight = any(plan.rewires.get((index, slot)) in plan.weights for slot in (0, 1))
        if handler is None or not has_weight:
            continue  # not a weighted op, or one without a constant weight (two activations)
        try:
            shift, target = handler(work, index)
            work.apply(shift, target)
        except Skipped as skip:
            result.skipped.append(Skip(node_label(node), node.op_type, skip.reason, skip.detail))
            continue
        result.corrected.append(node_label(node))
    work.finish()
    return result
