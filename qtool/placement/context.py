"""What every placement rule needs to know about the model, and the checks they share."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import onnx
from onnx import TensorProto, helper

from qtool.errors import QtoolError
from qtool.graph.facts import ModelFacts
from qtool.graph.shapes import TensorInfo
from qtool.graph.topology import node_label
from qtool.placement import plan as reasons
from qtool.placement.exclude import NameMatcher
from qtool.placement.options import PlacementOptions
from qtool.placement.plan import Plan, Skip

_FLOATS = {TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}


def _type_name(elem_type: int) -> str:
    return helper.tensor_dtype_to_string(elem_type).replace("TensorProto.", "").lower()


@dataclass
class PlacementContext:
    """The model's facts, the calibrated amax and the options, as the rules read them."""

    facts: ModelFacts
    amax: dict[str, float]
    options: PlacementOptions
    matcher: NameMatcher = field(init=False)

    def __post_init__(self) -> None:
        self.topo = self.facts.topology
        self.infos = self.facts.infos
        self.constants = self.facts.constants
        self.dense_constants = self.facts.dense_constants
        self.matcher = NameMatcher(self.options.exclude)
        self.active_ops = self.options.active_op_types()

    def node(self, index: int) -> onnx.NodeProto:
        return self.topo.nodes[index]

    def skip(self, plan: Plan, index: int, reason: str, detail: str) -> None:
        node = self.node(index)
        plan.skipped[index] = Skip(node_label(node), node.op_type, reason, detail)

    def candidates(self, plan: Plan, op_types) -> list[int]:
        """Indices of default-domain nodes of these op types that options allow; records the rest."""
        selected = []
        for index, node in enumerate(self.topo.nodes):
            if node.op_type not in op_types or node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type not in self.active_ops:
                detail = ("op type excluded" if node.op_type in self.options.exclude_op_types
                          else "op type not selected")
                self.skip(plan, index, reasons.EXCLUDED_OP_TYPE, detail)
                continue
            pattern = self.matcher.match(node.name or node_label(node))
            if pattern is not None:
                self.skip(plan, index, reasons.EXCLUDED_NAME, f"matches exclude pattern {pattern!r}")
                continue
            selected.append(index)
        return selected

    def activation_problem(self, tensor: str) -> tuple[str, str] | None:
        """Why `tensor` cannot take an activation Q/DQ pair (reason, detail), or None if it can."""
        elem = self.infos.get(tensor, TensorInfo(0, None)).elem_type
        if elem == TensorProto.FLOAT:
            pass
        elif elem == 0:
            return reasons.UNSUPPORTED_TYPE, f"element type of {tensor!r} is unknown"
        elif elem in _FLOATS:
            return (reasons.UNSUPPORTED_TYPE,
                    f"{tensor!r} is {_type_name(elem)}; Q/DQ is inserted on float32 tensors only")
        else:
            return reasons.INTEGER_INPUT, f"{tensor!r} is {_type_name(elem)}"
        if tensor not in self.amax:
            return reasons.NO_CALIBRATION, f"no calibrated amax for {tensor!r}"
        raw = self.amax[tensor]
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise QtoolError(f"calibrated amax of {tensor!r} is {raw!r}: not a finite number >= 0")
        return None

    def weight_problem(self, tensor: str) -> tuple[str, str] | None:
        """Why constant `tensor` cannot be quantized as a weight, or None if it can."""
        elem = self.infos.get(tensor, TensorInfo(0, None)).elem_type
        if tensor not in self.dense_constants:
            return reasons.UNSUPPORTED_WEIGHT, f"weight {tensor!r} is not stored as a dense tensor"
        if elem == TensorProto.FLOAT:
            return None
        if elem == 0:
            return reasons.UNSUPPORTED_WEIGHT, f"element type of weight {tensor!r} is unknown"
        if elem in _FLOATS:
            return (reasons.UNSUPPORTED_WEIGHT,
                    f"weight {tensor!r} is {_type_name(elem)}; only float32 weights are quantized")
        return reasons.INTEGER_INPUT, f"weight {tensor!r} is {_type_name(elem)}"

    def shape(self, tensor: str) -> tuple | None:
        info = self.infos.get(tensor)
        return None if info is None else info.shape
