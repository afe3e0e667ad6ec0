"""Data from a loader script: its items checked as they come, the first one before any model
runs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from qtool.errors import QtoolError
from qtool.io.batching import Chunk
from qtool.io.data.batch_plan import BatchPlan
from qtool.io.data.source import DataSource
from qtool.io.feeds import select_inputs
from qtool.io.loader_script import call_loader, guarded, load_function, script_error


def open_script(loader_script: str, plan: BatchPlan) -> DataSource:
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
