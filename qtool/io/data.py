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
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from qtool.errors import QtoolError, UsageError
from qtool.io import arrays
from qtool.io.batch_axes import BatchLayout
from qtool.io.batching import Chunk, rebatch, split
from qtool.io.feeds import check_array, check_feed, check_names, dims_text, select_inputs
from qtool.io.files import require_regular
from qtool.io.images import (
    IMAGE_SUFFIXES,
    Preprocess,
    check_preprocess,
    image_preprocess,
    load_image,
    missing_preprocess_message,
)
from qtool.io.loader_script import call_loader, guarded, load_function, script_error
from qtool.io.model import InputSpec

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]
KIND_SUFFIXES = {"npy": (".npy",), "npz": (".npz",), "images": IMAGE_SUFFIXES}
DECODE_THREADS = 4  # at most; fewer on smaller machines
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


def _positive(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")
    return value


def _hidden(name: str) -> bool:
    return name.startswith(".")


def list_data_files(path: Path) -> tuple[str, list[Path]]:
    """(kind, files) for a data path; see the module notes for the rules."""
    if path.exists() and not path.is_dir():
        require_regular(path)
        for kind, suffixes in KIND_SUFFIXES.items():
            if path.suffix.lower() in suffixes:
                return kind, [path]
        raise QtoolError(f"unsupported data file {path}: expected .npy, .npz, an image "
                         f"({', '.join(IMAGE_SUFFIXES)}) or a folder of them")
    if not path.is_dir():
        raise QtoolError(f"data not found: {path}")
    found: dict[str, list[Path]] = {kind: [] for kind in KIND_SUFFIXES}
    ignored = 0
    for folder, dirs, names in os.walk(path, onerror=_walk_error):
        dirs[:] = [d for d in dirs if not _hidden(d)]
        for name in names:
            if _hidden(name):
                continue
            suffix = os.path.splitext(name)[1].lower()
            kind = next((k for k, s in KIND_SUFFIXES.items() if suffix in s), None)
            if kind is None:
                ignored += 1
            else:
                require_regular(Path(folder) / name)  # a FIFO would block the reader forever
                found[kind].append(Path(folder) / name)
    kinds = {kind: files for kind, files in found.items() if files}
    if not kinds:
        raise QtoolError(f"no data files found in {path} (looked for .npy, .npz and images "
                         f"{', '.join(IMAGE_SUFFIXES)})")
    if len(kinds) > 1:
        mix = ", ".join(f"{len(files)} {kind}" for kind, files in kinds.items())
        raise QtoolError(f"{path} mixes kinds of data files ({mix}); keep one kind per folder")
    if ignored:
        log.debug("%s: ignoring %d file(s) that are not data", path, ignored)
    ((kind, files),) = kinds.items()
    files.sort(key=lambda f: f.relative_to(path).parts)
    return kind, files


def _walk_error(exc: OSError) -> None:
    raise QtoolError(f"cannot read folder {exc.filename}: {exc.strerror}")


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
    fixed_batch = layout.size
    plan = _Plan(layout=layout, batch_size=batch_size or fixed_batch,
                 drop_last=fixed_batch is not None, limit=limit)

    if loader_script is not None:
        if preprocess:
            log.info("ignoring [preprocess]: data comes from a loader script")
        return _open_script(loader_script, plan)
    path = Path(path)
    kind, files = list_data_files(path)
    root = path if path.is_dir() else path.parent
    if kind != "images" and preprocess:
        log.info("ignoring [preprocess]: the data is .%s arrays, not images", kind)
    if kind == "images":
        source = _open_images(path, files, root, preprocess, plan)
    else:
        source = _open_arrays(kind, path, files, root, plan)
    if source.available_samples is not None and source.num_samples is not None:
        used = source.available_samples if limit is None else min(limit, source.available_samples)
        if source.num_samples == 0:
            raise QtoolError(f"{path} holds {used} sample(s), fewer than the model's fixed batch "
                             f"size {plan.batch_size}")
        if source.num_samples < used:
            log.warning("dropping the last %d sample(s): the model's batch axis is fixed at %d",
                        used - source.num_samples, plan.batch_size)
    return source


class _Plan:
    """How chunks become batches, decided once from the model inputs and the options."""

    def __init__(self, layout: BatchLayout, batch_size, drop_last, limit):
        self.layout = layout
        self.specs = layout.specs
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.limit = limit
        self.allow_sample = layout.batched
        self.check_batch = batch_size is None  # re-batching builds the batch axis itself

    def chunk(self, feed: Feed, where: str) -> Chunk:
        """A raw feed -> checked Chunk with its sample count."""
        if self.allow_sample:
            feed = self.layout.add_sample_axis(feed)
        # onnxruntime wants C order; np.ascontiguousarray would turn scalars into shape (1,)
        feed = {name: a if a.flags.c_contiguous else a.copy(order="C") for name, a in feed.items()}
        length = check_feed(feed, self.layout, where, self.check_batch, self.allow_sample)
        return Chunk(feed, length, where)

    def header_length(self, headers: dict[str, arrays.Header], where: str) -> int:
        """Check .npy headers like arrays and count their samples, without reading the data."""
        lengths = {}
        for spec in self.specs:
            shape, dtype = headers[spec.name]
            axis = self.layout.axis(spec.name)
            if axis is not None and len(shape) == len(spec.shape) - 1:
                shape = shape[:axis] + (1,) + shape[axis:]
            check_array(spec, dtype, shape, where, axis, self.check_batch, self.allow_sample)
            if axis is not None:
                lengths[spec.name] = shape[axis]
        length = self.layout.shared_length(lengths, where)
        if length == 0:
            raise QtoolError(f"{where}: holds zero samples")
        return length

    def source(self, **kwargs) -> DataSource:
        return DataSource(layout=self.layout, batch_size=self.batch_size, limit=self.limit,
                          drop_last=self.drop_last, **kwargs)


def _open_arrays(kind: str, path: Path, files: list[Path], root: Path, plan: _Plan) -> DataSource:
    names = [spec.name for spec in plan.specs]
    if kind == "npy" and len(names) > 1:
        raise QtoolError(f"the model has {len(names)} inputs ({', '.join(names)}); .npy data "
                         f"holds one array: use .npz files keyed by input name")
    lengths = []
    for file in files:
        if kind == "npy":
            headers = {names[0]: arrays.npy_header(file)}
        else:
            keys, headers = arrays.npz_headers(file, names)
            check_names(keys, plan.specs, str(file))
        lengths.append(plan.header_length(headers, str(file)))

    def chunks() -> Iterator[Chunk]:
        for file in files:
            if kind == "npy":
                feed = {names[0]: arrays.load_npy(file)}
            else:
                feed = arrays.load_npz(file, names)
            yield plan.chunk(feed, str(file))

    return plan.source(kind=kind, origin=str(path), chunks=chunks, available_samples=sum(lengths),
                       files=files, root=root, chunk_lengths=lengths)


def _open_images(path: Path, files: list[Path], root: Path, preprocess: dict | None,
                 plan: _Plan) -> DataSource:
    if len(plan.specs) != 1:
        names = ", ".join(spec.name for spec in plan.specs)
        raise QtoolError(f"image data feeds one input but the model has {len(plan.specs)} "
                         f"({names}); use .npz files or a loader script")
    spec = plan.specs[0]
    if not preprocess and len(spec.shape) == 4:  # other ranks: image_preprocess says why not
        raise QtoolError(missing_preprocess_message(path, spec))
    if plan.layout.axis(spec.name) != 0:
        raise QtoolError(f"image data makes batches on axis 0, but input '{spec.name}' "
                         f"{dims_text(spec.shape)} has {plan.layout.describe()}")
    pre: Preprocess = image_preprocess(preprocess, spec)
    if plan.batch_size is None:
        plan.batch_size = 1
        plan.check_batch = False

    hint = "" if pre.output_hw else "; set [preprocess] crop, or resize = [height, width]"

    def chunks() -> Iterator[Chunk]:
        for file, sample in _decode_ahead(files, pre, plan.batch_size):
            try:
                chunk = plan.chunk({spec.name: sample[np.newaxis]}, str(file))
            except QtoolError as exc:
                raise QtoolError(f"{exc}{hint}") from None
            yield chunk

    return plan.source(kind="images", origin=str(path), chunks=chunks,
                       available_samples=len(files), files=files, root=root,
                       detail=pre.describe())


def _decode_ahead(files: list[Path], pre: Preprocess, batch_size: int
                  ) -> Iterator[tuple[Path, np.ndarray]]:
    """Preprocessed images in file order, decoded a few ahead on worker threads.

    Pillow releases the GIL while decoding and resizing, so threads overlap those with each other
    and with the model run that consumes the batches. The look-ahead window bounds memory.
    """
    workers = min(DECODE_THREADS, os.cpu_count() or 1)
    if workers <= 1 or len(files) <= 1:
        for file in files:
            yield file, load_image(file, pre)
        return
    window = 2 * workers + batch_size
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qtool-decode")
    finished = False
    try:
        pending: deque = deque()
        upcoming = iter(files)
        for file in upcoming:
            pending.append((file, pool.submit(load_image, file, pre)))
            if len(pending) >= window:
                break
        while pending:
            file, future = pending.popleft()
            sample = future.result()
            for more in upcoming:
                pending.append((more, pool.submit(load_image, more, pre)))
                break
            yield file, sample
        finished = True
    finally:
        # After an error, an interrupt or an early stop, never wait for a worker stuck in a read.
        pool.shutdown(wait=finished, cancel_futures=True)


def _open_script(loader_script: str, plan: _Plan) -> DataSource:
    script, name, function = load_function(loader_script)
    origin = f"{script}:{name}()"

    def to_chunks(items: Iterable) -> Iterator[Chunk]:
        for index, item in enumerate(guarded(items, script, name)):
            where = f"item {index} of {origin}"
            yield plan.chunk(select_inputs(item, plan.specs, where), where)

    result = call_loader(function, script, name)
    try:
        started = iter(result)
    except (Exception, SystemExit) as exc:
        raise script_error(exc, script, f"iterating the result of {name}()") from None
    one_shot = started is result  # a generator: call the function again for the next pass
    # Check the first item now, before any model runs; the first pass resumes from there.
    first_pass = to_chunks(started)
    try:
        first = next(first_pass)
    except StopIteration:
        raise QtoolError(f"loader script {origin} gave no data") from None

    available = lengths = None
    if isinstance(result, (list, tuple)):
        rest = list(first_pass)  # in memory already: check and count everything now
        lengths = [first.length] + [chunk.length for chunk in rest]
        available = sum(lengths)
        pending: list[Iterator[Chunk] | None] = [iter([first, *rest])]
    else:
        pending = [_prepend(first, first_pass)]

    def chunks() -> Iterator[Chunk]:
        if pending[0] is not None:
            started, pending[0] = pending[0], None
            return started
        return to_chunks(call_loader(function, script, name) if one_shot else result)

    return plan.source(kind="script", origin=origin, chunks=chunks, available_samples=available,
                       chunk_lengths=lengths)


def _prepend(first: Chunk, rest: Iterator[Chunk]) -> Iterator[Chunk]:
    yield first
    yield from rest
