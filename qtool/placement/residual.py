"""Skip connections: quantize the residual input of an Add so TensorRT fuses the Add into a conv.

TensorRT fuses `Conv -> Add(residual)` into one INT8 kernel when the conv is quantized, its output
feeds only the Add (BatchNormalization in between is folded into the conv first) and the other
Add input arrives through Q/DQ. The rule therefore quantizes the branch that is *not* the output
of such a fusing conv. When both branches are fusing convs, the conv that comes later in graph
(topological) order fuses: it runs last, so the earlier branch's result already exists as its
residual input; the earlier branch is quantized. Adds with no fusing conv get no Q/DQ: an unfused
pair would only cost time.
"""

from __future__ import annotations

from qtool.graph.op_types import FOLDED_INTO_CONV_OPS, RESIDUAL_ADD_OPS, RESIDUAL_FUSING_OPS
from qtool.placement import plan as reasons
from qtool.placement.context import PlacementContext
from qtool.placement.plan import Plan


def plan_residual_adds(ctx: PlacementContext, plan: Plan) -> None:
    for index in ctx.candidates(plan, RESIDUAL_ADD_OPS):
        _plan_add(ctx, plan, index)


def fusing_conv(ctx: PlacementContext, plan: Plan, tensor: str, add_index: int) -> int | None:
    """Index of the quantized Conv whose output reaches the Add only through `tensor`, or None."""
    consumer = add_index
    while True:
        if ctx.topo.only_consumer(tensor) != consumer:
            return None
        producer = ctx.topo.producer.get(tensor)
        if producer is None:
            return None
        node = ctx.node(producer)
        if node.op_type in FOLDED_INTO_CONV_OPS and node.domain in ("", "ai.onnx"):
            consumer, tensor = producer, node.input[0]
            continue
        if node.op_type in RESIDUAL_FUSING_OPS and plan.quantized.get(producer) == node.op_type:
            return producer
        return None


def _plan_add(ctx: PlacementContext, plan: Plan, index: int) -> None:
    node = ctx.node(index)
    left, right = node.input[0], node.input[1]
    if left == right:
        ctx.skip(plan, index, reasons.NOT_RESIDUAL, "both inputs are the same tensor")
        return
    if left in ctx.constants or right in ctx.constants:
        ctx.skip(plan, index, reasons.NOT_RESIDUAL, "adds a constant")
        return
    left_shape, right_shape = ctx.shape(left), ctx.shape(right)
    if _known(left_shape) and _known(right_shape) and left_shape != right_shape:
        ctx.skip(plan, index, reasons.NOT_RESIDUAL, "inputs have different shapes (broadcast)")
        return
    convs = {slot: fusing_conv(ctx, plan, name, index) for slot, name in enumerate((left, right))}
    convs = {slot: conv for slot, conv in convs.items() if conv is not None}
    if not convs:
        ctx.skip(plan, index, reasons.NOT_RESIDUAL,
                 "no input comes straight from a quantized Conv that could fuse the Add")
        return
    fusing_slot = max(convs, key=convs.get)  # later conv fuses
    residual_slot = 1 - fusing_slot
    residual = node.input[residual_slot]
    problem = ctx.activation_problem(residual)
    if problem is not None:
        ctx.skip(plan, index, *problem)
        return
    plan.quantize_activation(index, residual_slot, residual, float(ctx.amax[residual]))
    plan.quantized[index] = node.op_type


def _known(shape) -> bool:
    return shape is not None and all(dim is not None for dim in shape)
