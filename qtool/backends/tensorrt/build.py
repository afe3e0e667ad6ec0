"""Build a TensorRT engine from an ONNX model (TensorRT 10 and 11, one code path).

    plan_build()   checks that need no TensorRT: the model reads, has Q/DQ nodes for --int8,
                   --shapes parse and cover every dynamic input (or a default profile from the
                   calibration's input signature, see shapes.py), output folders exist
    build_engine() imports TensorRT, parses, configures, builds, writes the engine atomically,
                   updates the timing cache, and inspects the engine's layer precisions

The input checks come first: they are cheap, they are about the user's own files and options,
and they give the same one-line error with or without a GPU. TensorRT is imported only after.

INT8 comes from the model's Q/DQ nodes; qtool offers no implicit (calibrator) INT8. On TensorRT 10
a weakly typed network with Q/DQ nodes gets BuilderFlag.INT8 (TensorRT needs it to build them),
with or without --int8; --int8 only insists that Q/DQ nodes are there, on every version.

A model that already holds FP16 tensors (`quantize --high-precision fp16`) is built strongly typed
on TensorRT 10 too: its own types then decide each layer's precision, as on TensorRT 11. Weakly
typed, TensorRT refuses FP16 layers without BuilderFlag.FP16, and with it may choose other
precisions than the model's; NVIDIA deprecated weak typing in TensorRT 10.12 and removed it in 11.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import onnx

from qtool.backends.imports import TRT_INSTALL_HINT, import_tensorrt
from qtool.backends.tensorrt.adapter import TrtAdapter
from qtool.backends.tensorrt.build_options import MAX_OPTIMIZATION_LEVEL
from qtool.backends.tensorrt.inspect import EngineSummary, summarize_engine_information
from qtool.backends.tensorrt.logger import shared_logger
from qtool.backends.tensorrt.shapes import (
    ShapeRange,
    check_profiles,
    default_profile,
    is_dynamic,
    parse_profiles,
)
from qtool.calib.files import calibration_files
from qtool.errors import MissingDependency, QtoolError, UsageError, first_line
from qtool.io.atomic import atomic_path, write_bytes, write_json
from qtool.io.model import input_specs, load_model, model_sha256
from qtool.io.outputs import beside, guard_outputs
from qtool.versions import tool_versions

log = logging.getLogger("qtool")

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
RECORD_FORMAT = "qtool-engine"


@dataclass
class BuildOptions:
    int8: bool = False
    fp16: bool = False
    strongly_typed: bool = False
    shapes: list = field(default_factory=list)
    workspace_mib: int | None = None
    timing_cache: str | None = None
    builder_optimization_level: int | None = None
    log_level: str = "WARNING"
    calib: str | None = None   # calibration file whose input signature sizes dynamic dims
    batch: int | None = None   # --batch N: the batch axis of every dynamic input from 1 to N

    def validate(self) -> None:
        if self.batch is not None and self.batch < 1:
            raise UsageError(f"--batch must be a positive integer (got {self.batch})")
        if self.shapes and (self.batch is not None or self.calib is not None):
            raise UsageError("--shapes gives every range itself: it takes no --batch or --calib")
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise UsageError(f"--workspace must be a positive number of MiB (got {self.workspace_mib})")
        level = self.builder_optimization_level
        if level is not None and not 0 <= level <= MAX_OPTIMIZATION_LEVEL:
            raise UsageError(f"--builder-optimization-level must be 0..{MAX_OPTIMIZATION_LEVEL} (got {level})")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


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


@dataclass
class BuildResult:
    model_path: Path
    model_sha256: str
    options: BuildOptions
    engine_path: Path
    engine_bytes: int
    engine_sha256: str
    tensorrt_version: str
    typing: str
    precision_flags: list
    fp16_converted: bool
    profiles: list
    build_seconds: float
    summary: EngineSummary
    timing_cache: str | None = None
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """The build record: written beside the engine as ENGINE.json and printed by --json."""
        return {
            "format": RECORD_FORMAT, "version": 1,
            "model": {"file": str(self.model_path), "sha256": self.model_sha256},
            "engine": {"file": str(self.engine_path), "bytes": self.engine_bytes,
                       "sha256": self.engine_sha256},
            "tensorrt": self.tensorrt_version,
            "typing": self.typing,
            "precision_flags": self.precision_flags,
            "fp16_converted": self.fp16_converted,
            "profiles": [{name: r.to_dict() for name, r in p.items()} for p in self.profiles],
            "build_seconds": round(self.build_seconds, 3),
            "timing_cache": self.timing_cache,
            "notes": self.notes,
            "options": self.options.to_dict(),
            "tools": {**tool_versions(), "tensorrt": self.tensorrt_version},
            "layers": self.summary.to_dict(),
        }


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


def parser_error_message(parser, model_label: str, logger) -> str:
    """The ONNX parser's first error on one line: node name, operator, message, code."""
    count = int(getattr(parser, "num_errors", 0) or 0)
    if count == 0:
        return f"TensorRT cannot parse {model_label}: {logger.last_error() or 'the parser gave no reason'}"
    error = parser.get_error(0)

    def ask(method, default=None):
        func = getattr(error, method, None)
        if func is None:
            return default
        try:
            return func()
        except Exception:
            return default

    desc = " ".join(str(ask("desc", "") or "").split()) or "no description"
    node_name = ask("node_name")
    node_index = ask("node", -1)
    operator = ask("node_operator")
    code = str(ask("code", "")).rsplit(".", 1)[-1]
    if node_name:
        where = f"node {node_name!r}"
    elif isinstance(node_index, int) and node_index >= 0:
        where = f"node #{node_index}"
    else:
        where = ""
    if where and operator:
        where += f" ({operator})"
    text = f"TensorRT cannot parse {model_label}: " + (f"{where}: " if where else "") + desc
    if code:
        text += f" [{code}]"
    if count > 1:
        text += f" (and {count - 1} more parser error{'s' if count > 2 else ''})"
    return text


