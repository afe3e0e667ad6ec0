"""Setting up a TensorRT network and builder config: parser errors on one line, the network's
inputs, optimization profiles and the timing cache."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from qtool.backends.tensorrt.shapes import ShapeRange
from qtool.errors import QtoolError, first_line


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


def network_inputs(network) -> list:
    inputs = []
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        if getattr(tensor, "is_shape_tensor", False):
            raise QtoolError(f"input {tensor.name!r} is a shape tensor; qtool build does not support those")
        inputs.append(SimpleNamespace(name=tensor.name, shape=tuple(int(d) for d in tensor.shape)))
    return inputs


def add_profiles(trt, builder, config, profiles: list[dict[str, ShapeRange]]) -> None:
    for index, profile in enumerate(profiles):
        optimization_profile = builder.create_optimization_profile()
        for name, shape_range in profile.items():
            try:
                optimization_profile.set_shape(name, shape_range.min, shape_range.opt, shape_range.max)
            except RuntimeError as exc:
                raise QtoolError(f"TensorRT rejects --shapes {shape_range.describe()}: {first_line(exc)}") from None
        if config.add_optimization_profile(optimization_profile) < 0:
            raise QtoolError(f"TensorRT rejects optimization profile {index}")


def set_timing_cache(config, path: Path | None, notify):
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
