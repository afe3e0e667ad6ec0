"""What calibration, placement and quantization read about one model, found once.

Calibrating a model asks the same questions several times over: which tensors are constants,
what type and shape each tensor has (one shape inference), who produces and reads each tensor,
whether the weights are still on disk. `ModelFacts.of(model)` answers them all in one pass over
the graph and one shape inference; the callers take the facts instead of the model.

The facts describe the graph. They hold for any copy of the model with the same graph (weights
loaded or not: `unloaded_weights` says which for `model` itself); a rewrite that changes the
graph, such as an opset upgrade, needs new facts.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from qtool.graph.constants import constant_names, runtime_inputs
from qtool.graph.shapes import TensorInfo, constant_infos, infos_of, shape_inference
from qtool.graph.topology import Topology
from qtool.graph.types import elem_types_of, floats_of
from qtool.io.model import has_unloaded_weights, opset_version


@dataclass(frozen=True)
class ModelFacts:
    model: onnx.ModelProto
    topology: Topology
    infos: dict[str, TensorInfo]        # type and shape per tensor (graph.shapes.tensor_infos)
    elem_types: dict[str, int]          # known element types (graph.types.tensor_elem_types)
    constant_infos: dict[str, TensorInfo]  # the constants' own dtype and dims
    constants: frozenset[str]           # every constant (graph.constants.constant_names)
    dense_constants: frozenset[str]     # constants readable as a dense array
    runtime_inputs: tuple[onnx.ValueInfoProto, ...]  # graph inputs fed at run time
    unloaded_weights: bool              # weights still in their files (load_weights=False)
    opset: int                          # of the default domain

    @classmethod
    def of(cls, model: onnx.ModelProto) -> ModelFacts:
        inferred, described = shape_inference(model)
        constants = constant_infos(model)
        return cls(
            model=model,
            topology=Topology.of(model.graph),
            infos=infos_of(described, constants),
            elem_types=elem_types_of(inferred),
            constant_infos=constants,
            constants=frozenset(constant_names(model)),
            dense_constants=frozenset(_dense_constant_names(model)),
            runtime_inputs=tuple(runtime_inputs(model)),
            unloaded_weights=has_unloaded_weights(model),
            opset=opset_version(model),
        )

    @property
    def float_tensors(self) -> set[str]:
        """Tensors known to hold floating-point values (graph.types.float_tensors)."""
        return floats_of(self.elem_types)

    @property
    def graph_inputs(self) -> set[str]:
        """Every graph input's name (old IR versions list initializers there too)."""
        return {value.name for value in self.model.graph.input}


def as_facts(source: ModelFacts | onnx.ModelProto) -> ModelFacts:
    """The facts themselves, or the facts of a bare model (for callers that hold only one)."""
    return source if isinstance(source, ModelFacts) else ModelFacts.of(source)


def _dense_constant_names(model: onnx.ModelProto) -> set[str]:
    """Constants whose values can be read as a dense array (not sparse_value, not strings)."""
    names = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and any(
                attr.name in ("value", "value_float", "value_floats") for attr in node.attribute):
            names.add(node.output[0])
    return names
