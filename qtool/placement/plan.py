"""The Q/DQ plan: which tensors get a Q/DQ pair, with which amax or axis, and which node inputs
read the dequantized tensor. Placement rules fill it; the insertion pass applies it.

One pair per tensor: every consumer input that needs the quantized value reads the same DQ
output; consumers that do not need it keep reading the original tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qtool.graph.weights import WeightAxis


@dataclass(frozen=True)
class Skip:
    """A candidate node left unquantized: `reason` is a stable code, `detail` says more."""

    node: str
    op_type: str
    reason: str
    detail: str

    def to_dict(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "reason": self.reason, "detail": self.detail}


# Reason codes (stable: the JSON summary and scripts rely on them).
EXCLUDED_NAME = "excluded_name"
EXCLUDED_OP_TYPE = "excluded_op_type"
NO_CALIBRATION = "no_calibration"
INTEGER_INPUT = "integer_input"
UNSUPPORTED_TYPE = "unsupported_type"
UNSUPPORTED_WEIGHT = "unsupported_weight"
NOT_RESIDUAL = "not_residual"
NOT_NEEDED = "not_needed"


@dataclass
class WeightPlan:
    """A constant operand quantized with one scale per channel along `axis` (None: per tensor)."""

    tensor: str
    axis: int | None
    fallback: str | None = None  # why per-tensor, when a per-channel axis was not used


@dataclass
class Plan:
    activations: dict[str, float] = field(default_factory=dict)  # tensor -> calibrated amax
    weights: dict[str, WeightPlan] = field(default_factory=dict)
    rewires: dict[tuple[int, int], str] = field(default_factory=dict)  # (node, slot) -> tensor
    quantized: dict[int, str] = field(default_factory=dict)  # node index -> op type
    skipped: dict[int, Skip] = field(default_factory=dict)
    unmatched_excludes: list[str] = field(default_factory=list)  # exclude patterns nothing matched
    _groups: dict[str, str] = field(default_factory=dict)  # union-find parent for shared scales

    def quantize_activation(self, node: int, slot: int, tensor: str, amax: float) -> None:
        self.activations[tensor] = amax
        self.rewires[(node, slot)] = tensor

    def quantize_weight(self, node: int, slot: int, tensor: str, axis: WeightAxis) -> None:
        known = self.weights.get(tensor)
        if known is None:
            self.weights[tensor] = WeightPlan(tensor, axis.axis, axis.reason)
        elif known.axis != axis.axis:
            # One pair per tensor: users that disagree on the channel axis share a per-tensor scale.
            known.axis = None
            known.fallback = known.fallback or axis.reason or "shared by ops with different channel axes"
        self.rewires[(node, slot)] = tensor

    def is_quantized_tensor(self, tensor: str) -> bool:
        return tensor in self.activations

    def share_scale(self, tensors: list[str]) -> None:
        """Give these activation tensors one common scale (the largest amax among them)."""
        roots = [self._find(name) for name in tensors]
        for root in roots[1:]:
            if root != roots[0]:
                self._groups[root] = roots[0]

    def _find(self, name: str) -> str:
        root = name
        while self._groups.get(root, root) != root:
            root = self._groups[root]
        while name != root:  # path compression
            parent = self._groups[name]
            self._groups[name] = root
            name = parent
        return root

    def shared_amax(self) -> dict[str, float]:
        """Final amax per activation tensor after scale sharing."""
        group_max: dict[str, float] = {}
        for name, amax in self.activations.items():
            root = self._find(name)
            group_max[root] = max(group_max.get(root, 0.0), amax)
        return {name: group_max[self._find(name)] for name in self.activations}

    def scale_groups(self) -> list[list[str]]:
        """Groups of two or more quantized tensors sharing one scale, in plan order."""
        groups: dict[str, list[str]] = {}
        for name in self.activations:
            groups.setdefault(self._find(name), []).append(name)
        return [members for members in groups.values() if len(members) > 1]
