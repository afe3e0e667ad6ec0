"""Turn a stream of chunks (one per file or loader item) into the batches a model is fed.

Samples keep their order: chunk order, then batch-axis order inside a chunk. Memory stays at one
chunk plus one batch: pieces are views into the chunk being read until a batch is complete. Each
input is cut and joined along its own batch axis (qtool.io.batch_axes); an input that is not
batched goes whole with every batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from qtool.errors import QtoolError
from qtool.io.batch_axes import BatchLayout
from qtool.io.feeds import Feed, shape_text


@dataclass
class Chunk:
    """A feed as read from one place, with its sample count and where it came from."""

    feed: Feed
    length: int
    where: str


def split(chunks: Iterable[Chunk], layout: BatchLayout, size: int | None,
          limit: int | None) -> Iterator[Feed]:
    """Each chunk in batches of at most `size` samples (None: whole), never joined with another
    chunk; stop after `limit` samples, cutting the last batch short."""
    remaining = limit
    for chunk in chunks:
        take = chunk.length if remaining is None else min(chunk.length, remaining)
        step = size or take
        if take == chunk.length and step >= take:
            yield chunk.feed
        else:
            for start in range(0, take, step):
                yield layout.take(chunk.feed, start, min(start + step, take))
        if remaining is not None:
            remaining -= take
            if remaining <= 0:
                return


def _check_joinable(first: Chunk, other: Chunk, layout: BatchLayout) -> None:
    for spec in layout.specs:
        a, b = first.feed[spec.name], other.feed[spec.name]
        if layout.sample_shape(spec.name, a.shape) != layout.sample_shape(spec.name, b.shape):
            axis = layout.axis(spec.name)
            beyond = "" if axis is None else f" beyond batch axis {axis}"
            raise QtoolError(
                f"cannot batch {first.where} with {other.where}: input '{spec.name}' has shape "
                f"{shape_text(a.shape)} and {shape_text(b.shape)}{beyond}; "
                f"use batch size 1 or make the samples one size"
            )
    name = layout.differing_unbatched(first.feed, other.feed)
    if name is not None:
        raise QtoolError(
            f"cannot batch {first.where} with {other.where}: input '{name}' is not batched and "
            f"has a different value in each; give whole batches (leave the batch size unset), "
            f"or set its batch axis with [inputs.{name}] batch_axis in the config"
        )


def rebatch(chunks: Iterable[Chunk], layout: BatchLayout, batch_size: int,
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
            _check_joinable(pieces[0], chunk, layout)
        pos = 0
        while pos < take:
            n = min(batch_size - buffered, take - pos)
            if buffered == 0 and n == batch_size:
                # A whole batch inside one chunk: hand out the view, no copy.
                yield chunk.feed if n == chunk.length else layout.take(chunk.feed, pos, pos + n)
            else:
                pieces.append(Chunk(layout.take(chunk.feed, pos, pos + n), n, chunk.where))
                buffered += n
                if buffered == batch_size:
                    yield layout.join([piece.feed for piece in pieces])
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
            yield layout.join([piece.feed for piece in pieces])
