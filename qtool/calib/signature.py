"""The input signature seen in calibration: for every input, the smallest and largest size of
each axis over all batches. The calibration file records it beside the model's declared shapes
(`model.inputs[i].seen = {"min": [...], "max": [...]}`), so that `qtool build` can size the
dynamic dimensions of an engine's optimization profile from the data the model was calibrated on.

Files written before the signature was recorded have no `seen` entries; readers treat them as
"nothing known".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from qtool.io.model import InputSpec


class SeenShapes:
    """Smallest and largest size per axis of every fed input (an input fed at several ranks is
    dropped: no single profile could hold it)."""

    def __init__(self):
        self.low: dict[str, list[int]] = {}
        self.high: dict[str, list[int]] = {}
        self._mixed: set[str] = set()

    def update(self, feeds: dict) -> None:
        for name, value in feeds.items():
            shape = [int(d) for d in np.shape(value)]
            if name in self._mixed:
                continue
            if name not in self.low:
                self.low[name], self.high[name] = list(shape), list(shape)
            elif len(shape) != len(self.low[name]):
                self._mixed.add(name)
                del self.low[name], self.high[name]
            else:
                self.low[name] = [min(a, b) for a, b in zip(self.low[name], shape)]
                self.high[name] = [max(a, b) for a, b in zip(self.high[name], shape)]

    def watch(self, batches: Iterable[dict]) -> Iterator[dict]:
        """The batches, unchanged, with their shapes recorded on the way."""
        for feeds in batches:
            self.update(feeds)
            yield feeds

    def entries(self, specs: Sequence[InputSpec], batch_axis) -> list[dict]:
        """The calibration file's `model.inputs`: declared name, dtype, shape and batch axis
        (`batch_axis(name)`, None: not batched), plus `seen`."""
        entries = []
        for spec in specs:
            entry = {"name": spec.name, "dtype": str(spec.dtype), "shape": list(spec.shape),
                     "batch_axis": batch_axis(spec.name)}
            if spec.name in self.low:
                entry["seen"] = {"min": self.low[spec.name], "max": self.high[spec.name]}
            entries.append(entry)
        return entries


def seen_ranges(inputs: list[dict]) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """input name -> (smallest, largest) shape seen, from a calibration file's `model.inputs`."""
    ranges = {}
    for entry in inputs:
        seen = entry.get("seen") if isinstance(entry, dict) else None
        if isinstance(seen, dict) and "name" in entry:
            ranges[entry["name"]] = (tuple(seen["min"]), tuple(seen["max"]))
    return ranges


def recorded_batch_axes(inputs: list[dict]) -> dict[str, int | None]:
    """input name -> batch axis the calibration ran with, from a file's `model.inputs` (files
    written before batch axes were recorded give none)."""
    return {entry["name"]: entry["batch_axis"] for entry in inputs
            if isinstance(entry, dict) and "name" in entry and "batch_axis" in entry
            and (entry["batch_axis"] is None or type(entry["batch_axis"]) is int)}


def merge_inputs(lists: Sequence[list[dict]]) -> list[dict]:
    """The `model.inputs` of merged shards: each `seen` range spans every shard's (an input
    some shard did not record keeps no range)."""
    merged = [dict(entry) for entry in lists[0]]
    for entry in merged:
        ranges = [seen_ranges(inputs).get(entry.get("name")) for inputs in lists]
        if "seen" not in entry:
            continue
        if any(r is None or len(r[0]) != len(ranges[0][0]) for r in ranges):
            del entry["seen"]
            continue
        entry["seen"] = {"min": [min(dims) for dims in zip(*(r[0] for r in ranges))],
                         "max": [max(dims) for dims in zip(*(r[1] for r in ranges))]}
    return merged
