"""Collect per-batch outputs and write them as one .npz, atomically.

Per output name: when every batch gives an array of rank >= 1 with the same dtype and the same
shape beyond one axis that holds the batch's samples, the batches are concatenated along that axis
under the output's own name (the first such axis: axis 0 for the usual layout, axis 1 for a
recurrent state [layers, batch, units]); otherwise each batch is stored as `NAME/<batch index>`
(e.g. `logits/0`, `logits/1`), so nothing is padded or lost.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from qtool.io.atomic import atomic_path


def merge_batches(batches: list[dict], names: list[str],
                  counts: list[int] | None = None) -> dict[str, np.ndarray]:
    """`counts`: samples in each batch (None: every axis 0 is taken to hold them)."""
    arrays: dict[str, np.ndarray] = {}
    for name in names:
        parts = [batch[name] for batch in batches]
        if not parts:
            continue
        axis = _sample_axis(parts, counts)
        if axis is not None:
            arrays[name] = np.concatenate(parts, axis=axis) if len(parts) > 1 else parts[0]
        else:
            for index, part in enumerate(parts):
                arrays[f"{name}/{index}"] = part
    return arrays


def _sample_axis(parts: list[np.ndarray], counts: list[int] | None) -> int | None:
    """The first axis along which every part holds its batch's samples, the rest alike."""
    first = parts[0]
    if any(p.ndim != first.ndim or p.dtype != first.dtype for p in parts) or first.ndim == 0:
        return None
    for axis in range(first.ndim):
        rest = first.shape[:axis] + first.shape[axis + 1:]
        if all(p.shape[:axis] + p.shape[axis + 1:] == rest for p in parts) and (
                counts is None or all(p.shape[axis] == n for p, n in zip(parts, counts))):
            return axis
        if counts is None:
            return None  # axis 0 or nothing
    return None


def write_npz(target: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez, but atomic and with any key (np.savez reserves 'file' and 'allow_pickle')."""
    with atomic_path(target) as tmp, open(tmp, "wb") as handle, \
            zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            with archive.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
