"""Check feeds (input name -> array) against a model's input signature.

Every data source ends here, so a mismatch is reported once, the same way, naming the input, the
file (or loader-script item) and the expected and found dtype and shape. Dtypes are strict: no
silent casts, because a float64 or int32 array where the model wants float32 or int64 is almost
always a data-preparation slip worth seeing.

Axis 0 is the batch axis. A model "has a batch axis" when axis 0 of every input of rank >= 1 is
either dynamic or the same static size; that size (or None when dynamic) is what `batch_axis`
returns. Scalar (rank 0) inputs take no part in batching.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from qtool.errors import QtoolError
from qtool.io.model import InputSpec

log = logging.getLogger(__name__)

DYNAMIC = "dynamic"


def dims_text(shape: Sequence) -> str:
    """A model shape as people read it: [?,3,224,224] (named dims keep their name)."""
    return "[" + ",".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"


def shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"


def batch_axis(specs: Sequence[InputSpec]) -> int | str | None:
    """The model's batch size: an int when fixed, DYNAMIC when free, None when axis 0 is not shared.

    None means the inputs' static first dimensions disagree (e.g. [1, 3] and [4]), so axis 0 is
    not a batch axis; such models take their feeds exactly as given, one feed per sample.
    """
    fixed = set()
    for spec in specs:
        if len(spec.shape) == 0:
            continue
        if isinstance(spec.shape[0], int):
            fixed.add(spec.shape[0])
    if len(fixed) > 1:
        return None
    if fixed:
        return fixed.pop()
    return DYNAMIC


def expected_rank_text(spec: InputSpec, allow_sample: bool) -> str:
    rank = len(spec.shape)
    text = f"rank {rank} {dims_text(spec.shape)}"
    if allow_sample and rank >= 1:
        text += f" (or rank {rank - 1} for a single sample)"
    return text


def check_array(spec: InputSpec, dtype: np.dtype, shape: Sequence[int], where: str,
                check_batch: bool = True, allow_sample: bool = False) -> None:
    """Raise a QtoolError when an array's dtype or shape does not fit `spec`.

    `check_batch=False` skips axis 0 (data that is about to be re-batched). `allow_sample` only
    changes the message: the source would have accepted one sample without the batch axis.
    Dynamic dimensions accept any size, including a different size in every batch.
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
        raise QtoolError(
            f"{where}: input '{spec.name}' expects {spec.dtype} "
            f"{expected_rank_text(spec, allow_sample)}, found rank {len(shape)} {found}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, shape)):
        if axis == 0 and not check_batch:
            continue
        if isinstance(want, int) and want != got:
            what = "batch axis 0" if axis == 0 else f"axis {axis}"
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


def add_sample_axis(feed: dict[str, np.ndarray], specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """Give a batch axis of 1 to every array that is one sample (rank = model rank - 1)."""
    out = {}
    for spec in specs:
        array = feed[spec.name]
        if len(spec.shape) >= 1 and array.ndim == len(spec.shape) - 1:
            array = array[np.newaxis]
        out[spec.name] = array
    return out


def feed_length(feed: Mapping[str, np.ndarray], specs: Sequence[InputSpec], where: str) -> int:
    """Number of samples in a feed: the shared axis-0 length of its non-scalar inputs.

    A model without a shared batch axis, or with only scalar inputs, counts each feed as one sample.
    """
    if batch_axis(specs) is None:
        return 1
    lengths = {spec.name: feed[spec.name].shape[0] for spec in specs
               if len(spec.shape) >= 1 and feed[spec.name].ndim >= 1}
    if not lengths:
        return 1
    values = set(lengths.values())
    if len(values) > 1:
        detail = ", ".join(f"{name} {n}" for name, n in lengths.items())
        raise QtoolError(f"{where}: the inputs do not share the batch axis 0 ({detail})")
    return values.pop()


def check_feed(feed: Mapping[str, np.ndarray], specs: Sequence[InputSpec], where: str,
               check_batch: bool = True, allow_sample: bool = False) -> None:
    """Validate a whole feed: every input present, dtype exact, rank and static dims matching."""
    for spec in specs:
        array = feed[spec.name]
        check_array(spec, array.dtype, array.shape, where, check_batch, allow_sample)
    length = feed_length(feed, specs, where)
    if length == 0:
        raise QtoolError(f"{where}: holds zero samples")
