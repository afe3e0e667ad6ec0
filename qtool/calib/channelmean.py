"""Streaming per-channel means of one activation tensor, for bias correction at quantize time.

The mean of x over every axis except the channel axis, over the calibration batches that sample
means (every 4th on all but small data sets, see qtool.calib.collection.MEAN_EVERY). Sums are
float64 across batches; within a batch each channel's contiguous run is summed by numpy in
float32 (pairwise summation, error about 1e-7 relative), which keeps this pass about as cheap as
reading the tensor once. Shards merge exactly by adding sums and counts.

Convolution inputs mostly come as per-sample channel means pooled inside onnxruntime instead
(update_pooled, see qtool.calib.pooled); one tensor always takes one of the two routes.
"""

from __future__ import annotations

import math

import numpy as np

from qtool.errors import QtoolError

FORMAT_KEYS = ("mean_sum", "mean_count", "mean_axis")


class ChannelMean:
    """Per-channel sums and counts of one tensor along a fixed axis (negative counts from the end)."""

    def __init__(self, axis: int):
        self.axis = int(axis)
        self._sum: np.ndarray | None = None
        self._count = 0

    @property
    def channels(self) -> int | None:
        return None if self._sum is None else self._sum.size

    @property
    def count(self) -> int:
        """Values summed per channel."""
        return self._count

    @property
    def mean(self) -> np.ndarray | None:
        """float64 [channels], or None before any value."""
        if self._sum is None or self._count == 0:
            return None
        return self._sum / self._count

    def update(self, x) -> None:
        arr = np.asarray(x)
        if arr.ndim == 0 or arr.dtype.kind != "f" or arr.size == 0:
            return
        axis = self.axis if self.axis >= 0 else arr.ndim + self.axis
        if not 0 <= axis < arr.ndim:
            return  # a rank that has no such axis: nothing to learn from this tensor
        channels = arr.shape[axis]
        outer = math.prod(arr.shape[:axis])
        inner = math.prod(arr.shape[axis + 1:])
        blocks = np.ascontiguousarray(arr).reshape(outer, channels, inner)
        if self._sum is None:
            self._sum = np.zeros(channels, dtype=np.float64)
        elif channels != self._sum.size:
            raise QtoolError(f"tensor changed its channel count from {self._sum.size} to {channels} "
                             "between batches")
        with np.errstate(over="ignore", invalid="ignore"):  # Inf/NaN in: a non-finite mean out
            if inner > 1:
                per_block = blocks.sum(axis=2, dtype=np.float32)
                self._sum += per_block.sum(axis=0, dtype=np.float64)
            else:
                self._sum += blocks[:, :, 0].sum(axis=0, dtype=np.float64)
        self._count += outer * inner

    def update_pooled(self, pooled) -> None:
        """Add one batch of per-sample channel means ([N, C, 1, ...], from GlobalAveragePool).

        Each sample counts once, so the result is the mean over samples of their spatial means:
        the mean over all values whenever every sample has the same spatial size."""
        arr = np.asarray(pooled)
        if self.axis != 1 or arr.ndim < 2 or arr.size == 0:
            return
        per_sample = arr.reshape(arr.shape[0], arr.shape[1], -1)[:, :, 0].astype(np.float64)
        if self._sum is None:
            self._sum = np.zeros(per_sample.shape[1], dtype=np.float64)
        elif per_sample.shape[1] != self._sum.size:
            raise QtoolError(f"tensor changed its channel count from {self._sum.size} to "
                             f"{per_sample.shape[1]} between batches")
        self._sum += per_sample.sum(axis=0)
        self._count += per_sample.shape[0]

    def merge(self, other: ChannelMean) -> None:
        if other.axis != self.axis:
            raise QtoolError(f"cannot merge channel means along axes {self.axis} and {other.axis}")
        if other._sum is None:
            return
        if self._sum is None:
            self._sum = other._sum.copy()
        elif other._sum.size != self._sum.size:
            raise QtoolError("cannot merge channel means of different channel counts")
        else:
            self._sum = self._sum + other._sum
        self._count += other._count

    def to_arrays(self) -> dict[str, np.ndarray]:
        total = self._sum if self._sum is not None else np.zeros(0, dtype=np.float64)
        return {"mean_sum": total.copy(), "mean_count": np.int64(self._count),
                "mean_axis": np.int64(self.axis)}

    @classmethod
    def from_arrays(cls, arrays) -> ChannelMean | None:
        """Rebuild from to_arrays() output; None when the arrays hold no means (older files)."""
        if not all(key in arrays for key in FORMAT_KEYS):
            return None
        total = np.asarray(arrays["mean_sum"])
        count, axis = np.asarray(arrays["mean_count"]), np.asarray(arrays["mean_axis"])
        # Non-finite sums (NaN in the activations) are kept: the reader drops those means.
        if (total.ndim != 1 or total.dtype.kind != "f"
                or count.shape != () or count.dtype.kind not in "iu" or count < 0
                or axis.shape != () or axis.dtype.kind not in "iu"):
            raise QtoolError("channel means are malformed")
        result = cls(int(axis))
        if total.size:
            result._sum = total.astype(np.float64)
            result._count = int(count)
        return result
