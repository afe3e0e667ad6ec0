"""Lint a Q/DQ model against what TensorRT accepts (errors) and what makes it fast (warnings).

Works on any explicitly quantized ONNX model: ours, onnxruntime.quantization's, ModelOpt's, QAT
exports. Scales and zero-points are read from initializers or Constant nodes; a scale computed by
other ops from constants is accepted unread (TensorRT folds it), one computed from run-time data
is an error. Each check is one small function over a `QdqGraph`; `CODES` lists what they report.

Decisions:
- A per-channel Q/DQ without an `axis` attribute is a warning: ONNX's default axis 1 is legal and
  sometimes intended. When axis 1 is actually wrong for the weighted op that uses the weight, or
  does not match the scale's length, the separate `per-channel-wrong-axis` /
  `scale-shape-mismatch` errors say so.
- A QuantizeLinear without zero-point quantizes to UINT8 by the ONNX spec (onnxruntime clips
  negatives to 0) while TensorRT reads it as INT8: reported as `qdq-dtype-unsupported`, since the
  model means different things on the two runtimes.
- Data movement (Reshape, Transpose, Slice, Cast, ...) and max pooling commute with per-tensor
  scaling; TensorRT moves Q/DQ across them, so the fusion checks look through them.
- Control-flow bodies (If/Loop/Scan) are not linted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from qtool.errors import QtoolError, UsageError
from qtool.graph.attributes import attribute
from qtool.graph.constants import constant_node_value
from qtool.graph.op_types import WEIGHTED_OPS
from qtool.graph.types import infer_shapes
from qtool.io.model import opset_version

SEVERITIES = ("error", "warning", "info")

# code -> (severity, what it means). Stable identifiers: tools and `--ignore` match on them.
CODES: dict[str, tuple[str, str]] = {
    "no-qdq": ("warning", "the model has no Q/DQ nodes, so nothing runs in INT8"),
    "opset-per-channel": ("error", "per-channel Q/DQ needs opset 13 or later"),
    "scale-invalid": ("error", "a scale is zero, negative, NaN or infinite"),
    "qparams-not-constant": ("error", "a scale or zero-point depends on run-time data"),
    "zero-point-nonzero": ("error", "a zero-point is not 0; TensorRT quantizes symmetrically"),
    "zero-point-shape": ("error", "zero-point and scale have different sizes"),
    "qdq-dtype-unsupported": ("error", "a quantized type TensorRT cannot run (UINT8, INT32, ...)"),
    "qdq-dtype-low-precision": ("info", "FP8/INT4/FP4 quantization needs recent GPUs and TensorRT"),
    "per-channel-activation": ("error", "a per-channel scale on an activation"),
    "per-channel-implicit-axis": ("warning", "a per-channel Q/DQ relies on ONNX's default axis 1"),
    "per-channel-wrong-axis": ("error", "a per-channel weight scale not along the output channels"),
    "scale-shape-mismatch": ("error", "the scale's length differs from the quantized axis' size"),
    "weighted-output-quantized": ("warning", "Q/DQ on a weighted op's output blocks its fusions"),
    "dq-unfused-consumer": ("warning", "a DequantizeLinear feeds an op TensorRT cannot run in INT8"),
    "dangling-quantize": ("warning", "a QuantizeLinear not followed by a DequantizeLinear"),
    "dangling-dequantize": ("warning", "a DequantizeLinear of an activation with no QuantizeLinear"),
    "partially-quantized": ("warning", "a weighted op with some inputs quantized and others not"),
    "concat-scale-mismatch": ("warning", "Concat inputs with different scales (or some unquantized)"),
    "qdq-pair-mismatch": ("warning", "a Q and its DQ disagree on scale, zero-point or axis"),
    "onnxruntime-load": ("error", "onnxruntime refuses the model (session creation, no optimizations)"),
}

# Ops with INT8 kernels in TensorRT: a Q/DQ pair in front of them fuses into the op.
INT8_COMPUTE_OPS = frozenset(WEIGHTED_OPS + (
    "AveragePool", "GlobalAveragePool", "Concat", "QuantizeLinear",
))
# Ops that also take a dequantized input without a float fallback: the residual Add fuses into the
# convolution producing its other input.
INT8_CONSUMER_OPS = INT8_COMPUTE_OPS | {"Add"}
# Ops TensorRT moves Q/DQ across: data movement and max pooling commute with a positive
# per-tensor scale, so a dequantized tensor stays "quantized" through them.
PASS_THROUGH_OPS = frozenset({
    "Identity", "Cast", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice",
    "Split", "Gather", "Pad", "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "Resize",
    "MaxPool", "GlobalMaxPool",
})
RELU_LIKE_OPS = frozenset({"Relu", "LeakyRelu", "Clip"})
# INT8 kernels worth a Q only where it fuses into the op producing their input.
_OPTIONAL_INT8_OPS = frozenset({"AveragePool", "GlobalAveragePool"})
_CASTS = frozenset({"Cast", "Identity"})

INT8_TYPES = {TensorProto.INT8}
LOW_PRECISION_TYPES = {TensorProto.FLOAT8E4M3FN, TensorProto.INT4, TensorProto.FLOAT4E2M1}
_Q = "QuantizeLinear"
_DQ = "DequantizeLinear"
_MODEL = "<model>"


@dataclass(frozen=True)
class Finding:
    severity: str
    code: str
    node: str
    message: str

    def to_dict(self) -> dict:
        return {"severity": self.severity, "code": self.code, "node": self.node,
                "message": self.message}

    def format(self) -> str:
        return f"{self.severity:<7} {self.code:<26} {self.node}: {self.message}"


@dataclass(frozen=True)
class CheckReport:
    findings: tuple[Finding, ...]
    qdq_nodes: int
    ignored: tuple[str, ...] = ()

    def count(self, severity: str) -> int:
        return sum(1 for finding in self.findings if finding.severity == severity)

    def counts(self) -> dict[str, int]:
        return {severity: self.count(severity) for severity in SEVERITIES}

    def passed(self, strict: bool = False) -> bool:
        """No errors; with strict, no warnings either (infos never fail)."""
        return self.count("error") == 0 and not (strict and self.count("warning"))

    def summary(self, strict: bool = False) -> str:
        counts = self.counts()
        verdict = "passed" if self.passed(strict) else "FAILED"
        mode = " (strict)" if strict else ""
        parts = [_plural(counts["error"], "error"), _plural(counts["warning"], "warning"),
                 f"{counts['info']} info"]
        return f"check {verdict}{mode}: {', '.join(parts)} in {self.qdq_nodes} Q/DQ nodes"

    def to_dict(self, strict: bool = False) -> dict:
        return {
            "passed": self.passed(strict),
            "strict": strict,
            "qdq_nodes": self.qdq_nodes,
            "counts": self.counts(),
            "ignored": list(self.ignored),
            "findings": [finding.to_dict() for finding in self.findings],
        }


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def node_label(node: onnx.NodeProto) -> str:
    """The node's name, or its first output for unnamed nodes."""
    return node.name or next((name for name in node.output if name), f"<unnamed {node.op_type}>")


