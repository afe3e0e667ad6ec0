"""What `quantize_model` did: counts per op type, skipped nodes and why, weight fallbacks, bias
correction."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from qtool.placement.plan import Skip
from qtool.quantize.bias import APPLIED, NO_CHANNEL_MEANS, BiasCorrection


@dataclass(frozen=True)
class WeightFallback:
    """A weight that got one per-tensor scale although per-channel was asked for."""

    tensor: str
    reason: str

    def to_dict(self) -> dict:
        return {"tensor": self.tensor, "reason": self.reason}


@dataclass
class QuantizeSummary:
    quantized: dict[str, int] = field(default_factory=dict)  # op type -> nodes quantized
    skipped: list[Skip] = field(default_factory=list)
    activation_pairs: int = 0
    weights_per_channel: int = 0
    weights_per_tensor: int = 0
    weight_fallbacks: list[WeightFallback] = field(default_factory=list)
    shared_scale_groups: list[list[str]] = field(default_factory=list)
    unmatched_excludes: list[str] = field(default_factory=list)
    opset_in: int = 0
    opset_out: int = 0
    options: dict = field(default_factory=dict)
    bias_correction: BiasCorrection = field(default_factory=BiasCorrection)

    @property
    def total_quantized(self) -> int:
        return sum(self.quantized.values())

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(skip.reason for skip in self.skipped))

    def to_dict(self) -> dict:
        return {
            "quantized": dict(self.quantized),
            "total_quantized": self.total_quantized,
            "skipped": [skip.to_dict() for skip in self.skipped],
            "skipped_by_reason": self.skipped_by_reason(),
            "activation_qdq_pairs": self.activation_pairs,
            "weights_per_channel": self.weights_per_channel,
            "weights_per_tensor": self.weights_per_tensor,
            "weight_fallbacks": [fallback.to_dict() for fallback in self.weight_fallbacks],
            "shared_scale_groups": [list(group) for group in self.shared_scale_groups],
            "unmatched_excludes": list(self.unmatched_excludes),
            "opset_in": self.opset_in,
            "opset_out": self.opset_out,
            "options": dict(self.options),
            "bias_correction": self.bias_correction.to_dict(),
        }

    def render_text(self, verbose: bool = False) -> str:
        """Human summary; `verbose` lists every skipped node instead of counts per reason."""
        lines = []
        ops = ", ".join(f"{op} {count}" for op, count in sorted(self.quantized.items())) or "none"
        lines.append(f"quantized {self.total_quantized} nodes: {ops}")
        lines.append(
            f"Q/DQ pairs: {self.activation_pairs} activations, {self.weights_per_channel} "
            f"per-channel weights, {self.weights_per_tensor} per-tensor weights"
        )
        if self.opset_in != self.opset_out:
            lines.append(f"opset upgraded {self.opset_in} -> {self.opset_out}")
        if self.skipped:
            counts = ", ".join(f"{reason} {count}" for reason, count in self.skipped_by_reason().items())
            lines.append(f"skipped {len(self.skipped)} nodes: {counts}")
            if verbose:
                lines.extend(f"  {s.node} ({s.op_type}): {s.reason}: {s.detail}" for s in self.skipped)
        for fallback in self.weight_fallbacks:
            lines.append(f"per-tensor weight {fallback.tensor}: {fallback.reason}")
        if self.unmatched_excludes:
            lines.append("exclude patterns matching no node: " + ", ".join(self.unmatched_excludes))
        lines.extend(self._bias_lines(verbose))
        return "\n".join(lines)

    def _bias_lines(self, verbose: bool) -> list[str]:
        bias = self.bias_correction
        if bias.status == NO_CHANNEL_MEANS:
            return ["bias correction: no channel means in the calibration, biases unchanged"]
        if bias.status != APPLIED:
            return []
        line = f"bias-corrected {len(bias.corrected)} nodes"
        if bias.skipped:
            counts = ", ".join(f"{reason} {count}" for reason, count in bias.skipped_by_reason().items())
            line += f"; not corrected {len(bias.skipped)}: {counts}"
        lines = [line]
        if verbose:
            lines.extend(f"  {s.node} ({s.op_type}): {s.reason}: {s.detail}" for s in bias.skipped)
        return lines
