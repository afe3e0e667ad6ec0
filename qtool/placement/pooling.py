"""Average pooling takes a quantized input so TensorRT can run it in INT8.

AveragePool and GlobalAveragePool read their input through Q/DQ; the quantized consumer after them
(a Conv, or a Gemm behind a Flatten) supplies the Q that closes the INT8 region. MaxPool gets no
Q/DQ of its own: it commutes with quantization, and TensorRT moves the neighbouring Q/DQ across it.

The input Q is free only when TensorRT can fuse it into the op that produces the tensor. A
weighted op whose output is also read in float (PP-OCRv6's attention blocks: conv -> global
pool -> conv -> hard sigmoid, then conv * attention + conv) must write its output in float, so
the Q would run alone over the whole tensor just so the pool reads 8 bits: the pool stays in
float instead, unless a quantized weighted op reads the tensor too (its Q exists anyway).
"""

from __future__ import annotations

from qtool.graph.op_types import AVERAGE_POOL_OPS, CAST_OPS, WEIGHTED_OPS
from qtool.graph.topology import node_label
from qtool.placement import plan as reasons
from qtool.placement.context import PlacementContext
from qtool.placement.plan import Plan


def plan_average_pools(ctx: PlacementContext, plan: Plan) -> None:
    for index in ctx.candidates(plan, AVERAGE_POOL_OPS):
        name = ctx.node(index).input[0]
        problem = ctx.activation_problem(name)
        if problem is not None:
            ctx.skip(plan, index, *problem)
            continue
        float_readers = _unfusable_input_q(ctx, plan, name)
        if float_readers is not None:
            ctx.skip(plan, index, reasons.NOT_NEEDED,
                     f"its input is also read in float by {float_readers}: the Q could not fuse "
                     "into the op producing it and would run alone")
            continue
        plan.quantize_activation(index, 0, name, float(ctx.amax[name]))
        plan.quantized[index] = ctx.node(index).op_type


def _unfusable_input_q(ctx: PlacementContext, plan: Plan, tensor: str) -> str | None:
    """The float readers of `tensor`, when it is a weighted op's output (through casts) that
    nodes other than average pools read in float and no quantized weighted op reads; else None."""
    source, producer = tensor, ctx.topo.producer_node(tensor)
    while producer is not None and producer.op_type in CAST_OPS and producer.input:
        source = producer.input[0]
        producer = ctx.topo.producer_node(source)
    if producer is None or producer.op_type not in WEIGHTED_OPS:
        return None
    readers, float_uses = [], []
    pending = [source]
    while pending:
        name = pending.pop()
        if name in ctx.topo.graph_outputs or ctx.topo.subgraph_users.get(name):
            float_uses.append("the graph output" if name in ctx.topo.graph_outputs else "a subgraph")
        for index, _ in ctx.topo.consumers.get(name, ()):
            node = ctx.node(index)
            if node.op_type in CAST_OPS:
                pending.extend(node.output[:1])
            else:
                readers.append(index)
    if any(plan.quantized.get(index) in WEIGHTED_OPS for index in readers):
        return None
    float_uses += [f"{ctx.node(index).op_type} '{node_label(ctx.node(index))}'" for index in readers
                   if ctx.node(index).op_type not in AVERAGE_POOL_OPS]
    return ", ".join(float_uses) if float_uses else None