def _is_default_domain(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


class QdqGraph:
    """The facts every check reads: producers, consumers, constants, types and shapes."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.opset = opset_version(model)
        self.nodes = list(graph.node)
        self.graph_outputs = {value.name for value in graph.output}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        for node in self.nodes:
            for name in node.output:
                if name:
                    self.producer[name] = node
            for slot, name in enumerate(node.input):
                if name:
                    self.consumers[name].append((node, slot))
        self._initializers = {init.name: init for init in graph.initializer}
        self._constant_nodes = {node.output[0]: node for node in self.nodes
                                if node.op_type == "Constant" and node.output}
        self._values: dict[str, np.ndarray | None] = {}
        self.constant_derived = self._constant_closure()
        self.types: dict[str, int] = {}
        self.shapes: dict[str, tuple | None] = {}
        self._read_value_infos(infer_shapes(model).graph)
        self.qdq_nodes = [n for n in self.nodes if n.op_type in (_Q, _DQ) and _is_default_domain(n)]
        self.quantize_nodes = [n for n in self.qdq_nodes if n.op_type == _Q]
        self.dequantize_nodes = [n for n in self.qdq_nodes if n.op_type == _DQ]

    # -- constants -------------------------------------------------------------------------
    def _constant_closure(self) -> set[str]:
        """Tensors fixed at build time: constants and everything computed only from them."""
        derived = set(self._initializers) | set(self._constant_nodes)
        changed = True
        while changed:  # one pass for a topologically sorted graph; more only if unsorted
            changed = False
            for node in self.nodes:
                inputs = [name for name in node.input if name]
                if not inputs or any(name not in derived for name in inputs):
                    continue
                for name in node.output:
                    if name and name not in derived:
                        derived.add(name)
                        changed = True
        return derived

    def value(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant node output; None for anything else."""
        if name not in self._values:
            if name in self._initializers:
                self._values[name] = numpy_helper.to_array(self._initializers[name])
            elif name in self._constant_nodes:
                self._values[name] = constant_node_value(self._constant_nodes[name])
            else:
                self._values[name] = None
        return self._values[name]

    # -- types and shapes ------------------------------------------------------------------
    def _read_value_infos(self, graph: onnx.GraphProto) -> None:
        for value in list(graph.input) + list(graph.value_info) + list(graph.output):
            if not value.type.HasField("tensor_type"):
                continue
            tensor_type = value.type.tensor_type
            if tensor_type.elem_type:
                self.types[value.name] = tensor_type.elem_type
            if tensor_type.HasField("shape"):
                self.shapes[value.name] = tuple(
                    dim.dim_value if dim.HasField("dim_value") else None for dim in tensor_type.shape.dim
                )
        for init in self._initializers.values():
            self.types[init.name] = init.data_type
            self.shapes[init.name] = tuple(init.dims)
        for name, node in self._constant_nodes.items():
            for attr in node.attribute:
                if attr.name == "value":
                    self.types[name] = attr.t.data_type
                    self.shapes[name] = tuple(attr.t.dims)

    def elem_type(self, name: str) -> int:
        return self.types.get(name, 0)

    # -- Q/DQ helpers ----------------------------------------------------------------------
    @staticmethod
    def scale_name(node: onnx.NodeProto) -> str:
        return node.input[1] if len(node.input) > 1 else ""

    @staticmethod
    def zero_point_name(node: onnx.NodeProto) -> str:
        return node.input[2] if len(node.input) > 2 else ""

    def scale(self, node: onnx.NodeProto) -> np.ndarray | None:
        name = self.scale_name(node)
        return self.value(name) if name else None

    def zero_point(self, node: onnx.NodeProto) -> np.ndarray | None:
        name = self.zero_point_name(node)
        return self.value(name) if name else None

    def is_per_channel(self, node: onnx.NodeProto) -> bool:
        scale = self.scale(node)
        return scale is not None and scale.size > 1

    def quantized_type(self, node: onnx.NodeProto) -> int:
        """Element type of the integer side of a Q/DQ (0 when unknown)."""
        zero_point = self.zero_point_name(node)
        if zero_point and self.elem_type(zero_point):
            return self.elem_type(zero_point)
        if node.op_type == _Q:
            # No zero-point: the output_dtype attribute (opset 21) or ONNX's default, UINT8.
            return attribute(node, "output_dtype", 0) or TensorProto.UINT8
        return self.elem_type(node.input[0])

    def is_dequantize(self, node: onnx.NodeProto | None) -> bool:
        return node is not None and node.op_type == _DQ and _is_default_domain(node)

    def is_quantize(self, node: onnx.NodeProto | None) -> bool:
        return node is not None and node.op_type == _Q and _is_default_domain(node)

    def source_dequantize(self, tensor: str) -> onnx.NodeProto | None:
        """The DequantizeLinear a tensor comes from, looking back through pass-through ops and
        ReLU-like activations (which commute with a positive scale)."""
        seen = set()
        while tensor and tensor not in seen:
            seen.add(tensor)
            node = self.producer.get(tensor)
            if node is None:
                return None
            if self.is_dequantize(node):
                return node
            if node.op_type not in PASS_THROUGH_OPS | RELU_LIKE_OPS or not node.input:
                return None
            tensor = node.input[0]
        return None

    def final_consumers(self, tensor: str, through: frozenset[str]) -> tuple[list[onnx.NodeProto], bool]:
        """Ops reading a tensor, looking forward through `through` ops; and whether it (or a
        pass-through result) is a graph output."""
        found: list[onnx.NodeProto] = []
        reaches_output = False
        stack, seen = [tensor], set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            reaches_output |= name in self.graph_outputs
            for node, slot in self.consumers.get(name, ()):
                if node.op_type in through and slot == 0:
                    stack.extend(out for out in node.output if out)
                elif all(node is not other for other in found):
                    found.append(node)
        return found, reaches_output


# -- the checks ----------------------------------------------------------------------------

def _finding(code: str, node: onnx.NodeProto | str, message: str) -> Finding:
    label = node if isinstance(node, str) else node_label(node)
    return Finding(CODES[code][0], code, label, message)


def _names(nodes: Iterable[onnx.NodeProto]) -> str:
    return ", ".join(f"{node.op_type} '{node_label(node)}'" for node in nodes)


def _format_values(array: np.ndarray, limit: int = 4) -> str:
    flat = np.asarray(array).ravel()
    shown = ", ".join(f"{float(v):.6g}" for v in flat[:limit])
    return shown if flat.size <= limit else f"{shown}, ... ({flat.size} values)"


def check_has_qdq(g: QdqGraph) -> Iterator[Finding]:
    if not g.qdq_nodes:
        yield _finding("no-qdq", _MODEL,
                       "no QuantizeLinear/DequantizeLinear nodes: nothing to check "
                       "(`qtool quantize` inserts them)")


def check_opset_per_channel(g: QdqGraph) -> Iterator[Finding]:
    if g.opset >= 13:
        return
    for node in g.qdq_nodes:
        if g.is_per_channel(node):
            yield _finding("opset-per-channel", node,
                           f"per-channel {node.op_type} needs opset 13 (the model has opset "
                           f"{g.opset}); upgrade the model's opset")


def _constant_qparam(g: QdqGraph, node: onnx.NodeProto, name: str, what: str,
                     need: str) -> Generator[Finding, None, np.ndarray | None]:
    """Yields a finding when a scale or zero-point is not a build-time constant; returns its
    value, or None when it has none to check (computed from constants only: not a finding)."""
    value = g.value(name)
    if value is None and name not in g.constant_derived:
        yield _finding("qparams-not-constant", node,
                       f"{what} '{name}' depends on run-time data; TensorRT needs {need}")
    return value


def check_scales(g: QdqGraph) -> Iterator[Finding]:
    for node in g.qdq_nodes:
        name = g.scale_name(node)
        if not name:
            continue
        scale = yield from _constant_qparam(g, node, name, "scale", "build-time constant scales")
        if scale is None:
            continue
        values = np.asarray(scale, dtype=np.float64).ravel()
        if values.size == 0:  # onnxruntime refuses it when it folds the DequantizeLinear
            yield _finding("scale-shape-mismatch", node, f"scale '{name}' has no values")
            continue
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            where = "" if values.size == 1 else f" ({int(bad.sum())} of {values.size}, first at index {index})"
            yield _finding("scale-invalid", node,
                           f"scale '{name}' is {values[index]:g}{where}; scales must be positive "
                           "and finite")


def check_zero_points(g: QdqGraph) -> Iterator[Finding]:
    for node in g.qdq_nodes:
        name = g.zero_point_name(node)
        if not name:
            continue
        zero_point = yield from _constant_qparam(g, node, name, "zero-point",
                                                 "a build-time constant 0")
        if zero_point is None:
            continue
        values = np.asarray(zero_point).astype(np.float64).ravel()
        nonzero = np.flatnonzero(values != 0)
        if nonzero.size:
            where = "" if values.size == 1 else f" ({nonzero.size} of {values.size} non-zero)"
            yield _finding("zero-point-nonzero", node,
                           f"zero-point '{name}' is {values[nonzero[0]]:g}{where}; TensorRT "
                           "supports only symmetric quantization (zero-point 0)")
        scale = g.scale(node)
        if scale is not None and scale.size != values.size:
            yield _finding("zero-point-shape", node,
                           f"zero-point '{name}' has {values.size} values but the scale has "
                           f"{scale.size}")


def check_dtypes(g: QdqGraph) -> Iterator[Finding]:
    for node in g.qdq_nodes:
        elem = g.quantized_type(node)
        if not elem or elem in INT8_TYPES:
            continue
        type_name = TensorProto.DataType.Name(elem)
        if elem in LOW_PRECISION_TYPES:
            yield _finding("qdq-dtype-low-precision", node,
                           f"quantizes to {type_name}: TensorRT runs it on recent GPUs only "
                           "(FP8: Ada/Hopper+, INT4: weight-only, FP4: Blackwell)")
            continue
        if elem == TensorProto.UINT8 and node.op_type == _Q and not g.zero_point_name(node):
            detail = ("quantizes to UINT8, the ONNX default for a QuantizeLinear without "
                      "zero-point (onnxruntime clips negatives; TensorRT would read INT8); "
                      "add an INT8 zero-point 0")
        elif elem == TensorProto.UINT8:
            detail = "uses UINT8; TensorRT runs INT8 (UINT8 only on DLA): use INT8 with zero-point 0"
        elif elem == TensorProto.INT32:
            detail = ("uses INT32 (a quantized bias?); TensorRT takes INT8/FP8/INT4/FP4 Q/DQ "
                      "only: keep biases in float")
        else:
            detail = f"uses {type_name}; TensorRT takes INT8 (or FP8/INT4/FP4) Q/DQ only"
        yield _finding("qdq-dtype-unsupported", node, detail)


def _expected_weight_axis(consumer: onnx.NodeProto, slot: int, rank: int | None) -> int | None:
    """Output-channel axis of a weighted op's weight input; None when not a weight slot."""
    op = consumer.op_type
    if slot != 1:
        return None
    if op == "Conv":
        return 0
    if op == "ConvTranspose":
        return 1
    if op == "Gemm":
        return 0 if attribute(consumer, "transB", 0) else 1
    if op == "MatMul" and rank is not None and rank >= 2:
        return rank - 1
    return None


def _weight_consumers(g: QdqGraph, tensor: str) -> list[tuple[onnx.NodeProto, int]]:
    """(weighted op, slot) reading a tensor directly or through Identity/Cast."""
    found, stack, seen = [], [tensor], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for node, slot in g.consumers.get(name, ()):
            if node.op_type in ("Identity", "Cast"):
                stack.extend(node.output)
            elif node.op_type in WEIGHTED_OPS:
                found.append((node, slot))
    return found


def check_per_channel(g: QdqGraph) -> Iterator[Finding]:
    for node in g.qdq_nodes:
        scale = g.scale(node)
        if scale is None or scale.size <= 1:
            continue
        data = node.input[0]
        if data not in g.constant_derived:
            yield _finding("per-channel-activation", node,
                           f"per-channel scale ({scale.size} values) on activation '{data}'; "
                           "TensorRT supports per-channel scales only for weights")
            continue
        axis_attr = attribute(node, "axis")
        if axis_attr is None:
            yield _finding("per-channel-implicit-axis", node,
                           f"per-channel scale ({scale.size} values) without an axis attribute: "
                           "ONNX then uses axis 1; write the axis explicitly")
        axis = 1 if axis_attr is None else int(axis_attr)
        shape = g.shapes.get(data)
        rank = len(shape) if shape is not None else None
        if rank is not None and rank > 0:
            axis = axis + rank if axis < 0 else axis
        if scale.ndim > 1 and attribute(node, "block_size", 0) == 0:
            yield _finding("scale-shape-mismatch", node,
                           f"scale has shape {list(scale.shape)}; per-channel scales are 1-D")
            continue
        if shape is not None and 0 <= axis < len(shape) and shape[axis] and scale.ndim == 1 \
                and shape[axis] != scale.size:
            yield _finding("scale-shape-mismatch", node,
                           f"scale has {scale.size} values but axis {axis} of '{data}' "
                           f"{list(shape)} has {shape[axis]}")
        if node.op_type != _DQ:
            continue  # the weighted op reads the DQ; a Q's axis is compared with its DQ's
        for consumer, slot in _weight_consumers(g, node.output[0]):
            expected = _expected_weight_axis(consumer, slot, rank)
            if expected is not None and expected != axis:
                yield _finding("per-channel-wrong-axis", node,
                               f"per-channel scale along axis {axis} of weight '{data}', but "
                               f"{consumer.op_type} '{node_label(consumer)}' has its output "
                               f"channels on axis {expected}")


def check_weighted_outputs(g: QdqGraph) -> Iterator[Finding]:
    for node in g.nodes:
        if node.op_type not in WEIGHTED_OPS or not node.output:
            continue
        out = node.output[0]
        # Casts between the op and its Q (FP16 conversion below opset 19) change nothing here.
        users, output_use = g.final_consumers(out, _CASTS)
        quantizers = [user for user in users if g.is_quantize(user)]
        if not quantizers:
            continue
        problems: list[str] = []
        others = [user for user in users if not g.is_quantize(user)]
        blocked: list[onnx.NodeProto] = []
        readers: list[onnx.NodeProto] = []  # every node reading the dequantized output
        to_output = False
        for quantizer in quantizers:
            for dq, _ in g.consumers.get(quantizer.output[0], ()):
                if not g.is_dequantize(dq):
                    continue
                finals, reaches = g.final_consumers(dq.output[0], PASS_THROUGH_OPS)
                to_output |= reaches
                readers += finals
                blocked += [f for f in finals if f.op_type not in INT8_COMPUTE_OPS
                            and not _residual_of_other_conv(g, f, node)
                            and all(f is not b for b in blocked)]
        # Read in float too, the output cannot be written in INT8, so the Q runs alone. That is
        # the price of a next weighted op (or Concat, or residual Add) in INT8, which needs its
        # input quantized; an average pool gains too little from it.
        if (others or output_use) and readers and all(
                f.op_type in _OPTIONAL_INT8_OPS for f in readers):
            problems.append("the float output is also used by "
                            + (_names(others) if others else "the graph output")
                            + f", so the Q runs alone for {_names(readers)} only")
        if blocked:
            problems.append(f"the Q/DQ then feeds {_names(blocked)}, which would otherwise fuse "
                            f"into the {node.op_type}")
        if to_output:
            problems.append("the Q/DQ then reaches a graph output")
        if problems:
            yield _finding("weighted-output-quantized", node,
                           f"output '{out}' is quantized by {_names(quantizers)} but "
                           + "; ".join(problems)
                           + ": quantize the inputs of the next weighted op instead")


def _residual_of_other_conv(g: QdqGraph, add: onnx.NodeProto, source: onnx.NodeProto) -> bool:
    """True when `add` is an Add that fuses into a conv other than `source`: one of its inputs
    comes straight (through a folded BatchNormalization at most) from another quantized Conv
    that feeds nothing else. The dequantized value is then that fusion's residual input, which
    is exactly where TensorRT wants a Q/DQ; the Add was never going to fuse into `source`."""
    if add.op_type != "Add":
        return False
    for tensor in add.input:
        consumer = add
        while tensor:
            users = [user for user, _ in g.consumers.get(tensor, ())]
            producer = g.producer.get(tensor)
            if len(users) != 1 or users[0] is not consumer or tensor in g.graph_outputs \
                    or producer is None:
                break
            if producer.op_type == "BatchNormalization" and producer.input:
                consumer, tensor = producer, producer.input[0]
                continue
            if producer.op_type == "Conv" and producer is not source and \
                    g.source_dequantize(producer.input[0]) is not None:
                return True
            break
    return False


def check_dq_consumers(g: QdqGraph) -> Iterator[Finding]:
    through = PASS_THROUGH_OPS | RELU_LIKE_OPS
    for node in g.dequantize_nodes:
        finals, _ = g.final_consumers(node.output[0], through)
        unfused = [f for f in finals if f.op_type not in INT8_CONSUMER_OPS]
        if unfused:
            yield _finding("dq-unfused-consumer", node,
                           f"feeds {_names(unfused)}, which TensorRT cannot run in INT8: the "
                           "Q/DQ only adds rounding error and time there")


def check_dangling(g: QdqGraph) -> Iterator[Finding]:
    for node in g.quantize_nodes:
        out = node.output[0]
        users = [user for user, _ in g.consumers.get(out, ())]
        others = [user for user in users if not g.is_dequantize(user)]
        if not users and out not in g.graph_outputs:
            yield _finding("dangling-quantize", node, f"output '{out}' is not used")
        elif others or out in g.graph_outputs:
            where = _names(others) if others else "a graph output"
            yield _finding("dangling-quantize", node,
                           f"integer output '{out}' feeds {where}, not a DequantizeLinear")
    for node in g.dequantize_nodes:
        data = node.input[0]
        if data in g.constant_derived:
            continue  # pre-quantized weights: DQ only is the normal form
        source = g.producer.get(data)
        while source is not None and source.op_type in PASS_THROUGH_OPS and source.input:
            source = g.producer.get(source.input[0])
        if not g.is_quantize(source):
            origin = "a graph input" if source is None else f"{source.op_type} '{node_label(source)}'"
            yield _finding("dangling-dequantize", node,
                           f"input '{data}' comes from {origin}, not a QuantizeLinear")


def check_partially_quantized(g: QdqGraph) -> Iterator[Finding]:
    for node in g.nodes:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        names = list(node.input[:2])
        quantized = [g.source_dequantize(name) is not None for name in names]
        if any(quantized) and not all(quantized):
            done = names[quantized.index(True)]
            missing = names[quantized.index(False)]
            role = "weight" if missing in g.constant_derived else "input"
            yield _finding("partially-quantized", node,
                           f"'{done}' is quantized but {role} '{missing}' is not: TensorRT runs "
                           f"the {node.op_type} in float and the Q/DQ only costs time")


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                                equal_nan=True)


