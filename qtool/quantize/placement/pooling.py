"""Average pooling takes a quantized input so TensorRT can run it in INT8.

AveragePool and GlobalAveragePool read their input through Q/DQ; the quantized consumer after them
(a Conv, or a Gemm behind a Flatten) supplies the Q that closes the INT8 region. MaxPool gets no
Q/DQ of its own: it commutes with quantization, and TensorRT moves the neighbouring Q/DQ across it.
"""

from __future__ import annotations

from qtool.quantize.placement.context import PlacementContext
from qtool.quantize.plan import Plan

AVERAGE_POOLS = ("AveragePool", "GlobalAveragePool")


def plan_average_pools(ctx: PlacementContext, plan: Plan) -> None:
    for index in ctx.candidates(plan, AVERAGE_POOLS):
        name = ctx.node(index).input[0]
        problem = ctx.activation_problem(name)
        if problem is not None:
            ctx.skip(plan, index, *problem)
            continue
        plan.quantize_activation(index, 0, name, float(ctx.amax[name]))
        plan.quantized[index] = ctx.node(index).op_type
