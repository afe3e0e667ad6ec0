"""Reading and rewriting the constant tensors of a graph, for passes that only rescale them.

Cross-layer equalization and SmoothQuant change weights, biases and affine parameters in place
and nothing else. Exports keep those constants as initializers or as `Constant` nodes (Paddle2ONNX
writes every weight as a Constant node); both are read and written here the same way. A constant
is rewritable only when exactly one node input reads it: a shared weight rescaled for one reader
would change the others. Initializers that are also graph inputs (old IR) can be fed at run time,
so they are not treated as constants.

Bias correction reads and replaces constants the same way (`constant_sources`, `read_source`,
`write_source`), and all three passes report the places they leave alone through `Skipped` and
`count_reasons`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool.graph.constants import constant_node_value
from qtool.graph.topology import Topology

STANDARD_DOMAINS = ("", "ai.onnx")

Source = onnx.TensorProto | onnx.NodeProto  # an initializer or a Constant node


def constant_sources(model: onnx.ModelProto, exclude: Collection[str] = ()) -> dict[str, Source]:
    """Every constant of the graph by name: initializers (but those in `exclude`), then the
    outputs of Constant nodes that no initializer names."""
    sources: dict[str, Source] = {
        init.name: init for init in model.graph.initializer if init.name not in exclude}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] not in sources:
            sources[node.output[0]] = node
    return sources


def read_source(source: Source) -> np.ndarray | None:
    """The value of an initializer or Constant node (None where a Constant holds no dense tensor)."""
    if isinstance(source, onnx.NodeProto):
        return constant_node_value(source)
    return numpy_helper.to_array(source)


def write_source(source: Source, tensor: onnx.TensorProto) -> None:
    """Store `tensor` as the value of an initializer or Constant node, in place."""
    if isinstance(source, onnx.NodeProto):
        kept = [attr for attr in source.attribute if not attr.name.startswith("value")]
        del source.attribute[:]
        source.attribute.extend(kept)
        source.attribute.append(helper.make_attribute("value", tensor))
    else:
        source.CopyFrom(tensor)


class Constants:
    """The rewritable constants of one graph: read as float64, written back in their own dtype."""

    def __init__(self, model: onnx.ModelProto, topo: Topology) -> None:
        self.model = model
        self.topo = topo
        self.sources = constant_sources(model, exclude={value.name for value in model.graph.input})
        self.values: dict[str, np.ndarray] = {}  # float64 working copies of read constants
        self.dtypes: dict[str, np.dtype] = {}
        self.changed: set[str] = set()

    def is_constant(self, name: str) -> bool:
        return bool(name) and name in self.sources

    def why_not_rewritable(self, name: str) -> str | None:
        """None when `name` is an unshared float32 constant; otherwise what stops it."""
        if not self.is_constant(name):
            return f"{name!r} is not a constant"
        if self.topo.use_count(name) != 1:
            return f"constant {name!r} is read {self.topo.use_count(name)} times"
        value = self.raw(name)
        if value is None or value.dtype != np.float32:
            kind = "no dense tensor" if value is None else str(value.dtype)
            return f"constant {name!r} holds {kind}, not float32"
        if not np.all(np.isfinite(value)):
            return f"constant {name!r} holds NaN or Inf"
        return None

    def raw(self, name: str) -> np.ndarray | None:
        source = self.sources.get(name)
        return None if source is None else read_source(source)

    def get(self, name: str) -> np.ndarray:
        """The working float64 copy (the same array on every call, so rescaling accumulates)."""
        if name not in self.values:
            value = self.raw(name)
            self.dtypes[name] = value.dtype
            self.values[name] = value.astype(np.float64)
        return self.values[name]

    def mark(self, name: str) -> None:
        self.changed.add(name)

    def write_back(self) -> None:
        """Round every changed working copy once to its dtype and store it under its own name."""
        for name in sorted(self.changed):
            tensor = numpy_helper.from_array(self.values[name].astype(self.dtypes[name]), name)
            write_source(self.sources[name], tensor)


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    work = onnx.ModelProto()
    work.CopyFrom(model)
    return work


def clamp_scales(scales: np.ndarray, max_scale: float) -> np.ndarray:
    return np.clip(scales, 1.0 / max_scale, max_scale)


class Skipped(Exception):
    """Raised while one place is examined or rewritten; the pass records it as skipped."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def count_reasons(skipped: Iterable) -> dict[str, int]:
    """How many entries give each `reason`, in order of first appearance."""
    counts: dict[str, int] = {}
    for skip in skipped:
        counts[skip.reason] = counts.get(skip.reason, 0) + 1
    return counts