def check_concat_scales(g: QdqGraph) -> Iterator[Finding]:
    for node in g.nodes:
        if node.op_type != "Concat":
            continue
        inputs = [name for name in node.input if name]
        sources = [g.source_dequantize(name) for name in inputs]
        if not any(sources):
            continue
        plain = [name for name, dq in zip(inputs, sources) if dq is None and name not in g.constant_derived]
        if plain:
            yield _finding("concat-scale-mismatch", node,
                           f"inputs {', '.join(repr(n) for n in plain)} are not quantized while "
                           "others are: TensorRT runs the Concat in float")
            continue
        scales = [(dq, g.scale(dq)) for dq in sources if dq is not None]
        if any(scale is None for _, scale in scales):
            continue
        first = scales[0][1]
        if any(not _same(first, scale) for _, scale in scales[1:]):
            listed = ", ".join(f"{_format_values(s)} from '{node_label(dq)}'" for dq, s in scales)
            yield _finding("concat-scale-mismatch", node,
                           f"inputs have different scales ({listed}): TensorRT requantizes them; "
                           "give all Concat inputs one scale")


def check_pairs(g: QdqGraph) -> Iterator[Finding]:
    for quantizer in g.quantize_nodes:
        for dq, _ in g.consumers.get(quantizer.output[0], ()):
            if not g.is_dequantize(dq):
                continue
            differences = []
            q_scale, dq_scale = g.scale(quantizer), g.scale(dq)
            if q_scale is not None and dq_scale is not None and not _same(q_scale, dq_scale):
                differences.append(f"scale {_format_values(q_scale)} vs {_format_values(dq_scale)}")
            q_zero, dq_zero = g.zero_point(quantizer), g.zero_point(dq)
            if (q_zero is not None or dq_zero is not None) and not _same(
                    _zeros_like_missing(q_zero, dq_zero), _zeros_like_missing(dq_zero, q_zero)):
                differences.append("zero-point")
            per_channel = g.is_per_channel(quantizer) or g.is_per_channel(dq)
            q_axis, dq_axis = attribute(quantizer, "axis", 1), attribute(dq, "axis", 1)
            if per_channel and q_axis != dq_axis:
                differences.append(f"axis {q_axis} vs {dq_axis}")
            if differences:
                yield _finding("qdq-pair-mismatch", dq,
                               f"differs from its QuantizeLinear '{node_label(quantizer)}' in "
                               + ", ".join(differences))


