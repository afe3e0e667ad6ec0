"""Where each model input keeps its samples: its batch axis, read from the model or set in config.

    [inputs.state]
    batch_axis = 1        # the samples lie along axis 1 of this input
    [inputs.sr]
    batch_axis = "none"   # not batched: one value goes with every sample of a batch

From the model, for every input the config does not set:
  - a scalar (rank 0) is not batched;
  - a dimension named like a batch ("batch", "batch_size", "N", "bs", any name with "batch" in
    it) is that input's batch axis;
  - otherwise, a symbolic dimension that several inputs share is the batch axis of each input
    that has it (the one at the lowest axis, when several are shared);
  - once the model names its batch either way, an input without that name is not batched;
  - a model that names no batch keeps axis 0 of every input of rank >= 1 (the usual layout),
    or none at all when those first dimensions are static and disagree ([1, 3] and [4]): such
    a model takes its feeds exactly as given, one sample per feed.

An input that is not batched is fed as each file or loader item gives it. Re-batching cuts it
into nothing and joins it with nothing: samples joined into one batch must carry the same value,
and every part of a split batch carries the whole of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from qtool.errors import QtoolError
from qtool.io.feeds import Feed, dims_text
from qtool.io.model import InputSpec

SHORT_BATCH_NAMES = ("n", "b", "bs")


def is_batch_name(name) -> bool:
    """A dimension name people give the batch: batch, batch_size, N, bs, ..."""
    return isinstance(name, str) and ("batch" in name.lower() or name.lower() in SHORT_BATCH_NAMES)


def _configured_axis(spec: InputSpec, entry) -> int | None:
    where = f"[inputs.{spec.name}] batch_axis"
    if isinstance(entry, str) and entry.lower() == "none":
        return None
    if isinstance(entry, bool) or not isinstance(entry, int):
        raise QtoolError(f"{where} must be an axis number or \"none\", got {entry!r}")
    rank = len(spec.shape)
    if not -rank <= entry < rank:
        raise QtoolError(f"{where} = {entry} is outside input '{spec.name}' "
                         f"{dims_text(spec.shape)} (rank {rank})")
    return entry % rank


def parse_inputs_table(table: Mapping | None, specs: Sequence[InputSpec]) -> dict[str, int | None]:
    """The batch axes an [inputs] config table sets, checked against the model's inputs."""
    if table is not None and not isinstance(table, Mapping):
        raise QtoolError("[inputs] must be a table of input names, such as "
                         "[inputs.NAME] batch_axis = 0")
    table = dict(table or {})
    names = {spec.name: spec for spec in specs}
    configured: dict[str, int | None] = {}
    for name, entry in table.items():
        if name not in names:
            raise QtoolError(f"[inputs.{name}]: the model has no input {name!r} "
                             f"(inputs: {', '.join(names)})")
        if not isinstance(entry, Mapping):
            raise QtoolError(f"[inputs.{name}] must be a table, such as "
                             f"[inputs.{name}] batch_axis = 0")
        unknown = sorted(set(entry) - {"batch_axis"})
        if unknown:
            raise QtoolError(f"unknown key {unknown[0]!r} in [inputs.{name}] "
                             f"(known: batch_axis)")
        if "batch_axis" in entry:
            configured[name] = _configured_axis(names[name], entry["batch_axis"])
    return configured


def _named_axes(specs: Sequence[InputSpec]) -> dict[str, int | None] | None:
    """Batch axes from dimension names, or None when the model names no batch."""
    by_name = {spec.name: next((axis for axis, dim in enumerate(spec.shape) if is_batch_name(dim)),
                               None) for spec in specs}
    if any(axis is not None for axis in by_name.values()):
        return by_name
    places: dict[str, list[tuple[int, int]]] = {}  # symbol -> (input index, axis) of each input
    for index, spec in enumerate(specs):
        seen = set()
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str) and dim and dim not in seen:
                seen.add(dim)
                places.setdefault(dim, []).append((index, axis))
    shared = [(min(axis for _, axis in found), symbol) for symbol, found in places.items()
              if len(found) > 1]
    if not shared:
        return None
    symbol = min(shared, key=lambda item: item[0])[1]  # ties: the first one met
    axes: dict[str, int | None] = {spec.name: None for spec in specs}
    for index, axis in places[symbol]:
        axes[specs[index].name] = axis
    return axes


def model_batch_axes(specs: Sequence[InputSpec], configured=frozenset()) -> dict[str, int | None]:
    """The batch axis the model itself gives each input (the rules above; `configured`: inputs
    whose axis the config sets, left out of the static-size test)."""
    named = _named_axes(specs)
    if named is not None:
        return {spec.name: named[spec.name] if spec.shape else None for spec in specs}
    static = {spec.shape[0] for spec in specs
              if spec.name not in configured and spec.shape and isinstance(spec.shape[0], int)}
    if len(static) > 1:  # axis 0 is not a batch axis here
        return {spec.name: None for spec in specs}
    return {spec.name: 0 if spec.shape else None for spec in specs}


