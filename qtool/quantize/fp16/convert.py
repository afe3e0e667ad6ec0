"""The FP16 conversion from start to end, and the check for Q/DQ fusions it could not keep."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import onnx

from qtool.graph.op_types import WEIGHTED_OPS
from qtool.graph.topology import Topology, node_label
from qtool.quantize.fp16.casts import insert_casts, pinned_types, update_declarations
from qtool.quantize.fp16.constants import resolve_constants
from qtool.quantize.fp16.modes import decide_modes
from qtool.quantize.fp16.ops import DEFAULT_FP32_OPS, DQ
from qtool.quantize.fp16.opset import upgrade_for_qdq
from qtool.quantize.fp16.scales import raise_tiny_weight_scales, snap_scales
from qtool.quantize.fp16.working_graph import GraphUnderConversion

log = logging.getLogger("qtool")


def convert_to_fp16(model: onnx.ModelProto, keep_io_types: bool = True, *,
                    fp32_ops: Iterable[str] = DEFAULT_FP32_OPS,
                    fp32_nodes: Iterable[str] = ()) -> onnx.ModelProto:
    """A new model with float32 computation outside Q/DQ regions turned into float16.

    The input model is not modified. A model holding Q/DQ nodes below opset 19 is upgraded to
    opset 19 first (QtoolError when it cannot be). keep_io_types=True keeps float32 graph inputs and outputs
    (Casts at the boundary); False makes them float16. fp32_ops / fp32_nodes keep op types / node
    names in float32.
    """
    model = upgrade_for_qdq(model)
    converted = _convert(GraphUnderConversion(model, keep_io_types, frozenset(fp32_ops),
                                              frozenset(fp32_nodes)))
    casts = casts_before_weighted_ops(converted)
    if casts:
        # only a Q/DQ whose scale float16 cannot hold exactly is left in float32 (package notes)
        log.warning("fp16: %d weighted op(s) read a dequantized input through a Cast because its "
                    "scale is outside float16's normal range (%s); TensorRT may not fuse them "
                    "into INT8 layers", len(casts), ", ".join(casts[:5]))
    return converted


def _convert(g: GraphUnderConversion) -> onnx.ModelProto:
    raise_tiny_weight_scales(g)
    decide_modes(g)
    snap_scales(g)
    pins = pinned_types(g)
    result = insert_casts(g, pins, resolve_constants(g))
    del g.graph.node[:]
    g.graph.node.extend(result.nodes)
    update_declarations(g, result)
    log.debug("fp16: %d of %d nodes in float16", len(g.half), len(g.nodes))
    return g.model


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
            if source is not None and source.op_type == DQ:
                found.append(node_label(node))
                break
    return found
