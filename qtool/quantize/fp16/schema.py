"""Which of a node's inputs and outputs may carry float16, read from its ONNX schema."""

from __future__ import annotations

import onnx

_FP16_TYPE_STR = "tensor(float16)"


class HalfCapableSlots:
    """Which inputs/outputs of a node may change from float32 to float16, from its schema.

    Each slot is (takes float16, type string, formal option); `ok` is False when the op has no
    schema at the model's opset."""

    def __init__(self, node: onnx.NodeProto, opset: int):
        self.ok = False
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
        except onnx.defs.SchemaError:  # unknown op or no schema at this opset
            return
        half_vars = {c.type_param_str for c in schema.type_constraints
                     if _FP16_TYPE_STR in c.allowed_type_strs}
        self._inputs = [(p.type_str in half_vars, p.type_str, p.option) for p in schema.inputs]
        self._outputs = [(p.type_str in half_vars, p.type_str, p.option) for p in schema.outputs]
        self.ok = True

    @staticmethod
    def _formal(formals, index):
        if index < len(formals):
            return formals[index]
        if formals and formals[-1][2] == onnx.defs.OpSchema.FormalParameterOption.Variadic:
            return formals[-1]
        return None

    def input(self, index: int):
        return self._formal(self._inputs, index)

    def output(self, index: int):
        return self._formal(self._outputs, index)
