"""How raw feeds become checked chunks and chunks become batches, decided once per data source."""

from __future__ import annotations

from qtool.errors import QtoolError
from qtool.io import arrays
from qtool.io.batch_axes import BatchLayout
from qtool.io.batching import Chunk
from qtool.io.data.source import DataSource
from qtool.io.feeds import Feed, check_array, check_feed


class BatchPlan:
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