class BatchLayout:
    """The batch axis of every model input (None: not batched) and what follows from it.

    size: the batch size every batch must have when the batch dimensions are static (an int), or
    None when it is free. `batched` is False when no input is batched: every feed is then one
    sample, fed as given.
    """

    def __init__(self, specs: Sequence[InputSpec], axes: Mapping[str, int | None]):
        self.specs = list(specs)
        self.axes = {spec.name: axes.get(spec.name) for spec in self.specs}
        self.batched = any(axis is not None for axis in self.axes.values())
        sizes = {spec.shape[axis] for spec in self.specs
                 if (axis := self.axes[spec.name]) is not None and isinstance(spec.shape[axis], int)}
        if len(sizes) > 1:
            detail = ", ".join(f"'{s.name}' axis {a} of {dims_text(s.shape)}" for s in self.specs
                               if (a := self.axes[s.name]) is not None)
            raise QtoolError(f"the inputs' batch axes have different fixed sizes ({detail}); "
                             f"set [inputs.NAME] batch_axis in the config")
        self.size: int | None = sizes.pop() if sizes else None

    @classmethod
    def of(cls, specs: Sequence[InputSpec], inputs: Mapping | None = None) -> BatchLayout:
        """The layout of a model's inputs: the config's [inputs] table first, then the model."""
        specs = list(specs)
        configured = parse_inputs_table(inputs, specs)
        return cls(specs, model_batch_axes(specs, set(configured)) | configured)

    def axis(self, name: str) -> int | None:
        return self.axes[name]

    def fixed_input(self) -> InputSpec:
        """The first input whose batch axis is fixed at `size` (for messages about it)."""
        return next(spec for spec in self.specs if (axis := self.axes[spec.name]) is not None
                    and spec.shape[axis] == self.size)

    @property
    def dynamic(self) -> bool:
        """Batched, with a batch size that may change from batch to batch."""
        return self.batched and self.size is None

    @property
    def all_on_axis_0(self) -> bool:
        """Every input batched on axis 0 (batches may then be cut anywhere along axis 0)."""
        return all(axis == 0 for axis in self.axes.values())

    def describe(self) -> str:
        """e.g. "batch axis: input 0, state 1, sr none"."""
        return "batch axis: " + ", ".join(
            f"{name} {'none' if axis is None else axis}" for name, axis in self.axes.items())

    # -- feeds ---------------------------------------------------------------------------------

    def add_sample_axis(self, feed: Mapping[str, np.ndarray]) -> Feed:
        """Give a batch axis of 1 to every batched array that is one sample (rank = model rank - 1)."""
        out = {}
        for spec in self.specs:
            array = feed[spec.name]
            axis = self.axes[spec.name]
            if axis is not None and array.ndim == len(spec.shape) - 1:
                array = np.expand_dims(array, axis)
            out[spec.name] = array
        return out

    def length(self, feed: Mapping[str, np.ndarray], where: str) -> int:
        """Samples in a feed: the shared batch-axis length of its batched inputs (1 if none)."""
        return self.shared_length({spec.name: feed[spec.name].shape[axis] for spec in self.specs
                                   if (axis := self.axes[spec.name]) is not None
                                   and feed[spec.name].ndim > axis}, where)

    def shared_length(self, lengths: Mapping[str, int], where: str) -> int:
        """The one batch-axis length of the batched inputs (input name -> length); 1 if none."""
        values = set(lengths.values())
        if len(values) > 1:
            detail = ", ".join(f"{name} {n} on axis {self.axes[name]}" for name, n in lengths.items())
            raise QtoolError(f"{where}: the inputs hold different numbers of samples ({detail}); "
                             f"if an input is not batched or keeps its samples on another axis, "
                             f"set [inputs.NAME] batch_axis in the config")
        return values.pop() if values else 1

    def take(self, feed: Mapping[str, np.ndarray], start: int, stop: int) -> Feed:
        """Samples start..stop of a feed: views along each batch axis; unbatched inputs whole."""
        out = {}
        for spec in self.specs:
            array = feed[spec.name]
            axis = self.axes[spec.name]
            if axis is not None:
                array = array[(slice(None),) * axis + (slice(start, stop),)]
                if axis and not array.flags.c_contiguous:
                    array = np.ascontiguousarray(array)  # onnxruntime reads C order
            out[spec.name] = array
        return out

    def samples(self, feed: Mapping[str, np.ndarray], count: int) -> list[Feed]:
        """The feed as `count` single-sample feeds."""
        return [self.take(feed, i, i + 1) for i in range(count)]

    def differing_unbatched(self, first: Mapping[str, np.ndarray],
                            other: Mapping[str, np.ndarray]) -> str | None:
        """The first unbatched input whose value differs between two feeds (None: they agree)."""
        for spec in self.specs:
            if self.axes[spec.name] is None and not _same(first[spec.name], other[spec.name]):
                return spec.name
        return None

    def join(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> Feed:
        """Concatenate feeds along each batch axis; an unbatched input keeps the first feed's
        value (callers check that the feeds agree on it, see differing_unbatched)."""
        if len(feeds) == 1:
            return dict(feeds[0])
        out = {}
        for spec in self.specs:
            axis = self.axes[spec.name]
            if axis is None:
                out[spec.name] = feeds[0][spec.name]
            else:
                out[spec.name] = np.concatenate([feed[spec.name] for feed in feeds], axis=axis)
        return out

    def sample_shape(self, name: str, shape: Sequence[int]) -> tuple:
        """An array's shape without its batch axis (the whole shape when not batched)."""
        axis = self.axes[name]
        shape = tuple(shape)
        return shape if axis is None else shape[:axis] + shape[axis + 1:]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))
