"""What `quantize_model` may do: op types, exclusions, weight storage and precision."""

from __future__ import annotations

from dataclasses import dataclass

from qtool.errors import UsageError
from qtool.graph.op_types import QUANTIZABLE_OPS

DEFAULT_OP_TYPES = QUANTIZABLE_OPS

WEIGHT_MODES = ("fp32", "int8")
HIGH_PRECISIONS = ("fp32", "fp16")


def split_op_types(values) -> tuple[str, ...]:
    """Op types given as one string or a list, each comma-separated (--op-types may repeat), in
    order and without repeats."""
    ops = []
    for value in [values] if isinstance(values, str) else values:
        ops.extend(part.strip() for part in str(value).split(","))
    return tuple(dict.fromkeys(op for op in ops if op))


@dataclass
class QuantizeOptions:
    """Options of `quantize_model`.

    op_types: ops that may be quantized (weighted ops and the placement extras).
    exclude: node names or regular expressions (re.fullmatch, or plain equality) to leave in
        high precision; unnamed nodes are matched by their first output's name.
    exclude_op_types: op types to leave in high precision, applied after `op_types`.
    per_tensor_weights: one scale per weight instead of one per output channel.
    weights: "fp32" keeps FP32 weights followed by Q and DQ; "int8" stores INT8 weights + DQ.
    conv_transpose_per_tensor: per-tensor scales for ConvTranspose weights only.
    high_precision: precision of everything left unquantized: "fp32" or "fp16".
    bias_correction: fold the expected shift caused by weight quantization into the biases
        (qtool.quantize.bias); it needs per-channel activation means, so it does something only
        when `quantize_model` is given them.
    """

    op_types: tuple[str, ...] = DEFAULT_OP_TYPES
    exclude: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    per_tensor_weights: bool = False
    weights: str = "fp32"
    conv_transpose_per_tensor: bool = False
    high_precision: str = "fp32"
    bias_correction: bool = True

    def validate(self) -> QuantizeOptions:
        """Raise UsageError for values no model could satisfy; returns self."""
        self.op_types = tuple(self.op_types)
        self.exclude = tuple(self.exclude)
        self.exclude_op_types = tuple(self.exclude_op_types)
        for name in self.op_types + self.exclude_op_types:
            if name not in DEFAULT_OP_TYPES:
                raise UsageError(
                    f"op type {name!r} cannot be quantized; choose from {', '.join(DEFAULT_OP_TYPES)}"
                )
        if self.weights not in WEIGHT_MODES:
            raise UsageError(f"weights must be one of {', '.join(WEIGHT_MODES)}, not {self.weights!r}")
        if self.high_precision not in HIGH_PRECISIONS:
            raise UsageError(
                f"high_precision must be one of {', '.join(HIGH_PRECISIONS)}, not {self.high_precision!r}"
            )
        if not isinstance(self.bias_correction, bool):
            raise UsageError(f"bias_correction must be true or false, not {self.bias_correction!r}")
        return self

    def active_op_types(self) -> frozenset[str]:
        return frozenset(self.op_types) - frozenset(self.exclude_op_types)

    def to_dict(self) -> dict:
        return {
            "op_types": list(self.op_types),
            "exclude": list(self.exclude),
            "exclude_op_types": list(self.exclude_op_types),
            "per_tensor_weights": self.per_tensor_weights,
            "weights": self.weights,
            "conv_transpose_per_tensor": self.conv_transpose_per_tensor,
            "high_precision": self.high_precision,
            "bias_correction": self.bias_correction,
        }
