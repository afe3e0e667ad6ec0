"""What placement may do: the few choices of the quantize options that decide where Q/DQ goes.

Placement sits below both calibration and quantization, so it takes these alone, not the
quantize options (quantize.api turns one into the other).
"""

from __future__ import annotations

from dataclasses import dataclass

from qtool.graph.op_types import QUANTIZABLE_OPS


@dataclass(frozen=True)
class PlacementOptions:
    """op_types: ops that may be quantized; exclude: node names or regular expressions left in
    high precision; exclude_op_types: op types left out after `op_types`; per_tensor_weights and
    conv_transpose_per_tensor: one scale per weight (for all, or for ConvTranspose only)."""

    op_types: tuple[str, ...] = QUANTIZABLE_OPS
    exclude: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    per_tensor_weights: bool = False
    conv_transpose_per_tensor: bool = False

    def active_op_types(self) -> frozenset[str]:
        return frozenset(self.op_types) - frozenset(self.exclude_op_types)
