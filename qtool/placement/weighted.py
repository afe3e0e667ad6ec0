"""Weighted ops (Conv, ConvTranspose, Gemm, MatMul): quantize every data input, never the output.

TensorRT runs a weighted op in INT8 only when both its activation and its weight arrive through
DQ, so a node is quantized whole or not at all. Activation inputs get per-tensor scales from
calibration (a MatMul of two activations, as in attention, gets both); constant operands get
per-channel scales along their output-channel axis. Biases stay in float: TensorRT quantizes them
itself from the input and weight scales.
"""

from __future__ import annotations

from qtool.graph.op_types import CONSTANT_WEIGHT_OPS, WEIGHTED_DATA_INPUTS, WEIGHTED_OPS
from qtool.graph.weights import WeightAxis, weight_axis
from qtool.placement import plan as reasons
from qtool.placement.context import PlacementContext
from qtool.placement.plan import Plan


def plan_weighted_ops(ctx: PlacementContext, plan: Plan) -> None:
    for index in ctx.candidates(plan, WEIGHTED_OPS):
        _plan_node(ctx, plan, index)


def _plan_node(ctx: PlacementContext, plan: Plan, index: int) -> None:
    node = ctx.node(index)
    inputs = list(node.input[:WEIGHTED_DATA_INPUTS])
    if len(inputs) < WEIGHTED_DATA_INPUTS or not all(inputs):
        ctx.skip(plan, index, reasons.UNSUPPORTED_WEIGHT, "missing data input")
        return
    is_constant = [name in ctx.constants for name in inputs]
    if node.op_type in CONSTANT_WEIGHT_OPS:
        if not is_constant[1]:
            ctx.skip(plan, index, reasons.UNSUPPORTED_WEIGHT,
                     f"weight {inputs[1]!r} is computed at run time, not a constant")
            return
        if is_constant[0]:
            ctx.skip(plan, index, reasons.UNSUPPORTED_WEIGHT, "the data input is a constant")
            return
    elif all(is_constant):
        ctx.skip(plan, index, reasons.UNSUPPORTED_WEIGHT, "both operands are constants")
        return

    # Check every input before recording any, so a node is never half quantized.
    for name, constant in zip(inputs, is_constant):
        problem = ctx.weight_problem(name) if constant else ctx.activation_problem(name)
        if problem is not None:
            ctx.skip(plan, index, *problem)
            return
    for slot, (name, constant) in enumerate(zip(inputs, is_constant)):
        if constant:
            shape = ctx.shape(name) or ()
            axis = weight_axis(node, slot, shape, ctx.options.conv_transpose_per_tensor)
            if ctx.options.per_tensor_weights:
                axis = WeightAxis(None)  # asked for, not a fallback
            plan.quantize_weight(index, slot, name, axis)
        else:
            plan.quantize_activation(index, slot, name, float(ctx.amax[name]))
    plan.quantized[index] = node.op_type
