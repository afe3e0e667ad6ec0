"""The checks of an engine build that need no TensorRT: options, the model's Q/DQ and FP16,
optimization profiles (from --shapes, or a default from the calibration's input signature, see
shapes.py) and the output paths. They give the same one-line error with or without a GPU."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import onnx

from qtool.backends.tensorrt.build_options import BuildOptions
from qtool.backends.tensorrt.shapes import (
    check_profiles,
    default_profile,
    is_dynamic,
    parse_profiles,
)
from qtool.calib.calibfile.paths import calibration_files
from qtool.errors import QtoolError
from qtool.graph.op_types import QDQ_OPS
from qtool.io.model import input_specs, load_model
from qtool.io.outputs import beside, guard_outputs

log = logging.getLogger("qtool")



@dataclass
class BuildPlan:
    model_path: Path
    output: Path
    profiles: list
    qdq_nodes: int
    timing_cache: Path | None
    holds_fp16: bool = False
    profile_note: str = ""  # where a profile made without --shapes came from
    profile_warned: bool = False  # ... a batch defaulted to 1, already logged as a warning


def default_engine_path(model_path) -> Path:
    return beside(model_path, Path(model_path).stem + ".engine")


def count_qdq_nodes(model: onnx.ModelProto) -> int:
    """QuantizeLinear/DequantizeLinear nodes of the default domain, in subgraphs too."""
    def count(graph) -> int:
        total = 0
        for node in graph.node:
            if node.op_type in QDQ_OPS and node.domain in ("", "ai.onnx"):
                total += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    total += count(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    total += sum(count(g) for g in attr.graphs)
        return total
    return count(model.graph)


def plan_build(model_path, output=None, options: BuildOptions | None = None) -> BuildPlan:
    """Every check that needs no TensorRT; raises QtoolError with one line on the first problem."""
    options = options or BuildOptions()
    options.validate()
    model_path = Path(model_path)
    model = load_model(model_path, load_weights=False)
    qdq = count_qdq_nodes(model)
    if options.int8 and qdq == 0:
        raise QtoolError(
            f"{model_path} has no Q/DQ (QuantizeLinear/DequantizeLinear) nodes: run `qtool quantize` "
            "first (qtool builds INT8 engines from Q/DQ models; it offers no implicit calibration)"
        )
    specs = input_specs(model)
    profile_note, warned = "", False
    if options.shapes:
        profiles = parse_profiles(options.shapes)
    else:
        profiles, profile_note, warned = _default_profiles(model_path, specs, options)
    check_profiles(profiles, specs)
    output = Path(output) if output is not None else default_engine_path(model_path)
    cache = Path(options.timing_cache) if options.timing_cache else None
    guard_outputs([output, record_path(output), cache], models=[model_path],
                  calibrations=calibration_files(options.calib))
    return BuildPlan(model_path, output, profiles, qdq, cache, holds_fp16(model), profile_note,
                     warned)


def calibration_beside(model_path: Path) -> Path | None:
    """MODEL.calib.json beside the model, or the FP32 model's (net.calib.json for net.int8.onnx)."""
    model_path = Path(model_path)
    stems = [model_path.stem] + ([model_path.stem.removesuffix(".int8")]
                                 if model_path.stem.endswith(".int8") else [])
    for stem in stems:
        candidate = model_path.with_name(stem + ".calib.json")
        if candidate.is_file():
            return candidate
    return None


def _default_profiles(model_path: Path, specs, options: BuildOptions) -> tuple[list, str, bool]:
    """No --shapes: one profile from the calibration's input signature, --batch, or batch 1
    (then after one warning). Returns the profiles, where they came from, and whether that was
    the warning."""
    if not any(is_dynamic(spec.shape) for spec in specs):
        return [], "", False
    from qtool.calib.calibfile import read_calibration
    from qtool.calib.signature import recorded_batch_axes, seen_ranges

    path = Path(options.calib) if options.calib else calibration_beside(model_path)
    seen, batch_axes, seen_from = {}, {}, ""
    if path is not None:
        try:
            inputs = read_calibration(path).inputs
            seen, batch_axes = seen_ranges(inputs), recorded_batch_axes(inputs)
        except QtoolError as exc:
            if options.calib:
                raise
            log.warning("ignoring %s for the engine's input sizes: %s", path, exc)
        else:
            seen_from = str(path)
    profile, defaulted = default_profile(specs, seen, options.batch, seen_from, batch_axes)
    ranges = " ".join(f"--shapes {r.describe()}" for r in profile.values())
    if defaulted:
        text = (f"input{'s' if len(defaulted) > 1 else ''} {', '.join(map(repr, defaulted))}: "
                "dynamic batch axis of unknown size set to 1; optimization profile 0 is "
                f"{ranges} (give --batch N, --calib or --shapes for other sizes)")
        log.warning("%s", text)
        return [profile], text, True
    source = f"the sizes seen in {seen_from}" if seen_from and not options.batch else (
        f"--batch {options.batch}" + (f" and the sizes seen in {seen_from}" if seen_from else ""))
    return [profile], f"optimization profile 0 from {source}: {ranges}", False


def holds_fp16(model: onnx.ModelProto) -> bool:
    """Whether the model computes in FP16 anywhere: FP16 weights, inputs, outputs, declared
    tensors or Casts to FP16 (main graph; `load_weights=False` models keep their data types)."""
    half = onnx.TensorProto.FLOAT16
    graph = model.graph
    if any(init.data_type == half for init in graph.initializer):
        return True
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    if any(value.type.tensor_type.elem_type == half for value in values):
        return True
    for node in graph.node:
        for attr in node.attribute:
            if (node.op_type == "Cast" and attr.name == "to" and attr.i == half) or (
                    attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == half):
                return True
    return False


def record_path(engine_path) -> Path:
    """The build record beside the engine: model.engine -> model.engine.json."""
    path = Path(engine_path)
    return path.with_name(path.name + ".json")
