"""Run an ONNX model on numpy feeds with onnxruntime (CPU, or a GPU provider), with the same face as
TensorRTRunner: a context manager with `input_specs`, `output_names` and `run(feeds) -> dict`.

Sessions come from qtool.backends.onnxruntime.session, so every onnxruntime session in qtool is
made one way (in memory, or through a private temporary folder for models above the protobuf
limit).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import onnx

from qtool.backends.onnxruntime.providers import Providers
from qtool.backends.onnxruntime.session import create_file_session, create_session, run_session
from qtool.io.model import InputSpec, input_specs, load_model


class OnnxRunner:
    """One onnxruntime session for one model, reused for every batch."""

    def __init__(self, model: onnx.ModelProto | str | os.PathLike, label: str | None = None,
                 intra_op_threads: int = 0, extra_inputs: tuple[str, ...] = (),
                 providers: Providers | str | None = None):
        """`extra_inputs`: graph inputs fed through run(extra=...), not from the data;
        `providers`: where onnxruntime runs (qtool.backends.onnxruntime.providers; default
        the CPU)."""
        in_memory = isinstance(model, onnx.ModelProto)
        # A file is checked and read for its inputs and outputs, then dropped: onnxruntime reads
        # the file itself, so no second copy of the weights stays in memory.
        graph = model if in_memory else load_model(model, load_weights=False)
        self.label = label or ("the model" if in_memory else str(model))
        self._specs = [spec for spec in input_specs(graph) if spec.name not in extra_inputs]
        self._outputs = [value.name for value in graph.graph.output]
        del graph
        if in_memory:
            self.session = create_session(model, providers, intra_op_threads=intra_op_threads)
        else:
            self.session = create_file_session(model, intra_op_threads=intra_op_threads,
                                               providers=providers)
        known = {value.name for value in self.session.get_inputs()}
        # onnxruntime may drop unused graph inputs; feed only what the session takes.
        self._feed_names = [spec.name for spec in self._specs if spec.name in known]

    def __enter__(self) -> OnnxRunner:  # noqa: PYI034 (typing.Self needs 3.11)
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self.session = None

    @property
    def input_specs(self) -> list[InputSpec]:
        return list(self._specs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def run(self, feeds: Mapping[str, np.ndarray], outputs: list[str] | None = None,
            extra: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run one batch; `extra` feeds inputs that are not part of the data (switches)."""
        names = outputs or self._outputs
        inputs = {name: feeds[name] for name in self._feed_names}
        if extra:
            inputs.update(extra)
        values = run_session(self.session, inputs, names)
        return dict(zip(names, values))

