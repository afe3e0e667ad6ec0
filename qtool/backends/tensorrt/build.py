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

plan_build and the options live in build_plan.py, the build record in build_result.py, the
network and config set-up in builder_setup.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qtool.backends.imports import TRT_INSTALL_HINT, import_tensorrt
from qtool.backends.tensorrt.adapter import TrtAdapter
from qtool.backends.tensorrt.build_options import BuildOptions
from qtool.backends.tensorrt.build_plan import (
    BuildPlan,
    calibration_beside,
    count_qdq_nodes,
    holds_fp16,
    plan_build,
    record_path,
)
from qtool.backends.tensorrt.build_result import BuildResult
from qtool.backends.tensorrt.builder_setup import (
    add_profiles,
    network_inputs,
    parser_error_message,
    set_timing_cache,
)
from qtool.backends.tensorrt.inspect import EngineSummary, summarize_engine_information
from qtool.backends.tensorrt.logger import shared_logger
from qtool.backends.tensorrt.shapes import check_profiles
from qtool.errors import MissingDependency, QtoolError, first_line
from qtool.io.atomic import atomic_path, write_bytes, write_json
from qtool.io.model import load_model, model_sha256

__all__ = [
    "BuildOptions", "build_engine", "calibration_beside", "count_qdq_nodes", "holds_fp16",
    "inspect_engine", "plan_build",
]

def _start_builder(trt, adapter: TrtAdapter, logger):
    try:
        return trt.Builder(logger)
    except (TypeError, RuntimeError) as exc:
        # createInferBuilder returns null when CUDA cannot start; pybind raises TypeError.
        reason = logger.last_error() or first_line(exc)
        raise MissingDependency(
            f"TensorRT {adapter.version} cannot start CUDA ({reason}); {TRT_INSTALL_HINT}"
        ) from None


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
    typing = _choose_typing(adapter, options, plan, note)
    logger = shared_logger(trt, options.log_level)
    built = _build_serialized(trt, adapter, logger, options, plan, typing, note)

    with atomic_path(plan.output) as tmp:
        tmp.write_bytes(built.engine_bytes)
    if built.cache_bytes is not None:
        write_bytes(plan.timing_cache, built.cache_bytes)
    summary = inspect_engine(trt, logger, built.engine_bytes, plan.profiles)
    result = BuildResult(
        model_path=plan.model_path, model_sha256=model_sha256(plan.model_path), options=options,
        engine_path=plan.output, engine_bytes=len(built.engine_bytes),
        engine_sha256=_sha256(built.engine_bytes), tensorrt_version=adapter.version,
        typing=adapter.typing_description(typing.strongly_typed, typing.flag_names)
        + (" (the model holds FP16 tensors)" if typing.typed_by_model else ""),
        precision_flags=typing.flag_names, fp16_converted=built.fp16_converted,
        profiles=plan.profiles, build_seconds=built.seconds, summary=summary,
        timing_cache=str(plan.timing_cache) if plan.timing_cache else None, notes=notes,
    )
    write_json(record_path(plan.output), result.to_dict())
    return result


@dataclass
class NetworkTyping:
    """How the network is typed: strongly (the model's types decide) or weakly with these
    precision flags; typed_by_model when only the model's FP16 tensors made it strongly typed."""
    strongly_typed: bool
    typed_by_model: bool
    flag_names: list


def _choose_typing(adapter: TrtAdapter, options: BuildOptions, plan: BuildPlan,
                   note: Callable[[str], None]) -> NetworkTyping:
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
    return NetworkTyping(strongly_typed, typed_by_model, flag_names)


@dataclass
class SerializedBuild:
    """The engine and timing cache bytes a build produced, before anything is written."""
    engine_bytes: bytes
    cache_bytes: bytes | None
    seconds: float
    fp16_converted: bool


def _build_serialized(trt, adapter: TrtAdapter, logger, options: BuildOptions, plan: BuildPlan,
                      typing: NetworkTyping, note: Callable[[str], None]) -> SerializedBuild:
    """Parse (an FP16 copy of) the model, configure and build; nothing is written yet."""
    strongly_typed = typing.strongly_typed
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
        check_profiles(plan.profiles, network_inputs(network))
        config = _builder_config(trt, builder, adapter, options, plan, typing.flag_names, note)

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
    return SerializedBuild(engine_bytes, cache_bytes, seconds, fp16_converted)


def _builder_config(trt, builder, adapter: TrtAdapter, options: BuildOptions, plan: BuildPlan,
                    flag_names: list, note: Callable[[str], None]):
    """The builder config: precision flags, workspace, optimization level, profiles, cache."""
    config = builder.create_builder_config()
    adapter.set_precision_flags(config, flag_names)
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.builder_optimization_level is not None:
        config.builder_optimization_level = options.builder_optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    add_profiles(trt, builder, config, plan.profiles)
    set_timing_cache(config, plan.timing_cache, note)
    return config
