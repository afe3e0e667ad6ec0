"""Bake FP16 into the ONNX graph outside the Q/DQ regions.

TensorRT 11 builds strongly typed networks: no FP16 builder flag, every layer runs in the type
its ONNX tensors declare. So "FP16 everywhere that is not INT8" has to be written into the model.

How each part of the graph is treated:
- An op runs in FP16 when its schema (at the model's opset) allows float16 for every float32
  tensor it touches through a type variable; inputs fixed to float32 by the schema (Resize
  `scales`) stay float32. Cast nodes meet each op's needs at the boundaries; one Cast per tensor
  and target type, shared by all readers.
- Kept in float32, with Casts around them: ops in `fp32_ops` (default `DEFAULT_FP32_OPS`, chosen
  for accuracy and onnxruntime support) and the node names in `fp32_nodes`; accumulating
  scatters; ops of other domains; ops with subgraphs
  (If/Loop/Scan, whose bodies are left as they are and whose outer-scope reads keep float32);
  ops whose outputs are typed by attributes (`ALWAYS_FP32_OPS`); Casts to non-float types
  (float16 would lose integers above 2048); float arithmetic on shapes (computed from Shape/Size,
  sizes need exact integers); constant-only computations whose results are only read as float32.
- Initializers and Constant nodes become float16 where their readers need it (a float16 copy when
  readers need both), values clamped to +-65504. ConstantOfShape values and Cast(to=FLOAT)
  inside FP16 regions follow.
- Graph inputs and outputs keep float32 with Casts at the boundary unless keep_io_types=False;
  then every float32 input and output becomes float16.

Q/DQ regions. Below opset 19 QuantizeLinear takes only float32 input and scale and
DequantizeLinear returns float32, so every weighted op would read DQ -> Cast(fp16) -> op: TensorRT's
strongly typed mode gives DQ the scale's type and would have to fuse through the Cast to keep the
layer in INT8. So a model holding Q/DQ nodes is first upgraded to opset 19 (`FP16_QDQ_OPSET`), or
the conversion fails with one line. From opset 19 the float side of a Q/DQ has the scale's
type, so a DequantizeLinear feeding FP16 ops gets a float16 scale and emits float16 directly, and a
QuantizeLinear of a float16 tensor takes a float16 scale: no Casts, which is the pattern TensorRT's
strongly typed mode reads as "INT8 layer with FP16 I/O". A QuantizeLinear of constant weights
keeps float32 weights (rounding weights to float16 before quantizing would change the INT8
values). Q/DQ scales are snapped to float16-representable values so both nodes of a pair stay
equal whichever type each gets. Weight scales below float16's smallest normal number (dead or
near-dead channels, often all zero) are raised to 2**-14, requantizing stored INT8 weights; any
other Q/DQ whose scale is outside float16's normal range (2**-14 .. 65504) keeps float32 with
Casts, and a warning names the weighted ops that then read DQ -> Cast.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qtool.errors import QtoolError
from qtool.graph.attributes import attribute
from qtool.graph.constants import constant_node_value
from qtool.graph.op_types import DEQUANTIZE_LINEAR, QUANTIZE_LINEAR, SHAPE_OPS, WEIGHTED_OPS
from qtool.graph.topology import Topology, node_label
from qtool.graph.types import infer_shapes
from qtool.io.model import ensure_opset, opset_version

log = logging.getLogger("qtool")

FLOAT = TensorProto.FLOAT
HALF = TensorProto.FLOAT16
FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0 ** -14

# Kept in float32 by default. Accuracy: detection post-processing compares close scores and
# coordinates beyond 2048; running sums and sums of squares/products overflow float16's 65504.
# onnxruntime: its expansion of MeanVarianceNormalization mixes float32 constants into float16.
DEFAULT_FP32_OPS = frozenset({
    "NonMaxSuppression", "TopK", "RoiAlign",
    "CumSum", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "ReduceProd",
    "MeanVarianceNormalization",
})
# Output types set by attributes this pass does not rewrite.
ALWAYS_FP32_OPS = frozenset({
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
    "Bernoulli", "EyeLike", "BitCast",
})
# Scatters that accumulate (reduction add/mul/max/min) sum in float16 and have no float16
# onnxruntime CPU kernel.
_ACCUMULATING_SCATTERS = ("ScatterElements", "ScatterND")
_Q, _DQ = QUANTIZE_LINEAR, DEQUANTIZE_LINEAR
_FP16_TYPE_STR = "tensor(float16)"
# The first opset whose DequantizeLinear outputs its scale's type (float16 straight into the op).
FP16_QDQ_OPSET = 19


def convert_to_fp16(model: onnx.ModelProto, keep_io_types: bool = True, *,
                    fp32_ops: Iterable[str] = DEFAULT_FP32_OPS,
                    fp32_nodes: Iterable[str] = ()) -> onnx.ModelProto:
    """A new model with float32 computation outside Q/DQ regions turned into float16.

    The input model is not modified. A model holding Q/DQ nodes below opset 19 is upgraded to
    opset 19 first (QtoolError when it cannot be). keep_io_types=True keeps float32 graph inputs and outputs
    (Casts at the boundary); False makes them float16. fp32_ops / fp32_nodes keep op types / node
    names in float32.
    """
    model = _upgrade_for_qdq(model)
    converted = _Converter(model, keep_io_types, frozenset(fp32_ops), frozenset(fp32_nodes)).run()
    casts = casts_before_weighted_ops(converted)
    if casts:
        # only a Q/DQ whose scale float16 cannot hold exactly is left in float32 (module notes)
        log.warning("fp16: %d weighted op(s) read a dequantized input through a Cast because its "
                    "scale is outside float16's normal range (%s); TensorRT may not fuse them "
                    "into INT8 layers", len(casts), ", ".join(casts[:5]))
    return converted


def _upgrade_for_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model at opset FP16_QDQ_OPSET or later when it holds Q/DQ nodes (unchanged otherwise)."""
    current = opset_version(model)
    if current >= FP16_QDQ_OPSET or not any(
            node.op_type in (_Q, _DQ) and node.domain in ("", "ai.onnx") for node in model.graph.node):
        return model
    try:
        upgraded = ensure_opset(model, FP16_QDQ_OPSET)
    except QtoolError as exc:
        raise QtoolError(
            f"FP16 with Q/DQ nodes needs opset {FP16_QDQ_OPSET} (DequantizeLinear writing FP16 "
            f"straight into the quantized op) and the model's opset {current} cannot be upgraded: "
            f"{exc}") from None
    # opset 19 needs IR version 9
    upgraded.ir_version = max(upgraded.ir_version, 9)
    log.info("fp16: opset %d upgraded to %d for FP16 Q/DQ", current, FP16_QDQ_OPSET)
    return upgraded


