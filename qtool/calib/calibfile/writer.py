"""Writing a calibration file: the JSON and its histogram .npz, both complete before either
is renamed into place."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from qtool.calib.calibfile.records import FORMAT, VERSION, Calibration
from qtool.calib.channelmean import ChannelMean
from qtool.calib.histogram import AbsHistogram
from qtool.io.atomic import atomic_path, write_json
from qtool.io.hashing import sha256_file


def histogram_path_for(calib_path: str | os.PathLike) -> Path:
    path = Path(calib_path)
    stem = path.name.removesuffix(".json")
    return path.with_name(stem + ".npz")


def write_calibration(calib: Calibration, path: str | os.PathLike,
                      histograms: dict[str, AbsHistogram] | None = None,
                      means: dict[str, ChannelMean] | None = None) -> None:
    """Write the JSON (and the histogram .npz beside it) atomically.

    `means`: per-channel means of some tensors (for bias correction), stored beside their
    histograms in the .npz.

    Both are complete in temporary files before either is renamed into place (npz first, JSON
    last), so an interruption or error leaves neither, or at worst a new npz beside the old JSON
    (which then refuses it by its sha256), never a JSON without its histograms.
    """
    path = Path(path)
    histograms = histograms or {}
    if not histograms and not means:
        write_json(path, to_dict(calib))
        return
    npz_path = histogram_path_for(path)
    arrays = {}
    for index, name in enumerate(calib.tensors):
        parts = dict(histograms[name].to_arrays()) if name in histograms else {}
        if means and name in means:
            parts.update(means[name].to_arrays())
        # tensors calibrated by their max alone (no histogram, no means) have no entry
        calib.tensors[name].key = f"t{index}" if parts else None
        arrays.update((f"t{index}/{part}", np.asarray(value)) for part, value in parts.items())
    with atomic_path(path) as json_tmp, atomic_path(npz_path) as npz_tmp:
        with open(npz_tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        calib.histogram_file = npz_path.name
        calib.histogram_sha256 = sha256_file(npz_tmp)
        write_json(json_tmp, to_dict(calib))


def to_dict(calib: Calibration) -> dict:
    tensors = {}
    for name, tensor in calib.tensors.items():
        entry = {"amax": float(tensor.amax)}
        if tensor.abs_max is not None:
            entry["abs_max"] = float(tensor.abs_max)
        entry.update(count=int(tensor.count), nan=int(tensor.nan), inf=int(tensor.inf))
        if tensor.key is not None:
            entry["key"] = tensor.key
        if tensor.rule is not None:
            entry["rule"] = tensor.rule
        if tensor.method is not None:
            entry["method"] = tensor.method
        if tensor.candidates is not None:
            entry["candidates"] = tensor.candidates
        tensors[name] = entry
    histograms = None
    if calib.histogram_file:
        histograms = {"file": calib.histogram_file, "sha256": calib.histogram_sha256}
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {"file": calib.model_file, "sha256": calib.model_sha256, "inputs": calib.inputs},
        "method": calib.method,
        "params": calib.params,
        "bins": calib.bins,
        "num_samples": calib.num_samples,
        "num_batches": calib.num_batches,
        "shard": calib.shard,
        "tools": calib.tools,
        "config": calib.config,
        "histograms": histograms,
        **({"auto": calib.auto} if calib.auto is not None else {}),
        "tensors": tensors,
    }
