"""The opset raise FP16 Q/DQ needs: from opset 19 a DequantizeLinear writes its scale's type."""

from __future__ import annotations

import logging

import onnx

from qtool.errors import QtoolError
from qtool.io.model import ensure_opset, opset_version
from qtool.quantize.fp16.ops import DQ, FP16_QDQ_OPSET, Q

log = logging.getLogger("qtool")


def upgrade_for_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model at opset FP16_QDQ_OPSET or later when it holds Q/DQ nodes (unchanged otherwise)."""
    current = opset_version(model)
    if current >= FP16_QDQ_OPSET or not any(
            node.op_type in (Q, DQ) and node.domain in ("", "ai.onnx") for node in model.graph.node):
        return model
    try:
        upgraded = ensure_opset(model, FP16_QDQ_OPSET)
    except QtoolError as exc:
        raise QtoolError(
            f"FP16 with Q/DQ nodes needs opset {FP16_QDQ_OPSET} (DequantizeLinear writing FP16 "
            f"straight into the quantized op) and the model's opset {current} cannot be upgraded: "
            f"{exc}") from None
    # opset 19 needs IR version 9
    upgraded.ir_version = max(upgraded.ir_version, 9)
    log.info("fp16: opset %d upgraded to %d for FP16 Q/DQ", current, FP16_QDQ_OPSET)
    return upgraded