def _start_builder(trt, adapter: TrtAdapter, logger):
    try:
        return trt.Builder(logger)
    except (TypeError, RuntimeError) as exc:
        # createInferBuilder returns null when CUDA cannot start; pybind raises TypeError.
        reason = logger.last_error() or first_line(exc)
        raise MissingDependency(
            f"TensorRT {adapter.version} cannot start CUDA ({reason}); {TRT_INSTALL_HINT}"
        ) from None


def _network_inputs(network) -> list:
    inputs = []
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        if getattr(tensor, "is_shape_tensor", False):
            raise QtoolError(f"input {tensor.name!r} is a shape tensor; qtool build does not support those")
        inputs.append(SimpleNamespace(name=tensor.name, shape=tuple(int(d) for d in tensor.shape)))
    return inputs


def _add_profiles(trt, builder, config, profiles: list[dict[str, ShapeRange]]) -> None:
    for index, profile in enumerate(profiles):
        optimization_profile = builder.create_optimization_profile()
        for name, shape_range in profile.items():
            try:
                optimization_profile.set_shape(name, shape_range.min, shape_range.opt, shape_range.max)
            except RuntimeError as exc:
                raise QtoolError(f"TensorRT rejects --shapes {shape_range.describe()}: {first_line(exc)}") from None
        if config.add_optimization_profile(optimization_profile) < 0:
            raise QtoolError(f"TensorRT rejects optimization profile {index}")


def _set_timing_cache(config, path: Path | None, notify):
    """Load the timing cache file into the config (an empty cache when the file is new or
    unusable, e.g. made by another TensorRT version or GPU: TensorRT rejects those)."""
    if path is None:
        return None
    try:
        data = path.read_bytes() if path.exists() else b""
    except OSError as exc:
        raise QtoolError(f"cannot read timing cache {path}: {exc.strerror or exc}") from None
    cache, problem = None, None
    try:
        cache = config.create_timing_cache(data)
        if cache is None:
            problem = "it is not a TensorRT timing cache"
        elif not config.set_timing_cache(cache, ignore_mismatch=False):
            problem = "it was made by another TensorRT version or GPU"
    except (RuntimeError, TypeError, ValueError) as exc:
        problem = f"it cannot be read ({first_line(exc)})"
    if problem is None:
        return cache
    if data:
        notify(f"timing cache {path} is not used: {problem}; starting a new one")
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _convert_fp16(model_path: Path, folder: str, notify, reason: str) -> Path:
    try:
        from qtool.quantize.fp16 import convert_to_fp16
    except ImportError as exc:
        raise MissingDependency(f"FP16 conversion is not available in this qtool ({first_line(exc)})") from None
    from qtool.io.model import save_model

    notify(f"{reason}: converting a temporary copy of {model_path.name} to FP16 outside its Q/DQ "
           "nodes (inputs and outputs stay FP32); the model file is not changed")
    converted = convert_to_fp16(load_model(model_path), keep_io_types=True)
    target = Path(folder) / (model_path.stem + ".fp16.onnx")
    save_model(converted, target)
    return target