def casts_before_weighted_ops(model: onnx.ModelProto) -> list[str]:
    """Names of the weighted ops (Conv, ConvTranspose, Gemm, MatMul) that read a
    DequantizeLinear output through a Cast: the pattern that can cost TensorRT its INT8 fusion."""
    topology = Topology.of(model.graph)
    found = []
    for node in topology.nodes:
        if node.op_type not in WEIGHTED_OPS:
            continue
        for name in node.input[:2]:
            cast = topology.producer_node(name)
            if cast is None or cast.op_type != "Cast" or not cast.input:
                continue
            source = topology.producer_node(cast.input[0])
            if source is not None and source.op_type == _DQ:
                found.append(node_label(node))
                break
    return found


def to_half(values: np.ndarray) -> np.ndarray:
    """float16 copy with finite values clamped to +-65504 (NaN and +-Inf kept)."""
    values = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(values)
    clamped = np.where(finite, np.clip(values, -FP16_MAX, FP16_MAX), values)
    return clamped.astype(np.float16)


def half_safe_scale(values: np.ndarray) -> bool:
    """True when every value is a normal float16 number (scales must stay exact and non-zero)."""
    magnitude = np.abs(np.asarray(values, dtype=np.float64))
    return bool(np.all(np.isfinite(magnitude)) and np.all(magnitude >= FP16_MIN_NORMAL)
                and np.all(magnitude <= FP16_MAX))


