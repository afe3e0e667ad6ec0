"""Which activation tensors calibration must observe.

A superset of what any Q/DQ placement may need, so one calibration file serves every choice of
`qtool quantize` options: the activation inputs of the weighted ops, both inputs of residual Adds,
the inputs of average pooling and of Concat. Constant and non-float tensors are never observed.
"""

from __future__ import annotations

import onnx

from qtool.graph.constants import constant_names
from qtool.graph.types import float_tensors

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
OBSERVED_OPS = WEIGHTED_OPS + ("Add", "AveragePool", "GlobalAveragePool", "Concat")


def tensors_to_observe(model: onnx.ModelProto, op_types=OBSERVED_OPS) -> list[str]:
    """Names of the float activation tensors feeding the given op types, in graph order."""
    constants = constant_names(model)
    floats = float_tensors(model)
    seen: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type not in op_types or node.domain not in ("", "ai.onnx"):
            continue
        inputs = node.input
        if node.op_type in ("Conv", "ConvTranspose"):
            inputs = node.input[:1]  # weights and bias are constants, handled by quantize
        elif node.op_type == "Gemm":
            inputs = node.input[:2]  # B may be an activation; the bias C is never quantized
        for name in inputs:
            if name and name not in constants and name in floats:
                seen[name] = None
    return list(seen)
