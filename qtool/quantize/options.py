"""What `quantize_model` may do: op types, exclusions, weight storage and precision. Declared
once (QUANTIZE) for the flags of `qtool quantize`, the [quantize] table and QuantizeOptions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qtool.errors import UsageError
from qtool.graph.op_types import QUANTIZABLE_OPS
from qtool.options import FILE, Option, OptionGroup, as_list

DEFAULT_OP_TYPES = QUANTIZABLE_OPS

WEIGHT_MODES = ("fp32", "int8")
HIGH_PRECISIONS = ("fp32", "fp16")


QUANTIZE = OptionGroup("quantize", [
    Option("op_types", multiple=True, metavar="OPS", default=DEFAULT_OP_TYPES,
           help=f"Comma-separated op types to quantize (default: {','.join(DEFAULT_OP_TYPES)})."),
    Option("exclude", multiple=True, metavar="NAME", default=(),
           help="Leave this node in high precision: a name or a regex (full match). Repeatable."),
    Option("exclude_op_type", multiple=True, metavar="OP", default=(), field="exclude_op_types",
           help="Leave every node of this op type in high precision. Repeatable."),
    Option("exclude_file", path=FILE,
           help="File of node names/regexes to exclude, one per line, '#' comments."),
    Option("per_tensor_weights", bool, False, help="One scale per weight, not per channel."),
    Option("weights", default="fp32", choices=WEIGHT_MODES,
           help="fp32: FP32 weights + Q + DQ; int8: INT8 weights + DQ (about 4x smaller)."),
    Option("conv_transpose_per_tensor", bool, False,
           help="Per-tensor scales for ConvTranspose weights only."),
    Option("high_precision", default="fp32", choices=HIGH_PRECISIONS,
           help="Precision of the layers left unquantized."),
    Option("bias_correction", bool, True,
           help="Fold the mean output shift of weight rounding into the biases (needs the "
                "channel means `qtool calibrate` records)."),
])


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

    op_types: tuple[str, ...] = QUANTIZE.default("op_types")
    exclude: tuple[str, ...] = QUANTIZE.default("exclude")
    exclude_op_types: tuple[str, ...] = QUANTIZE.default("exclude_op_type")
    per_tensor_weights: bool = QUANTIZE.default("per_tensor_weights")
    weights: str = QUANTIZE.default("weights")
    conv_transpose_per_tensor: bool = QUANTIZE.default("conv_transpose_per_tensor")
    high_precision: str = QUANTIZE.default("high_precision")
    bias_correction: bool = QUANTIZE.default("bias_correction")

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


def quantize_options(values: dict, base_dir: Path | None = None) -> QuantizeOptions:
    """QuantizeOptions from option values keyed by name: the flags of a command, or a checked
    [quantize] table with its defaults (QUANTIZE.values). The patterns of exclude_file join
    exclude; a relative exclude_file names a file in `base_dir` when given."""
    from qtool.placement.exclude import read_exclude_file

    fields = QUANTIZE.fields(values)
    excludes = [str(item) for item in as_list(fields["exclude"])]
    exclude_file = fields.pop("exclude_file", None)
    if exclude_file:
        path = exclude_file  # a flag's value as given: messages name it as the user wrote it
        if base_dir is not None:
            path = Path(exclude_file)
            path = path if path.is_absolute() else base_dir / path
        excludes += read_exclude_file(path)
    fields.update(op_types=split_op_types(fields["op_types"]), exclude=tuple(excludes),
                  exclude_op_types=split_op_types(fields["exclude_op_types"]),
                  per_tensor_weights=bool(fields["per_tensor_weights"]),
                  conv_transpose_per_tensor=bool(fields["conv_transpose_per_tensor"]))
    return QuantizeOptions(**fields).validate()


def quantize_table_options(table: dict, base_dir: Path | None = None) -> QuantizeOptions:
    """QuantizeOptions from a [quantize] table read by another step (sensitivity): unknown keys
    are usage errors, missing ones take their defaults."""
    unknown = set(table) - set(QUANTIZE.toml_keys())
    if unknown:
        raise UsageError(f"unknown key {min(unknown)!r} in [quantize]")
    return quantize_options(QUANTIZE.values(table), base_dir)
