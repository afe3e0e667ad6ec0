"""Q/DQ placement following TensorRT's explicit-quantization rules, one rule per module.

Order matters: residual Adds need to know which convs are quantized, and Concats need to know
which tensors every other rule quantized.
"""

from __future__ import annotations

import onnx

from qtool.quantize.options import QuantizeOptions
from qtool.quantize.placement.concat import plan_concats
from qtool.quantize.placement.context import PlacementContext
from qtool.quantize.placement.pooling import plan_average_pools
from qtool.quantize.placement.residual import plan_residual_adds
from qtool.quantize.placement.weighted import plan_weighted_ops
from qtool.quantize.plan import Plan

RULES = (plan_weighted_ops, plan_average_pools, plan_residual_adds, plan_concats)


def make_plan(model: onnx.ModelProto, amax: dict[str, float],
              options: QuantizeOptions) -> tuple[Plan, PlacementContext]:
    ctx = PlacementContext(model, amax, options)
    plan = Plan()
    for rule in RULES:
        rule(ctx, plan)
    return plan, ctx