def _set_int_attr(node: onnx.NodeProto, name: str, value: int) -> None:
    for attr in node.attribute:
        if attr.name == name:
            attr.i = value
            return
    node.attribute.append(helper.make_attribute(name, value))


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for attr in node.attribute)


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Names read inside a node's subgraphs (a superset of the outer names they capture)."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for graph in graphs:
            for inner in graph.node:
                names.update(name for name in inner.input if name)
                names.update(_subgraph_reads(inner))
    return names


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Nodes in an order where each comes after the producers of what it reads."""
    produced = {name for node in nodes for name in node.output if name}
    ready = set(available)
    pending = list(nodes)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            needs = {name for name in node.input if name} | (_subgraph_reads(node) & produced)
            if needs <= ready:
                ordered.append(node)
                ready.update(name for name in node.output if name)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # a cycle or a dangling read: keep the file's order
            return ordered + rest
        pending = rest
    return ordered


class _Schema:
    """Which inputs/outputs of a node may change from float32 to float16, from its schema."""

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


class _Converter:
    def __init__(self, model: onnx.ModelProto, keep_io_types: bool, fp32_ops: frozenset[str],
                 fp32_nodes: frozenset[str]):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.graph = self.model.graph
        self.keep_io = keep_io_types
        self.fp32_ops = fp32_ops | ALWAYS_FP32_OPS
        self.fp32_nodes = fp32_nodes
        self.opset = opset_version(self.model)
        self.initializers = {init.name: init for init in self.graph.initializer}
        self.runtime_inputs = [v.name for v in self.graph.input if v.name not in self.initializers]
        self.nodes = _topological(list(self.graph.node),
                                  set(self.initializers) | set(self.runtime_inputs))
        self.constant_nodes = {node.output[0]: node for node in self.nodes
                               if node.op_type == "Constant" and node.output
                               and constant_node_value(node) is not None}
        self.graph_outputs = [v.name for v in self.graph.output]
        self.subgraph_reads = set().union(*[_subgraph_reads(n) for n in self.nodes]) if self.nodes else set()
        self.consumers: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for index, node in enumerate(self.nodes):
            for slot, name in enumerate(node.input):
                if name:
                    self.consumers[name].append((index, slot))
        self._read_types()
        self.schemas = [_Schema(node, self.opset) for node in self.nodes]
        self.taken = ({name for node in self.nodes for name in node.output}
                      | {node.name for node in self.nodes} | set(self.initializers)
                      | {v.name for v in self.graph.input} | self.subgraph_reads)

    # -- facts -------------------------------------------------------------------------------
    def _read_types(self) -> None:
        inferred = infer_shapes(self.model).graph
        self.types: dict[str, int] = {}
        self.value_infos: dict[str, onnx.ValueInfoProto] = {}
        for value in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
            if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
                self.types[value.name] = value.type.tensor_type.elem_type
                self.value_infos[value.name] = value
        for init in self.graph.initializer:
            self.types[init.name] = init.data_type
        for name, node in self.constant_nodes.items():
            self.types[name] = helper.np_dtype_to_tensor_dtype(constant_node_value(node).dtype)

    def is_constant(self, name: str) -> bool:
        return name in self.initializers or name in self.constant_nodes

    def _closure(self, seeds: set[str], also: set[str], skip=()) -> set[str]:
        """Outputs of nodes whose inputs all lie in seeds | also and touch seeds at least once."""
        found = set(seeds)
        for node in self.nodes:
            inputs = [name for name in node.input if name]
            if node.op_type in skip or not inputs:
                continue
            if all(name in found or name in also for name in inputs) and any(name in found for name in inputs):
                found.update(name for name in node.output if name)
        return found

    # -- deciding which nodes run in float16 ---------------------------------------------------
    def _unused(self, name: str) -> bool:
        return (name not in self.consumers and name not in self.graph_outputs
                and name not in self.subgraph_reads)

    def _may_be_half(self, index: int) -> bool:
        node, schema = self.nodes[index], self.schemas[index]
        if (node.op_type in self.fp32_ops or (node.name and node.name in self.fp32_nodes)
                or node.domain not in ("", "ai.onnx") or _has_subgraph(node)
                or node.op_type == "Constant" or not schema.ok):
            return False
        if node.op_type == "Cast" and attribute(node, "to") not in (FLOAT, HALF):
            return False
        if node.op_type in _ACCUMULATING_SCATTERS and attribute(node, "reduction", b"none") not in (b"none", "none"):
            return False
        for names, formal, outputs in ((node.input, schema.input, False), (node.output, schema.output, True)):
            for slot, name in enumerate(names):
                if not name:
                    continue
                elem = self.types.get(name, 0)
                if elem == 0 and outputs and self._unused(name):
                    continue  # an unread optional output (Dropout's mask): its type is moot
                if elem == 0:
                    return False  # unknown type: never guess
                param = formal(slot)
                if param is None:
                    return False
                convertible, type_str, _ = param
                if elem == FLOAT and not convertible and type_str != "tensor(float)":
                    return False  # a type variable without float16 (QuantizeLinear-13's x)
        return True

    def _decide_modes(self) -> None:
        self.half = {i for i in range(len(self.nodes)) if self._may_be_half(i)}
        constants = set(self.initializers) | set(self.constant_nodes)
        shape_seeds = {node.output[0] for node in self.nodes if node.op_type in SHAPE_OPS and node.output}
        # ConstantOfShape fills a data tensor: its value is not arithmetic on sizes.
        not_sizes = (_Q, _DQ, "ConstantOfShape")
        shape_derived = self._closure(shape_seeds, constants, skip=not_sizes)
        self.constant_derived = self._closure(constants, set(), skip=())
        for index, node in enumerate(self.nodes):
            if node.op_type in not_sizes:
                continue
            reads = [name for name in node.input if name]
            if reads and any(name in shape_derived for name in reads) and all(
                    name in shape_derived or name in constants for name in reads):
                self.half.discard(index)  # arithmetic on sizes: keep exact
        self._keep_fp32_quantizer_inputs()
        self._keep_fp32_constant_folds()
        self._decide_qdq()

    def _keep_fp32_constant_folds(self) -> None:
        """Constant-only float computations read only as float32 stay float32 (no round trip)."""
        for index in reversed(range(len(self.nodes))):
            node = self.nodes[index]
            if index not in self.half or node.op_type in (_Q, _DQ):
                continue
            reads = [name for name in node.input if name]
            if not reads or not all(name in self.constant_derived for name in reads):
                continue
            float_outputs = [name for name in node.output if name and self.types.get(name) == FLOAT]
            if float_outputs and not any(self._wanted_half(name) for name in float_outputs):
                self.half.discard(index)

    def _wanted_half(self, name: str) -> bool:
        """Whether any reader of a float32 tensor would read it as float16."""
        if name in self.graph_outputs and not self.keep_io:
            return True
        return any(self.required(index, slot) == HALF for index, slot in self.consumers.get(name, ()))

    def _scale_is_half_safe(self, node: onnx.NodeProto) -> bool:
        scale = node.input[1] if len(node.input) > 1 else ""
        value = self.constant_value(scale)
        return value is not None and half_safe_scale(value)

    def _keep_fp32_quantizer_inputs(self) -> None:
        """Q/DQ (float16-capable from opset 19) stay float32 when their scale is not a normal
        float16 number, and a Q of constants (weights) always reads them in float32."""
        for index, node in enumerate(self.nodes):
            if node.op_type not in (_Q, _DQ) or index not in self.half:
                continue
            if not self._scale_is_half_safe(node) or (
                    node.op_type == _Q and node.input[0] in self.constant_derived):
                self.half.discard(index)

    def _decide_qdq(self) -> None:
        """Q/DQ in float16 only where that saves a Cast: see the module notes."""
        for index, node in enumerate(self.nodes):  # DQ: float16 when a reader wants float16
            if node.op_type == _DQ and index in self.half:
                out = node.output[0]
                readers = [(i, s) for i, s in self.consumers.get(out, ()) if self.nodes[i].op_type != _Q]
                wants = any(self.required(i, s) == HALF for i, s in readers)
                if not wants and not (out in self.graph_outputs and not self.keep_io):
                    self.half.discard(index)
        for index, node in enumerate(self.nodes):  # Q: float16 when its input arrives in float16
            if node.op_type == _Q and index in self.half and self.produced_type(node.input[0]) != HALF:
                self.half.discard(index)

    # -- types after conversion ------------------------------------------------------------
    def required(self, index: int, slot: int) -> int:
        """The type node `index` reads at input `slot` after conversion."""
        node = self.nodes[index]
        elem = self.types.get(node.input[slot], 0)
        if elem != FLOAT or index not in self.half:
            return elem
        param = self.schemas[index].input(slot) if self.schemas[index].ok else None
        return HALF if param is not None and param[0] else FLOAT

    def output_type(self, index: int, slot: int) -> int:
        node = self.nodes[index]
        elem = self.types.get(node.output[slot], 0)
        if elem != FLOAT or index not in self.half:
            return elem
        param = self.schemas[index].output(slot)
        return HALF if param is not None and param[0] else FLOAT

    def produced_type(self, name: str) -> int:
        """Type a non-constant tensor is produced in (graph inputs per keep_io_types)."""
        if name in self.producer_index:
            index, slot = self.producer_index[name]
            return self.output_type(index, slot)
        elem = self.types.get(name, 0)
        if name in self.runtime_inputs and elem == FLOAT and self._input_becomes_half(name):
            return HALF
        return elem

    def _input_becomes_half(self, name: str) -> bool:
        return not self.keep_io and name not in self.subgraph_reads

    def constant_value(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        if name in self.constant_nodes:
            return constant_node_value(self.constant_nodes[name])
        return None

    # -- rewriting --------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, counter = base, 0
        while name in self.taken:
            counter += 1
            name = f"{base}_{counter}"
        self.taken.add(name)
        return name

    def _cast(self, source: str, target: str, to: int) -> onnx.NodeProto:
        suffix = "fp16" if to == HALF else "fp32"
        return helper.make_node("Cast", [source], [target], name=self.fresh(f"{source}_cast_{suffix}"), to=to)

    def _weight_scale_readers(self, name: str) -> list[onnx.NodeProto] | None:
        """The Q/DQ nodes reading scale `name` when it quantizes weights only: every reader
        takes it as its scale and quantizes a constant (Q) or dequantizes a constant or one of
        those Q's outputs (DQ); None otherwise."""
        readers = [self.nodes[i] for i, slot in self.consumers.get(name, ()) if slot == 1]
        if not readers or len(readers) != len(self.consumers.get(name, ())):
            return None
        q_outputs = {n.output[0] for n in readers if n.op_type == _Q}
        for node in readers:
            source = node.input[0]
            if node.op_type == _Q and source in self.constant_derived:
                continue
            if node.op_type == _DQ and (source in q_outputs or self.is_constant(source)):
                continue
            return None
        return readers

    def _raise_tiny_weight_scales(self) -> None:
        """Weight scales below float16's smallest normal number (2**-14) become 2**-14, so the
        weights' DequantizeLinear can output float16 like every other (a float32 DQ would leave
        DQ -> Cast -> op). Such channels have |w| < 127 * 2**-14 (about 0.0078; near-dead,
        often all zero), so nothing clips and each weight moves by at most 2**-15. INT8 weights
        stored as constants are requantized to the new scale; a Q of float32 weights requantizes
        itself. Activation scales are left as they are (see the module notes)."""
        if self.opset < FP16_QDQ_OPSET:
            return
        self.constant_derived = self._closure(set(self.initializers) | set(self.constant_nodes), set())
        names = {n.input[1] for n in self.nodes if n.op_type in (_Q, _DQ) and len(n.input) > 1}
        for name in sorted(names):
            value = self.constant_value(name) if self.is_constant(name) else None
            if value is None or value.dtype != np.float32 or name in self.graph_outputs:
                continue
            tiny = (value > 0) & (value < FP16_MIN_NORMAL)
            readers = self._weight_scale_readers(name) if tiny.any() else None
            if readers is None:
                continue
            raised = np.where(tiny, np.float32(FP16_MIN_NORMAL), value).astype(np.float32)
            stored = [n for n in readers if n.op_type == _DQ and self.is_constant(n.input[0])]
            requantized = [self._requantized(n, value, raised) for n in stored]
            if any(r is None for r in requantized):
                continue
            for node, weights in zip(stored, requantized):
                self._replace_constant(node.input[0], weights)
            self._replace_constant(name, raised)
            log.debug("fp16: %d weight scale(s) of %s raised to 2**-14", int(tiny.sum()), name)

    def _requantized(self, node: onnx.NodeProto, old: np.ndarray, new: np.ndarray) -> np.ndarray | None:
        """The INT8 constant `node` dequantizes, on scale `new` instead of `old` (None when it
        is not plain symmetric INT8 read by this node alone)."""
        weights = self.constant_value(node.input[0])
        zero = self.constant_value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if (weights is None or weights.dtype != np.int8 or len(self.consumers.get(node.input[0], ())) != 1
                or (zero is not None and np.any(zero != 0)) or attribute(node, "block_size", 0)):
            return None
        if old.ndim == 1 and old.size > 1:
            axis = attribute(node, "axis", 1)
            axis = axis + weights.ndim if axis < 0 else axis
            shape = [1] * weights.ndim
            shape[axis] = old.size
            old, new = old.reshape(shape), new.reshape(shape)
        values = weights.astype(np.float64) * old.astype(np.float64) / new.astype(np.float64)
        return np.clip(np.round(values), -128, 127).astype(np.int8)

    def _snap_scales(self) -> None:
        """Round Q/DQ scales to float16-representable values (both nodes of a pair agree)."""
        if not any(self.nodes[i].op_type in (_Q, _DQ) for i in self.half):
            return
        for name in {n.input[1] for n in self.nodes if n.op_type in (_Q, _DQ) and len(n.input) > 1}:
            readers = self.consumers.get(name, ())
            if not self.is_constant(name) or name in self.graph_outputs or any(
                    self.nodes[i].op_type not in (_Q, _DQ) or s != 1 for i, s in readers):
                continue
            value = self.constant_value(name)
            if value is None or value.dtype != np.float32 or not half_safe_scale(value):
                continue
            self._replace_constant(name, value.astype(np.float16).astype(np.float32))

    def _replace_constant(self, name: str, value: np.ndarray) -> None:
        tensor = numpy_helper.from_array(value, name)
        if name in self.initializers:
            self.initializers[name].CopyFrom(tensor)
        else:
            node = self.constant_nodes[name]
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", tensor))

    def _resolve_constants(self) -> dict[tuple[str, int], str]:
        """Convert float32 constants read as float16 (in place, or a copy when both are read)."""
        alias: dict[tuple[str, int], str] = {}
        new_nodes: list[onnx.NodeProto] = []
        self.constant_types: dict[str, int] = {}
        for name in list(self.initializers) + list(self.constant_nodes):
            elem = self.types.get(name, 0)
            alias[(name, elem)] = name
            self.constant_types[name] = elem
            if elem != FLOAT:
                continue
            reads = {self.required(i, s) for i, s in self.consumers.get(name, ())}
            if name in self.graph_outputs or name in self.subgraph_reads:
                reads.add(FLOAT)  # graph outputs and subgraph bodies keep the declared float32
            if HALF not in reads:
                continue
            half = to_half(self.constant_value(name))
            if FLOAT in reads:
                copy = self.fresh(f"{name}_fp16")
                if name in self.initializers:
                    self.graph.initializer.append(numpy_helper.from_array(half, copy))
                else:
                    new_nodes.append(helper.make_node(
                        "Constant", [], [copy], name=self.fresh(f"{copy}_constant"),
                        value=numpy_helper.from_array(half, copy)))
                alias[(name, HALF)] = copy
            else:
                self._replace_constant(name, half)
                self._retype_graph_input(name, HALF)
                alias[(name, HALF)] = name
                del alias[(name, FLOAT)]
                self.constant_types[name] = HALF
        self.extra_constants = new_nodes
        return alias

    def _retype_graph_input(self, name: str, elem: int) -> None:
        for value in self.graph.input:  # old IR versions list initializers as inputs too
            if value.name == name:
                value.type.tensor_type.elem_type = elem

    def _rewrite_half_node(self, index: int) -> None:
        """Attributes that carry a float32 type inside a node now running in float16."""
        node = self.nodes[index]
        if node.op_type == "Cast" and attribute(node, "to") == FLOAT:
            _set_int_attr(node, "to", HALF)
        elif node.op_type == "ConstantOfShape" and self.output_type(index, 0) == HALF:
            value = attribute(node, "value")
            array = numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
            kept = [a for a in node.attribute if a.name != "value"]
            del node.attribute[:]
            node.attribute.extend(kept)
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(to_half(array))))
        elif node.op_type == _DQ and attribute(node, "output_dtype") == FLOAT:
            _set_int_attr(node, "output_dtype", HALF)

    def run(self) -> onnx.ModelProto:
        self.producer_index = {name: (i, s) for i, node in enumerate(self.nodes)
                               for s, name in enumerate(node.output) if name}
        self._raise_tiny_weight_scales()
        self._decide_modes()
        self._snap_scales()

        # Tensors that must keep a given type under their own name.
        pins: dict[str, int] = {}
        for name in self.graph_outputs:
            if self.types.get(name) == FLOAT and not self.is_constant(name) and name not in self.runtime_inputs:
                pins[name] = FLOAT if self.keep_io else HALF
        for name in self.subgraph_reads:
            if self.types.get(name) == FLOAT and not self.is_constant(name):
                pins[name] = FLOAT

        alias = self._resolve_constants()
        final_types: dict[str, int] = dict(self.constant_types)
        for name in self.runtime_inputs:
            elem = self.produced_type(name)
            alias[(name, elem)] = name
            final_types[name] = elem

        output: list[onnx.NodeProto] = list(self.extra_constants)
        new_infos: dict[str, tuple[str, int]] = {}  # new tensor -> (tensor whose shape it has, type)
        for index, node in enumerate(self.nodes):
            if index in self.half:
                self._rewrite_half_node(index)
            for slot, name in enumerate(node.input):
                if not name or self.types.get(name) != FLOAT:
                    continue
                need = self.required(index, slot)
                source = alias.get((name, need))
                if source is None:
                    have = HALF if need == FLOAT else FLOAT
                    if (name, have) not in alias:
                        continue  # produced outside this graph's knowledge: leave as is
                    source = self.fresh(f"{name}_{'fp16' if need == HALF else 'fp32'}")
                    output.append(self._cast(alias[(name, have)], source, need))
                    alias[(name, need)] = source
                    new_infos[source] = (name, need)
                node.input[slot] = source
            output.append(node)
            if node.op_type == "Constant":
                continue  # typed by _resolve_constants
            for slot, name in enumerate(node.output):
                if not name or self.types.get(name) != FLOAT:
                    if name and name in self.types:
                        final_types[name] = self.types[name]
                    continue
                produced = self.output_type(index, slot)
                wanted = pins.get(name, produced)
                if wanted == produced:
                    alias[(name, produced)] = name
                    final_types[name] = produced
                    continue
                inner = self.fresh(f"{name}_{'fp16' if produced == HALF else 'fp32'}")
                node.output[slot] = inner
                output.append(self._cast(inner, name, wanted))
                alias[(name, produced)] = inner
                alias[(name, wanted)] = name
                final_types[name] = wanted
                new_infos[inner] = (name, produced)

        del self.graph.node[:]
        self.graph.node.extend(output)
        self._update_declarations(final_types, new_infos)
        log.debug("fp16: %d of %d nodes in float16", len(self.half), len(self.nodes))
        return self.model

    def _update_declarations(self, final_types: dict[str, int], new_infos: dict[str, tuple[str, int]]) -> None:
        for value in list(self.graph.input) + list(self.graph.output) + list(self.graph.value_info):
            elem = final_types.get(value.name)
            if elem and value.type.HasField("tensor_type"):
                value.type.tensor_type.elem_type = elem
        for name, (like, elem) in new_infos.items():
            if like not in self.value_infos:
                continue  # no shape known: shape inference fills it in
            info = onnx.ValueInfoProto()
            info.CopyFrom(self.value_infos[like])
            info.name = name
            info.type.tensor_type.elem_type = elem
            self.graph.value_info.append(info)
