"""Q/DQ placement following TensorRT's explicit-quantization rules, one rule per module.

The plan is made from the model's facts (qtool.graph.facts) once, below both calibration (which
observes the tensors it quantizes) and quantization (which inserts it). Order matters: residual
Adds need to know which convs are quantized, and Concats need to know which tensors every other
rule quantized.
"""

from __future__ import annotations

import onnx

from qtool.graph.facts import ModelFacts, as_facts
from qtool.placement.concat import plan_concats
from qtool.placement.context import PlacementContext
from qtool.placement.options import PlacementOptions
from qtool.placement.plan import Plan
from qtool.placement.pooling import plan_average_pools
from qtool.placement.residual import plan_residual_adds
from qtool.placement.weighted import plan_weighted_ops

RULES = (plan_weighted_ops, plan_average_pools, plan_residual_adds, plan_concats)


def make_plan(facts: ModelFacts | onnx.ModelProto, amax: dict[str, float],
              options: PlacementOptions | None = None) -> Plan:
    """Where Q/DQ goes in the model the facts describe, for the tensors that have an amax."""
    ctx = PlacementContext(as_facts(facts), amax, options or PlacementOptions())
    plan = Plan()
    for rule in RULES:
        rule(ctx, plan)
    plan.unmatched_excludes = ctx.matcher.unmatched()
    return plan
