""".npy and .npz data: headers checked and samples counted up front, arrays read per pass."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from qtool.errors import QtoolError
from qtool.io import arrays
from qtool.io.batching import Chunk
from qtool.io.data.batch_plan import BatchPlan
from qtool.io.data.source import DataSource
from qtool.io.feeds import check_names


def open_arrays(kind: str, path: Path, files: list[Path], root: Path, plan: BatchPlan) -> DataSource:
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
