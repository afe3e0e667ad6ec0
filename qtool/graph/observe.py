"""Which activation tensors calibration must observe.

A superset of what any Q/DQ placement may need, so one calibration file serves every choice of
`qtool quantize` options: the activation inputs of the weighted ops, both inputs of residual Adds,
the inputs of average pooling and of Concat. Constant and non-float tensors are never observed.
"""

from __future__ import annotations

import onnx

from qtool.graph.attributes import attribute
from qtool.graph.facts import ModelFacts, as_facts
from qtool.graph.op_types import CONSTANT_WEIGHT_OPS, QUANTIZABLE_OPS

OBSERVED_OPS = QUANTIZABLE_OPS


def tensors_to_observe(model: ModelFacts | onnx.ModelProto, op_types=OBSERVED_OPS) -> list[str]:
    """Names of the float activation tensors feeding the given op types, in graph order."""
    facts = as_facts(model)
    constants = facts.constants
    floats = facts.float_tensors
    seen: dict[str, None] = {}
    for node in facts.topology.nodes:
        if node.op_type not in op_types or node.domain not in ("", "ai.onnx"):
            continue
        inputs = node.input
        if node.op_type in CONSTANT_WEIGHT_OPS:
            inputs = node.input[:1]  # weights and bias are constants, handled by quantize
        elif node.op_type == "Gemm":
            inputs = node.input[:2]  # B may be an activation; the bias C is never quantized
        for name in inputs:
            if name and name not in constants and name in floats:
                seen[name] = None
    return list(seen)


def channel_axes(model: ModelFacts | onnx.ModelProto) -> dict[str, int]:
    """Activation tensors whose per-channel means bias correction can use, with the channel axis.

    The input-channel axis of each weighted op with a constant weight: Conv input 1; Gemm input
    A 1, or 0 with transA; MatMul with a constant 2-D right operand -1 (the last axis). A
    tensor feeding several such ops keeps the first axis found (quantize checks it matches).
    """
    facts = as_facts(model)
    constants = facts.constants
    floats = facts.float_tensors
    ranks = {name: len(info.shape) for name, info in facts.constant_infos.items()}
    axes: dict[str, int] = {}
    for node in facts.topology.nodes:
        if node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        data, weight = node.input[0], node.input[1]
        if not data or data in constants or data not in floats or weight not in constants:
            continue
        if node.op_type == "Conv":
            axes.setdefault(data, 1)
        elif node.op_type == "Gemm":
            trans_a = attribute(node, "transA", 0)
            axes.setdefault(data, 0 if trans_a else 1)
        elif node.op_type == "MatMul" and ranks.get(weight, 2) == 2:
            axes.setdefault(data, -1)
    return axes

