"""Every onnxruntime session in qtool is made here, one way: in memory, or through a private
temporary folder for models above the protobuf limit, with the same settings and providers.

Graph outputs and pooling nodes can be added for a session without copying or modifying the
model (calibration observes tensors that way; see create_session).
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from qtool.backends.onnxruntime.providers import Providers
from qtool.backends.onnxruntime.providers import resolve as resolve_providers
from qtool.errors import QtoolError, first_line
from qtool.graph.types import tensor_elem_types
from qtool.io.external import save_external
from qtool.io.model import PROTOBUF_LIMIT, has_unloaded_weights, weights_nbytes


def augment_with_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of the model whose graph also outputs `tensors` (the user's model is untouched).

    This copies the weights too; create_session(model, extra_outputs=...) does not."""
    augmented = copy.deepcopy(model)
    augmented.graph.output.extend(output_infos(model, tensors))
    return augmented


def output_infos(model: onnx.ModelProto, tensors: list[str],
                 added_nodes: list[onnx.NodeProto] = (),
                 elem_types: dict[str, int] | None = None) -> list[onnx.ValueInfoProto]:
    """Graph outputs (element type, unknown shape) for the `tensors` that are not outputs yet.
    Outputs of `added_nodes` (pooling, which keeps the element type) take their input's type.
    `elem_types`: the model's element types when the caller has them (qtool.graph.facts), so
    shape inference is not run again."""
    existing = {value.name for value in model.graph.output}
    types = dict(elem_types) if elem_types is not None else tensor_elem_types(model)
    for node in added_nodes:
        types[node.output[0]] = types.get(node.input[0], onnx.TensorProto.FLOAT)
    return [helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None)
            for name in tensors if name not in existing]


def create_session(model: onnx.ModelProto, providers: Providers | str | None = None,
                   intra_op_threads: int = 0, *, extra_outputs: list[str] = (),
                   extra_nodes: list[onnx.NodeProto] = (),
                   external_dir: str | os.PathLike | None = None, optimize: bool = True,
                   elem_types: dict[str, int] | None = None):
    """An onnxruntime session for an in-memory model, plus `extra_outputs` as graph outputs
    and `extra_nodes` (reading only existing tensors) appended to its graph; `elem_types` (see
    output_infos) types the extra outputs.

    `providers`: a qtool.backends.onnxruntime.providers.Providers (or a --provider choice);
    default the CPU. A session that cannot start on a GPU provider is an error when the provider
    was named, and runs on the CPU after one warning under `auto` (onnxruntime's own fallback,
    which prints on stdout, is off).

    The model is neither copied nor modified, whatever its size:
      - weights still on disk (load_model(..., load_weights=False)): the graph goes over in memory
        and onnxruntime reads the weights from `external_dir`, the model's own folder, whose
        locations load_model has already checked;
      - in-memory weights under protobuf's limit: serialised, with the extra outputs appended as
        a second serialised message (protobuf concatenates repeated fields when merging);
      - larger in-memory weights: graph and weights written to a private temporary folder (never
        beside the user's files), one tensor at a time.
    """
    import onnxruntime as ort

    providers = resolve_providers(providers)
    options, extra = session_settings(intra_op_threads, optimize)
    outputs = output_infos(model, list(extra_outputs), extra_nodes, elem_types) if extra_outputs \
        else []
    on_disk = has_unloaded_weights(model)
    if on_disk:
        if external_dir is None:
            raise TypeError("create_session: the model's weights are not loaded; pass external_dir")
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         str(external_dir))

    def start(names: tuple[str, ...]):
        if on_disk or weights_nbytes(model) < PROTOBUF_LIMIT - (64 << 20):
            serialized = model.SerializeToString()
            if outputs or extra_nodes:
                # appended nodes only read existing tensors, so graph order stays topological
                addition = onnx.ModelProto()
                addition.graph.node.extend(extra_nodes)
                addition.graph.output.extend(outputs)
                serialized += addition.SerializeToString()
            return ort.InferenceSession(serialized, options, providers=list(names), **extra)
        with tempfile.TemporaryDirectory(prefix="qtool-") as tmp:
            path = Path(tmp) / "model.onnx"
            save_external(model, path, "model.onnx.data", extra_outputs=outputs,
                          extra_nodes=extra_nodes)
            return ort.InferenceSession(str(path), options, providers=list(names), **extra)

    return _start_session(start, providers)


def create_file_session(path: str | os.PathLike, intra_op_threads: int = 0,
                        providers=None):
    """An onnxruntime session read by onnxruntime from the model file itself (external weights
    from its folder), with create_session's settings and providers: no copy of the model is held
    in Python. For a model file already checked by load_model."""
    import onnxruntime as ort

    providers = resolve_providers(providers)
    options, extra = session_settings(intra_op_threads)
    return _start_session(lambda names: ort.InferenceSession(str(path), options,
                                                             providers=list(names), **extra),
                          providers)


def _start_session(start, providers):
    """start(provider names) on the chosen providers; when a GPU provider cannot start, an error
    if it was named, else the CPU (Providers.failed decides)."""
    try:
        if not providers.on_cpu:
            try:
                session = start(providers.names)
            except Exception as exc:
                providers.failed(exc)  # an error for a named provider; otherwise the CPU
            else:
                providers.check_session(session)
                return session
        return start(providers.names)
    except QtoolError:
        raise
    except Exception as exc:
        raise QtoolError(f"onnxruntime cannot load the model: {first_line(exc, 400)}") from None


def session_settings(intra_op_threads: int = 0, optimize: bool = True):
    """(SessionOptions, extra InferenceSession arguments) of every qtool session; `optimize`
    False: no graph optimizations."""
    import onnxruntime as ort

    # onnxruntime's own log lines (coloured, multi-line) would come before qtool's one-line
    # error about the same failure: only fatal ones are let through.
    ort.set_default_logger_severity(4)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    # Idle onnxruntime threads spin by default, burning the core that the histogram thread (or
    # data decoding) needs between runs: calibration of EfficientNet-Lite0 took 14.8 s with
    # spinning and 10.7 s without.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # This rewrite folds a Q/DQ conv's bias in the model's float type and overflows with FP16
    # models (opset 19+ FP16 Q/DQ gave 0% top-1 on EfficientNet-Lite0 with it enabled).
    # onnxruntime's own provider fallback (which prints on stdout) is off: _start_session decides.
    extra = {"disabled_optimizers": ["WeightBiasQuantization"], "enable_fallback": 0}
    return options, extra


def run_session(session, feeds: dict[str, np.ndarray], output_names: list[str] | None = None):
    with batch_errors():
        return session.run(output_names, feeds)


@contextlib.contextmanager
def batch_errors():
    """onnxruntime's errors on a batch (wrong shapes, failed kernels) as one user-facing line."""
    try:
        yield
    except Exception as exc:
        raise QtoolError(f"onnxruntime failed on a batch: {first_line(exc, 400)}") from None