def _zeros_like_missing(value: np.ndarray | None, other: np.ndarray | None) -> np.ndarray | None:
    """A missing zero-point means 0: compare it as zeros shaped like the given one."""
    if value is None and other is not None:
        return np.zeros_like(np.asarray(other, np.float64))
    return value


CHECKS: tuple[Callable[[QdqGraph], Iterator[Finding]], ...] = (
    check_has_qdq,
    check_opset_per_channel,
    check_scales,
    check_zero_points,
    check_dtypes,
    check_per_channel,
    check_weighted_outputs,
    check_dq_consumers,
    check_dangling,
    check_partially_quantized,
    check_concat_scales,
    check_pairs,
)


def check_runtime_load(model: onnx.ModelProto) -> Iterator[Finding]:
    """onnxruntime's own verdict, when it is installed: a model TensorRT's rules allow can still
    break ONNX's (an FP16 scale before opset 19, a DequantizeLinear of a float, ...). Graph
    optimizations are off, so what is checked is the model as written."""
    from qtool.backends.onnxruntime.installed import onnxruntime_installed
    from qtool.backends.onnxruntime.session import create_session

    if not onnxruntime_installed():
        return

    try:
        create_session(model, optimize=False)
    except QtoolError as exc:
        yield _finding("onnxruntime-load", _MODEL, str(exc))


def check_model(model: onnx.ModelProto, ignore: Iterable[str] = ()) -> CheckReport:
    """Run every check; findings sorted by severity (errors first), then in check order."""
    ignore = tuple(dict.fromkeys(ignore))
    unknown = [code for code in ignore if code not in CODES]
    if unknown:
        raise UsageError(f"unknown check code {unknown[0]!r}; known codes: {', '.join(CODES)}")
    g = QdqGraph(model)
    findings = [finding for check in CHECKS for finding in check(g) if finding.code not in ignore]
    if "onnxruntime-load" not in ignore:
        findings.extend(check_runtime_load(model))
    findings.sort(key=lambda finding: SEVERITIES.index(finding.severity))
    return CheckReport(tuple(findings), len(g.qdq_nodes), ignore)
