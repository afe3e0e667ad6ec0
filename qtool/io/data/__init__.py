"""Data readers: the one way every command gets batches of model inputs from disk.

`open_data(path, specs, ...)` returns a DataSource: iterate it (each iteration starts over) to get
one feed per batch, input name -> numpy array, already checked against the model's inputs.

What a path may be:
  .npy file            one array of samples for a single-input model (batch axis included); an
                       array of rank = model rank - 1 is one sample and gets a batch axis of 1
  .npz file            arrays keyed by input name (any number of inputs), each holding the same
                       number of samples on its batch axis; other keys (labels, say) are ignored
  image file           .jpg .jpeg .png .bmp (any case), preprocessed as [preprocess] describes
  directory            every file of one of those kinds, searched recursively and sorted by
                       relative path (component by component, plain code-point order, as Python
                       sorts strings); hidden files and folders (".name") are skipped, symlinked
                       folders are not followed; other files (labels.txt, README) are ignored; a
                       mix of kinds is an error
  loader script        see qtool.io.loader_script

Batching: each input's batch axis comes from the model or the config's [inputs] table
(qtool.io.batch_axes). Without batch_size each loader item is one batch, each .npy/.npz file is one
batch of at most FILE_BATCH_SIZE samples (a larger file is cut into batches of that size, never
joined with the next file), and image files come one per batch. batch_size re-batches the stream
of samples (memory: one file plus one batch). num_samples stops after that many samples, cutting
the last batch short. A model whose batch axis is fixed (e.g. [1, 3, 224, 224]) is always fed
batches of that size: batch_size may only repeat it, and a final incomplete batch is dropped with
a warning.

Checks happen before the first batch where the files allow it: .npy/.npz headers (shape, dtype)
for every file, the preprocessing against the image input, the first loader item. Dtypes must
match exactly; static dimensions must match; dynamic ones may change from batch to batch. A file or
item with zero samples is an error (never silently skipped). NaN and Inf pass through untouched.

Modules: listing (which files a path names), source (DataSource), batch_plan (checking feeds and
cutting batches), array_files, image_files and script_items (one reader per kind of data).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from qtool.errors import QtoolError, UsageError
from qtool.io.batch_axes import BatchLayout
from qtool.io.data.array_files import open_arrays
from qtool.io.data.batch_plan import BatchPlan
from qtool.io.data.image_files import open_images
from qtool.io.data.listing import list_data_files
from qtool.io.data.script_items import open_script
from qtool.io.data.source import FILE_BATCH_SIZE, DataSource
from qtool.io.feeds import dims_text
from qtool.io.images import check_preprocess
from qtool.io.model import InputSpec

__all__ = ["FILE_BATCH_SIZE", "list_data_files", "open_data"]

log = logging.getLogger("qtool.io.data")


def open_data(path: str | os.PathLike | None, specs: Sequence[InputSpec], *,
              preprocess: dict | None = None, inputs: dict | None = None,
              batch_size: int | None = None, num_samples: int | None = None,
              loader_script: str | None = None) -> DataSource:
    """Open model input data for reading in batches; everything checkable is checked now.

    `inputs`: the config's [inputs] table (each input's batch_axis, see qtool.io.batch_axes)."""
    specs = list(specs)
    if not specs:
        raise QtoolError("the model has no inputs to feed")
    batch_size = _positive("batch size", batch_size)
    limit = _positive("number of samples", num_samples)
    check_preprocess(preprocess)
    if loader_script is not None and path is not None:
        raise UsageError("give either a data path or a loader script, not both")
    if loader_script is None and path is None:
        raise UsageError("no data given: pass a data path or a loader script")

    layout = _batch_layout(specs, inputs, batch_size)
    fixed_batch = layout.size
    plan = BatchPlan(layout=layout, batch_size=batch_size or fixed_batch,
                     drop_last=fixed_batch is not None, limit=limit)

    if loader_script is not None:
        if preprocess:
            log.info("ignoring [preprocess]: data comes from a loader script")
        return open_script(loader_script, plan)
    path = Path(path)
    kind, files = list_data_files(path)
    root = path if path.is_dir() else path.parent
    if kind != "images" and preprocess:
        log.info("ignoring [preprocess]: the data is .%s arrays, not images", kind)
    if kind == "images":
        source = open_images(path, files, root, preprocess, plan)
    else:
        source = open_arrays(kind, path, files, root, plan)
    _check_fixed_batch_cut(source, path, limit, plan)
    return source


def _positive(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")
    return value


def _batch_layout(specs: list[InputSpec], inputs: dict | None,
                  batch_size: int | None) -> BatchLayout:
    """Each input's batch axis, checked against the batch size asked for."""
    layout = BatchLayout.of(specs, inputs)
    if layout.size == 0:
        fixed = layout.fixed_input()
        raise QtoolError(f"input '{fixed.name}' is {dims_text(fixed.shape)}: a batch axis fixed at "
                         f"0 takes no samples; export the model with a batch of 1 or more")
    if batch_size is not None:
        if not layout.batched:
            shapes = ", ".join(f"{s.name} {dims_text(s.shape)}" for s in specs)
            raise QtoolError(f"the model inputs share no batch axis ({shapes}); batch size "
                             f"{batch_size} cannot be applied: leave it unset, or set "
                             f"[inputs.NAME] batch_axis in the config")
        if layout.size is not None and batch_size != layout.size:
            fixed = layout.fixed_input()
            raise QtoolError(f"batch size {batch_size} conflicts with the model's fixed batch "
                             f"axis: input '{fixed.name}' is {dims_text(fixed.shape)} (batch axis "
                             f"{layout.axis(fixed.name)}); leave the batch size unset or export "
                             f"the model with a dynamic batch axis")
    return layout


def _check_fixed_batch_cut(source: DataSource, path: Path, limit: int | None,
                           plan: BatchPlan) -> None:
    """A fixed batch axis drops the last incomplete batch: an error when nothing is left, a
    warning otherwise (known before reading for files)."""
    if source.available_samples is not None and source.num_samples is not None:
        used = source.available_samples if limit is None else min(limit, source.available_samples)
        if source.num_samples == 0:
            raise QtoolError(f"{path} holds {used} sample(s), fewer than the model's fixed batch "
                             f"size {plan.batch_size}")
        if source.num_samples < used:
            log.warning("dropping the last %d sample(s): the model's batch axis is fixed at %d",
                        used - source.num_samples, plan.batch_size)
