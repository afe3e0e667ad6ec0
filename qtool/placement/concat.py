"""Concat: when its output is quantized, its inputs are too, all with one shared scale.

With equal input and output scales a Concat is a pure copy of INT8 data, so TensorRT can let the
producers write INT8 straight into the concatenated buffer. A Concat whose output feeds no
quantized input gets nothing (an unfused pair costs time). Concats are visited last to first so
that a Concat feeding another Concat sees its consumer's decision. The shared amax is the largest
calibrated amax among the Concat's inputs and its output.
"""

from __future__ import annotations

from qtool.graph.op_types import SCALE_SHARING_OPS
from qtool.placement import plan as reasons
from qtool.placement.context import PlacementContext
from qtool.placement.plan import Plan


def plan_concats(ctx: PlacementContext, plan: Plan) -> None:
    for index in reversed(ctx.candidates(plan, SCALE_SHARING_OPS)):
        _plan_concat(ctx, plan, index)


def _plan_concat(ctx: PlacementContext, plan: Plan, index: int) -> None:
    node = ctx.node(index)
    output = node.output[0]
    if not plan.is_quantized_tensor(output):
        ctx.skip(plan, index, reasons.NOT_NEEDED, "its output feeds no quantized input")
        return
    inputs = [name for name in node.input if name]
    for name in inputs:
        if name in ctx.constants:
            ctx.skip(plan, index, reasons.NO_CALIBRATION, f"input {name!r} is a constant")
            return
        problem = ctx.activation_problem(name)
        if problem is not None:
            ctx.skip(plan, index, *problem)
            return
    for slot, name in enumerate(node.input):
        if name:
            plan.quantize_activation(index, slot, name, float(ctx.amax[name]))
    plan.share_scale([output] + inputs)
    plan.quantized[index] = node.op_type
