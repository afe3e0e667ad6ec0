"""Collect per-batch outputs and write them as one .npz, atomically.

Per output name: when every batch gives an array of rank >= 1 with the same trailing shape and
dtype, the batches are concatenated along axis 0 under the output's own name; otherwise each batch
is stored as `NAME/<batch index>` (e.g. `logits/0`, `logits/1`), so nothing is padded or lost.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from qtool.io.atomic import atomic_path


def merge_batches(batches: list[dict], names: list[str]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name in names:
        parts = [batch[name] for batch in batches]
        if not parts:
            continue
        same = all(p.ndim >= 1 and p.shape[1:] == parts[0].shape[1:] and p.dtype == parts[0].dtype
                   for p in parts)
        if same:
            arrays[name] = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        else:
            for index, part in enumerate(parts):
                arrays[f"{name}/{index}"] = part
    return arrays


def write_npz(target: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez, but atomic and with any key (np.savez reserves 'file' and 'allow_pickle')."""
    with atomic_path(target) as tmp, open(tmp, "wb") as handle, \
            zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            with archive.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