def inspect_engine(trt, logger, engine_bytes: bytes, profiles: list) -> EngineSummary:
    """Deserialize the engine and read its layers with the engine inspector.

    With dynamic shapes the inspector shows data types only for concrete shapes, so a context
    with profile 0's OPT shapes is attached.
    """
    runtime = engine = context = inspector = None
    try:
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            return EngineSummary([], False, note="the engine could not be deserialized for inspection: "
                                 + (logger.last_error() or "no reason given"))
        inspector = engine.create_engine_inspector()
        if profiles:
            context = engine.create_execution_context()
            if context is not None:
                for name, shape_range in profiles[0].items():
                    context.set_input_shape(name, shape_range.opt)
                inspector.execution_context = context
        text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        return summarize_engine_information(text)
    except (TypeError, RuntimeError, AttributeError) as exc:
        return EngineSummary([], False, note=f"engine inspection failed: {first_line(exc)}")
    finally:
        del inspector, context, engine, runtime


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_engine(model_path, output=None, options: BuildOptions | None = None, *,
                 trt=None, notify: Callable[[str], None] | None = None) -> BuildResult:
    """Build, write and inspect an engine; `trt` replaces the tensorrt module (for tests)."""
    options = options or BuildOptions()
    plan = plan_build(model_path, output, options)
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        if notify is not None:
            notify(text)

    trt = trt if trt is not None else import_tensorrt()
    adapter = TrtAdapter.for_module(trt)
    if adapter.untested:
        note(f"TensorRT {adapter.version} is newer than the versions qtool knows (10, 11); "
             "building as for TensorRT 11")
    if plan.profile_warned:
        notes.append(plan.profile_note)  # already logged as a warning
    elif plan.profile_note:
        note(plan.profile_note)
    # A model holding FP16 is built strongly typed: its own types decide (see the module notes).
    typed_by_model = plan.holds_fp16 and not options.strongly_typed and not adapter.always_strongly_typed
    strongly_typed = adapter.strongly_typed(options.strongly_typed or plan.holds_fp16)
    if options.strongly_typed and adapter.always_strongly_typed:
        note(f"--strongly-typed: TensorRT {adapter.major} networks are always strongly typed")
    if typed_by_model:
        note(f"{plan.model_path.name} holds FP16 tensors: building a strongly typed network, so "
             "the model's own types decide each layer's precision (weakly typed, TensorRT "
             f"{adapter.major} would need BuilderFlag.FP16 and could pick other precisions)")
    int8_flag = (options.int8 or plan.qdq_nodes > 0) and not strongly_typed
    if int8_flag and not options.int8:
        note(f"{plan.model_path.name} has Q/DQ nodes: enabling BuilderFlag.INT8 (TensorRT 10 "
             "needs it for explicitly quantized networks)")
    flag_names = adapter.precision_flag_names(int8_flag, options.fp16, strongly_typed)
    logger = shared_logger(trt, options.log_level)

    with contextlib.ExitStack() as stack:
        builder = _start_builder(trt, adapter, logger)  # fails fast without a usable GPU
        parse_path = plan.model_path
        fp16_converted = adapter.needs_fp16_model(options.fp16, strongly_typed) and not plan.holds_fp16
        if options.fp16 and plan.holds_fp16:
            note(f"--fp16: {plan.model_path.name} already holds FP16 tensors; it is built as it is")
        if fp16_converted:
            reason = (f"TensorRT {adapter.major} has no FP16 builder flag" if adapter.always_strongly_typed
                      else "--strongly-typed has no FP16 builder flag")
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="qtool-fp16-"))
            parse_path = _convert_fp16(plan.model_path, folder, note, reason)

        network = builder.create_network(adapter.network_flags(strongly_typed))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(parse_path)):
            raise QtoolError(parser_error_message(parser, str(plan.model_path), logger))
        check_profiles(plan.profiles, _network_inputs(network))

        config = builder.create_builder_config()
        adapter.set_precision_flags(config, flag_names)
        if options.workspace_mib is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
        if options.builder_optimization_level is not None:
            config.builder_optimization_level = options.builder_optimization_level
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        _add_profiles(trt, builder, config, plan.profiles)
        _set_timing_cache(config, plan.timing_cache, note)

        start = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        seconds = time.perf_counter() - start
        if serialized is None:
            raise QtoolError(f"TensorRT could not build an engine from {plan.model_path}: "
                             + (logger.last_error() or "see the TensorRT messages above"))
        engine_bytes = adapter.host_memory_bytes(serialized)
        cache_bytes = None
        if plan.timing_cache is not None:
            cache_bytes = adapter.host_memory_bytes(config.get_timing_cache().serialize())

    with atomic_path(plan.output) as tmp:
        tmp.write_bytes(engine_bytes)
    if cache_bytes is not None:
        write_bytes(plan.timing_cache, cache_bytes)
    summary = inspect_engine(trt, logger, engine_bytes, plan.profiles)
    result = BuildResult(
        model_path=plan.model_path, model_sha256=model_sha256(plan.model_path), options=options,
        engine_path=plan.output, engine_bytes=len(engine_bytes), engine_sha256=_sha256(engine_bytes),
        tensorrt_version=adapter.version,
        typing=adapter.typing_description(strongly_typed, flag_names)
        + (" (the model holds FP16 tensors)" if typed_by_model else ""),
        precision_flags=flag_names, fp16_converted=fp16_converted, profiles=plan.profiles,
        build_seconds=seconds, summary=summary,
        timing_cache=str(plan.timing_cache) if plan.timing_cache else None, notes=notes,
    )
    write_json(record_path(plan.output), result.to_dict())
    return result


def record_path(engine_path) -> Path:
    """The build record beside the engine: model.engine -> model.engine.json."""
    path = Path(engine_path)
    return path.with_name(path.name + ".json")
