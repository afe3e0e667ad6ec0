"""What a comparison settles before its loop: each model's identity, the inputs and outputs both
models share, and the labels of each batch."""

from __future__ import annotations

import os

import numpy as np

from qtool.analysis.runners import model_kind
from qtool.errors import QtoolError
from qtool.io.hashing import sha256_file
from qtool.io.model import InputSpec, model_sha256


def describe_model(path: str | os.PathLike) -> dict:
    kind = model_kind(path)
    digest = model_sha256(path) if kind == "onnx" else sha256_file(path)
    return {"path": str(path), "kind": kind, "sha256": digest}


def merge_specs(reference: list[InputSpec], candidate: list[InputSpec]) -> list[InputSpec]:
    """Input specs both models accept: same names and dtypes; a static dim of either wins, then a
    dimension name (it tells the batch axis; TensorRT engines keep none)."""
    theirs = {spec.name: spec for spec in candidate}
    missing = [spec.name for spec in reference if spec.name not in theirs]
    extra = [name for name in theirs if name not in {spec.name for spec in reference}]
    if missing or extra:
        raise QtoolError("the models take different inputs: reference "
                         f"{', '.join(s.name for s in reference)}; candidate "
                         f"{', '.join(s.name for s in candidate)}")
    merged = []
    for spec in reference:
        other = theirs[spec.name]
        if np.dtype(spec.dtype) != np.dtype(other.dtype):
            raise QtoolError(f"input {spec.name!r} is {spec.dtype} in the reference but "
                             f"{other.dtype} in the candidate")
        if len(spec.shape) != len(other.shape):
            raise QtoolError(f"input {spec.name!r} has rank {len(spec.shape)} in the reference "
                             f"but {len(other.shape)} in the candidate")
        dims = []
        for axis, (a, b) in enumerate(zip(spec.shape, other.shape)):
            if isinstance(a, int) and isinstance(b, int) and a != b:
                raise QtoolError(f"input {spec.name!r} axis {axis} is {a} in the reference but "
                                 f"{b} in the candidate")
            dims.append(a if isinstance(a, int) else b if isinstance(b, int) else a or b)
        merged.append(InputSpec(spec.name, spec.dtype, tuple(dims)))
    return merged


class LabelStream:
    """Hands out the labels of each batch in data order; checks the counts add up."""

    def __init__(self, labels: np.ndarray | None, path: str | None):
        self.labels = labels
        self.path = path
        self.offset = 0

    def take(self, count: int) -> np.ndarray | None:
        if self.labels is None:
            return None
        end = self.offset + count
        if end > len(self.labels):
            raise QtoolError(f"labels {self.path} has {len(self.labels)} entries but the data "
                             f"has more samples")
        batch = self.labels[self.offset:end]
        self.offset = end
        return batch

    def finish(self) -> None:
        if self.labels is not None and self.offset != len(self.labels):
            raise QtoolError(f"labels {self.path} has {len(self.labels)} entries but the data "
                             f"has {self.offset} samples")


def common_outputs(reference: list[str], candidate: list[str]) -> tuple[list[str], list[str]]:
    """(outputs both models have, in reference order; outputs only one has)."""
    common = [name for name in reference if name in candidate]
    if not common:
        raise QtoolError("the models share no output name: reference "
                         f"{', '.join(reference)}; candidate {', '.join(candidate)}")
    only = [name for name in reference if name not in candidate]
    only += [name for name in candidate if name not in reference]
    return common, only
