"""Turn a stream of chunks (one per file or loader item) into the batches a model is fed.

Samples keep their order: chunk order, then axis-0 order inside a chunk. Memory stays at one chunk
plus one batch: pieces are views into the chunk being read until a batch is complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from qtool.errors import QtoolError
from qtool.io.feeds import shape_text
from qtool.io.model import InputSpec

Feed = dict[str, np.ndarray]


@dataclass
class Chunk:
    """A feed as read from one place, with its sample count and where it came from."""

    feed: Feed
    length: int
    where: str


def _slice(feed: Feed, specs: Sequence[InputSpec], start: int, stop: int) -> Feed:
    return {spec.name: feed[spec.name][start:stop] if feed[spec.name].ndim else feed[spec.name]
            for spec in specs}


def truncate(chunks: Iterable[Chunk], specs: Sequence[InputSpec], limit: int | None) -> Iterator[Feed]:
    """Each chunk is a batch; stop after `limit` samples, cutting the last chunk short."""
    remaining = limit
    for chunk in chunks:
        if remaining is not None and chunk.length > remaining:
            yield _slice(chunk.feed, specs, 0, remaining)
            return
        yield chunk.feed
        if remaining is not None:
            remaining -= chunk.length
            if remaining <= 0:
                return


def _check_joinable(first: Chunk, other: Chunk, specs: Sequence[InputSpec]) -> None:
    for spec in specs:
        a, b = first.feed[spec.name], other.feed[spec.name]
        if a.shape[1:] != b.shape[1:]:
            raise QtoolError(
                f"cannot batch {first.where} with {other.where}: input '{spec.name}' has shape "
                f"{shape_text(a.shape)} and {shape_text(b.shape)} beyond axis 0; "
                f"use batch size 1 or make the samples one size"
            )


def rebatch(chunks: Iterable[Chunk], specs: Sequence[InputSpec], batch_size: int,
            limit: int | None = None, drop_last: bool = False,
            on_drop: Callable[[int], None] | None = None) -> Iterator[Feed]:
    """Yield batches of exactly `batch_size` samples (the last one may be smaller).

    `limit` stops after that many samples without reading further chunks. `drop_last` drops a
    final incomplete batch (a model whose batch axis is fixed cannot run it) and reports its
    size to `on_drop`.
    """
    pieces: list[Chunk] = []
    buffered = 0
    remaining = limit
    for chunk in chunks:
        take = chunk.length if remaining is None else min(chunk.length, remaining)
        if pieces:
            _check_joinable(pieces[0], chunk, specs)
        pos = 0
        while pos < take:
            n = min(batch_size - buffered, take - pos)
            if buffered == 0 and n == batch_size:
                # A whole batch inside one chunk: hand out the view, no copy.
                yield chunk.feed if n == chunk.length else _slice(chunk.feed, specs, pos, pos + n)
            else:
                pieces.append(Chunk(_slice(chunk.feed, specs, pos, pos + n), n, chunk.where))
                buffered += n
                if buffered == batch_size:
                    yield _join(pieces, specs)
                    pieces, buffered = [], 0
            pos += n
        if remaining is not None:
            remaining -= take
            if remaining <= 0:
                break
    if pieces:
        if drop_last:
            if on_drop is not None:
                on_drop(buffered)
        else:
            yield _join(pieces, specs)


def _join(pieces: list[Chunk], specs: Sequence[InputSpec]) -> Feed:
    if len(pieces) == 1:
        return pieces[0].feed
    return {spec.name: np.concatenate([p.feed[spec.name] for p in pieces], axis=0) for spec in specs}
