"""The histogram .npz beside a calibration file, read back: only this calibration's members,
each checked against the size its header allows before it is read, and its sha256 checked."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qtool.calib.channelmean import FORMAT_KEYS as MEAN_KEYS
from qtool.calib.channelmean import ChannelMean
from qtool.calib.histogram import DEFAULT_BINS, DEFAULT_MAX_BINS_FACTOR, AbsHistogram
from qtool.errors import QtoolError, first_line
from qtool.io.hashing import sha256_file

if TYPE_CHECKING:
    from qtool.calib.calibfile.records import Calibration

# Smallest base bin count the member size cap assumes (channel means of wide layers fit under it).
MEMBER_FLOOR = 2048


def load_stored(calib: Calibration) -> tuple[dict[str, AbsHistogram], dict[str, ChannelMean]]:
    """The histograms and the channel-mean accumulators, from one read of the .npz."""
    path = calib.histogram_path()
    if path is None and calib.tensors and all(
            t.rule == "bounded" and t.count == 0 for t in calib.tensors.values()):
        return {}, {}  # every tensor was calibrated by its max alone: nothing to read
    histograms, means = {}, {}
    for name, parts in _read_entries(calib).items():
        if set(parts) - set(MEAN_KEYS):  # anything besides channel means: a histogram
            histograms[name] = _parse(AbsHistogram.from_arrays, parts,
                                      f"histogram of {name!r} in {path}")
        elif calib.tensors[name].count:
            raise QtoolError(f"histogram file {path} has no histogram for tensor {name!r}")
        accumulator = _parse(ChannelMean.from_arrays, parts, f"channel means of {name!r} in {path}")
        if accumulator is not None:
            means[name] = accumulator
    return histograms, means


def _read_entries(calib: Calibration) -> dict[str, dict[str, np.ndarray]]:
    """The .npz arrays of each tensor, keyed by tensor name (parts without the prefix)."""
    path = calib.histogram_path()
    if path is None:
        raise QtoolError("this calibration file has no histograms (made from a TensorRT cache?)")
    if not path.is_file():
        raise QtoolError(f"histogram file not found: {path}")
    if calib.histogram_sha256 and sha256_file(path) != calib.histogram_sha256:
        raise QtoolError(f"histogram file {path} does not match its calibration file (sha256 differs)")
    arrays = _read_members(calib, path)
    entries = {}
    for name, tensor in calib.tensors.items():
        if tensor.key is None:  # calibrated by its max alone, nothing stored
            continue
        prefix = f"{tensor.key}/"
        parts = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        if not parts:
            raise QtoolError(f"histogram file {path} has no entry for tensor {name!r}")
        entries[name] = parts
    return entries


def _read_members(calib: Calibration, path: Path) -> dict[str, np.ndarray]:
    """The .npz members of this calibration's tensors only, each checked against the size
    the header allows before it is read (an unnamed member is never read)."""
    import zipfile

    from qtool.io.arrays import read_header
    from qtool.io.files import open_regular

    prefixes = {tensor.key for tensor in calib.tensors.values() if tensor.key is not None}
    # counts hold at most max_bins = 64 * bins entries; channel means one per channel
    cap = 8 * DEFAULT_MAX_BINS_FACTOR * max(calib.bins or DEFAULT_BINS, MEMBER_FLOOR)
    arrays = {}
    try:
        with open_regular(path) as raw, zipfile.ZipFile(raw) as archive:
            for member in archive.namelist():
                name = member.removesuffix(".npy")
                if name.split("/", 1)[0] not in prefixes or "/" not in name:
                    continue
                with archive.open(member) as handle:
                    shape, dtype = read_header(handle, f"{path} [{name}]")
                if math.prod(shape) * dtype.itemsize > cap:
                    raise QtoolError(f"histogram file {path}: {name} holds {list(shape)} "
                                     f"{dtype} values, more than {calib.bins or DEFAULT_BINS} "
                                     f"bins can need")
                with archive.open(member) as handle:
                    arrays[name] = np.lib.format.read_array(handle, allow_pickle=False)
    except QtoolError:
        raise
    except Exception as exc:
        raise QtoolError(f"cannot read histogram file {path}: {first_line(exc, 300)}") from None
    return arrays


def channel_means(accumulators: dict[str, ChannelMean]) -> dict[str, tuple[int, np.ndarray]] | None:
    """tensor -> (channel axis, float64 mean per channel), as bias correction takes them; means
    that are not finite (NaN or Inf in the activations) are left out; None when none is left."""
    means = {}
    for name, accumulator in accumulators.items():
        mean = accumulator.mean
        if mean is not None and np.all(np.isfinite(mean)):
            means[name] = (accumulator.axis, mean)
    return means or None


def _parse(reader, parts: dict, what: str):
    """reader(parts), any failure as one QtoolError line naming `what`."""
    try:
        return reader(parts)
    except QtoolError as exc:
        raise QtoolError(f"{what}: {exc}") from None
    except Exception as exc:
        raise QtoolError(f"{what} is invalid: {first_line(exc, 300)}") from None
