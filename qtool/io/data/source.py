"""DataSource: batches of model inputs from one place, and how many one pass yields."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from qtool.io.batch_axes import BatchLayout
from qtool.io.batching import Chunk, rebatch, split
from qtool.io.feeds import Feed

log = logging.getLogger("qtool.io.data")

# Samples per batch of a larger .npy/.npz file when no batch size is given: a file of a thousand
# samples would otherwise be one batch, and every activation of the model that many samples big.
# On CPU larger batches bring no speed, only memory (BENCHMARKS.md).
FILE_BATCH_SIZE = 8


class DataSource:
    """Batches of model inputs from one place; iterable any number of times.

    Attributes:
      kind               "npy", "npz", "images" or "script"
      specs              the model inputs the feeds are checked against
      layout             each input's batch axis (qtool.io.batch_axes.BatchLayout)
      batch_size         samples per batch when re-batching (None: one batch per file or item,
                         files cut into batches of at most FILE_BATCH_SIZE)
      num_samples        samples one pass yields (None when unknown before reading: scripts)
      num_batches        batches one pass yields (None when unknown)
      available_samples  samples the data holds before num_samples and fixed-batch cuts
      files              data files in reading order (empty for a loader script)
      root               the data folder (the file's folder for a single file)
    """

    def __init__(self, *, kind: str, layout: BatchLayout, origin: str,
                 chunks: Callable[[], Iterator[Chunk]], batch_size: int | None,
                 limit: int | None, drop_last: bool, available_samples: int | None,
                 files: Sequence[Path] = (), root: Path | None = None,
                 chunk_lengths: Sequence[int] | None = None, detail: str = ""):
        self.kind = kind
        self.layout = layout
        self.specs = layout.specs
        self.origin = origin
        self.batch_size = batch_size
        self.available_samples = available_samples
        self.files = list(files)
        self.root = root
        self._chunks = chunks
        self._limit = limit
        self._drop_last = drop_last
        self._detail = detail
        # Files are cut into batches of FILE_BATCH_SIZE; loader items are fed as the script shapes them.
        self.split_size = FILE_BATCH_SIZE if kind in ("npy", "npz") and layout.batched else None
        self.num_samples, self.num_batches = _counts(available_samples, chunk_lengths, batch_size,
                                                     limit, drop_last, self.split_size)

    def __iter__(self) -> Iterator[Feed]:
        if self.batch_size is None:
            return split(self._chunks(), self.layout, self.split_size, self._limit)
        return rebatch(self._chunks(), self.layout, self.batch_size, self._limit, self._drop_last,
                       on_drop=self._warn_drop if self.num_samples is None else None)

    def _warn_drop(self, count: int) -> None:
        log.warning("dropped the last %d sample(s): the model's batch axis is fixed at %d",
                    count, self.batch_size)

    def sample_files(self) -> list[Path] | None:
        """One path per sample, in data order, when every sample is its own file (images)."""
        if self.kind != "images":
            return None
        return self.files[: self.num_samples]

    def describe(self) -> str:
        """One line for logs and reports."""
        if self.kind == "script":
            what = f"loader script {self.origin}"
        else:
            noun = {"npy": ".npy file", "npz": ".npz file", "images": "image"}[self.kind]
            count = len(self.files)
            what = f"{count} {noun}{'s' if count != 1 else ''} from {self.origin}"
        parts = [what]
        if self._detail:
            parts.append(self._detail)
        if self.num_samples is not None:
            parts.append(f"{self.num_samples} sample{'s' if self.num_samples != 1 else ''}")
        if self.batch_size is not None:
            parts.append(f"batches of {self.batch_size}")
        elif self.split_size is not None:
            parts.append(f"one batch per file of up to {self.split_size} samples")
        else:
            parts.append("one batch per " + ("item" if self.kind == "script" else "file"))
        if self.layout.batched and not self.layout.all_on_axis_0:  # say what is unusual
            parts.append(self.layout.describe())
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"DataSource({self.describe()})"


def _counts(available: int | None, lengths: Sequence[int] | None, batch_size: int | None,
            limit: int | None, drop_last: bool, split_size: int | None
            ) -> tuple[int | None, int | None]:
    if available is None:
        return None, None
    used = available if limit is None else min(available, limit)
    if batch_size is not None:
        if drop_last:
            used -= used % batch_size
        return used, math.ceil(used / batch_size)
    batches, seen = 0, 0
    for length in lengths or ():
        if seen >= used:
            break
        take = min(length, used - seen)
        seen += take
        batches += math.ceil(take / split_size) if split_size else 1
    return used, batches
