"""The output-channel axis of a weighted op's constant operand, for per-channel scales.

TensorRT quantizes weights per output channel. Where the layout gives no single output-channel
axis (grouped ConvTranspose, a 1-D MatMul operand, a constant left operand) the weight falls back
to one per-tensor scale; the reason is returned so it can be reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from qtool.graph.attributes import attribute


@dataclass(frozen=True)
class WeightAxis:
    """axis None means per-tensor; `reason` says why a per-channel axis was not used."""

    axis: int | None
    reason: str | None = None


def weight_axis(node: onnx.NodeProto, slot: int, shape: tuple[int, ...],
                conv_transpose_per_tensor: bool = False) -> WeightAxis:
    """Output-channel axis of the constant at input `slot` of `node`, given its shape."""
    rank = len(shape)
    op = node.op_type
    if op == "Conv" and slot == 1:
        return WeightAxis(0) if rank >= 1 else WeightAxis(None, "scalar Conv weight")
    if op == "ConvTranspose" and slot == 1:
        # Weight layout [C_in, C_out / group, k...]: output channels are axis 1 only without groups.
        if conv_transpose_per_tensor:
            return WeightAxis(None)  # asked for, not a fallback
        if attribute(node, "group", 1) != 1:
            return WeightAxis(None, "grouped ConvTranspose has no single output-channel axis")
        return WeightAxis(1) if rank >= 2 else WeightAxis(None, "ConvTranspose weight below rank 2")
    if op == "Gemm" and slot == 1:
        if rank != 2:
            return WeightAxis(None, "Gemm operand is not 2-D")
        return WeightAxis(0 if attribute(node, "transB", 0) else 1)
    if op == "MatMul" and slot == 1:
        # [K, N]: output channels are axis 1. ONNX would allow the last axis of a batched
        # [..., K, N] operand too, but onnxruntime's fused QLinearMatMul rejects such scales.
        if rank < 2:
            return WeightAxis(None, "1-D MatMul operand has no output-channel axis")
        if rank > 2:
            return WeightAxis(None, f"{rank}-D MatMul operand: per-channel scales need a 2-D one")
        return WeightAxis(1)
    if op in ("Gemm", "MatMul") and slot == 0:
        return WeightAxis(None, f"constant left operand of {op}")
    return WeightAxis(None, f"no per-channel layout known for input {slot} of {op}")
