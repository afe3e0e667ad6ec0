"""Image data: one image per sample, preprocessed for the model's one input, decoded ahead."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from qtool.errors import QtoolError
from qtool.io.batching import Chunk
from qtool.io.data.batch_plan import BatchPlan
from qtool.io.data.source import DataSource
from qtool.io.feeds import dims_text
from qtool.io.images import Preprocess, image_preprocess, load_image, missing_preprocess_message

DECODE_THREADS = 4  # at most; fewer on smaller machines


def open_images(path: Path, files: list[Path], root: Path, preprocess: dict | None,
                 plan: BatchPlan) -> DataSource:
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
        for file, sample in decode_ahead(files, pre, plan.batch_size):
            try:
                chunk = plan.chunk({spec.name: sample[np.newaxis]}, str(file))
            except QtoolError as exc:
                raise QtoolError(f"{exc}{hint}") from None
            yield chunk

    return plan.source(kind="images", origin=str(path), chunks=chunks,
                       available_samples=len(files), files=files, root=root,
                       detail=pre.describe())


def decode_ahead(files: list[Path], pre: Preprocess, batch_size: int
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
