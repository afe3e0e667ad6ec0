"""Check feeds (input name -> array) against a model's input signature.

Every data source ends here, so a mismatch is reported once, the same way, naming the input, the
file (or loader-script item) and the expected and found dtype and shape. Dtypes are strict: no
silent casts, because a float64 or int32 array where the model wants float32 or int64 is almost
always a data-preparation slip worth seeing.

Where each input keeps its samples (its batch axis, or none) is qtool.io.batch_axes' job; the
checks here take it as given.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from qtool.errors import QtoolError
from qtool.io.model import InputSpec

if TYPE_CHECKING:
    from qtool.io.batch_axes import BatchLayout

Feed = dict[str, np.ndarray]  # one batch: input name -> array

log = logging.getLogger(__name__)


def dims_text(shape: Sequence) -> str:
    """A model shape as people read it: [?,3,224,224] (named dims keep their name)."""
    return "[" + ",".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"


def shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"


def expected_rank_text(spec: InputSpec, sample_ok: bool) -> str:
    rank = len(spec.shape)
    text = f"rank {rank} {dims_text(spec.shape)}"
    if sample_ok:
        text += f" (or rank {rank - 1} for a single sample)"
    return text


def check_array(spec: InputSpec, dtype: np.dtype, shape: Sequence[int], where: str,
                batch_axis: int | None = None, check_batch: bool = True,
                allow_sample: bool = False) -> None:
    """Raise a QtoolError when an array's dtype or shape does not fit `spec`.

    `batch_axis`: the input's batch axis (None: not batched). `check_batch=False` skips it (data
    that is about to be re-batched). `allow_sample` only changes the message: the source would
    have accepted one sample without the batch axis. Dynamic dimensions accept any size,
    including a different size in every batch.
    """
    dtype = np.dtype(dtype)
    found = f"{dtype} {shape_text(shape)}"
    expected = f"{spec.dtype} {dims_text(spec.shape)}"
    if dtype != spec.dtype:
        hint = ""
        if dtype.kind in "fiub" and spec.dtype.kind in "fiub":
            hint = f"; convert it with .astype(np.{spec.dtype.name})"
        raise QtoolError(f"{where}: input '{spec.name}' expects {expected}, found {found}{hint}")
    if len(shape) != len(spec.shape):
        sample_ok = allow_sample and batch_axis is not None
        raise QtoolError(
            f"{where}: input '{spec.name}' expects {spec.dtype} "
            f"{expected_rank_text(spec, sample_ok)}, found rank {len(shape)} {found}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, shape)):
        if axis == batch_axis and not check_batch:
            continue
        if isinstance(want, int) and want != got:
            what = f"batch axis {axis}" if axis == batch_axis else f"axis {axis}"
            raise QtoolError(
                f"{where}: input '{spec.name}' {what} expects {want}, found {got} "
                f"(expects {expected}, found {found})"
            )


def as_array(value, name: str, where: str) -> np.ndarray:
    """Accept numpy arrays and objects that convert to one (e.g. CPU torch tensors)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__array__"):
        try:
            return np.asarray(value)
        except Exception as exc:  # third-party __array__ implementations raise anything
            raise QtoolError(f"{where}: input '{name}' cannot be converted to a numpy array: "
                             f"{exc}") from None
    raise QtoolError(f"{where}: input '{name}' is a {type(value).__name__}, not a numpy array")


def select_inputs(feed: Mapping, specs: Sequence[InputSpec], where: str) -> dict[str, np.ndarray]:
    """Pick the model's inputs out of a mapping; a missing one is an error naming what was found.

    Other keys (labels stored beside the inputs, say) are ignored with a debug message.
    """
    if not isinstance(feed, Mapping):
        raise QtoolError(f"{where}: expected a dict of input name -> array, "
                         f"found a {type(feed).__name__}")
    check_names(list(feed), specs, where)
    return {spec.name: as_array(feed[spec.name], spec.name, where) for spec in specs}


def check_names(keys: Sequence, specs: Sequence[InputSpec], where: str) -> None:
    """Every model input must be among `keys`; extra keys are logged at debug level."""
    names = [spec.name for spec in specs]
    missing = [name for name in names if name not in keys]
    if missing:
        found = ", ".join(repr(str(key)) for key in keys) or "none"
        raise QtoolError(
            f"{where}: missing model input{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(n) for n in missing)} (found keys: {found})"
        )
    extra = [str(key) for key in keys if key not in names]
    if extra:
        log.debug("%s: ignoring keys that are not model inputs: %s", where, ", ".join(extra))


def check_feed(feed: Mapping[str, np.ndarray], layout: BatchLayout, where: str,
               check_batch: bool = True, allow_sample: bool = False) -> int:
    """Validate a whole feed (every input present, dtype exact, rank and static dims matching)
    and return its number of samples."""
    for spec in layout.specs:
        array = feed[spec.name]
        check_array(spec, array.dtype, array.shape, where, layout.axis(spec.name), check_batch,
                    allow_sample)
    length = layout.length(feed, where)
    if length == 0:
        raise QtoolError(f"{where}: holds zero samples")
    return length
