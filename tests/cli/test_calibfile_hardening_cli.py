"""Corrupt and foreign calibration files, end to end: each is one `error:` line with exit status 1
from the commands that read them (quantize reads the JSON, merge-calib also the histograms), and
nothing in them is ever executed."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest

from tests.tiny_models import conv_relu_gemm, save


@pytest.fixture
def calibrated(tmp_path, qtool):
    model = save(conv_relu_gemm(), tmp_path / "net.onnx")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(4, 2, 6, 6)).astype(np.float32))
    assert qtool("calibrate", model, "--data", tmp_path / "x.npy", "-q").code == 0
    return tmp_path


def rewrite_json(path, change):
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(version=2), "unsupported version 2"),
    (lambda d: d.update(format="onnxruntime-calibration"), "'format' must be"),
    (lambda d: d["tensors"]["x"].update(amax=float("inf")), "non-finite number Infinity"),
    (lambda d: d["tensors"]["x"].update(amax=0.0), "amax must be a finite positive number"),
    (lambda d: d["tensors"]["x"].update(amax=[1.0]), "amax must be a finite positive number"),
    (lambda d: d["tensors"]["x"].update(nan=-1), "nan must be a count"),
    (lambda d: d.update(method="kl"), "unknown method 'kl'"),
    (lambda d: d["model"].update(sha256="Z" * 64), "'model.sha256' must be a sha256 hex string"),
    (lambda d: d["model"].update(sha256="0" * 64), "was made for a different model"),
    (lambda d: d["model"].update(inputs="x"), "'model.inputs' must be a list of objects"),
    (lambda d: d.update(shard=3), "'shard' must be a string"),
    (lambda d: d["histograms"].update(file="/etc/passwd"), "'histograms.file' must be a file name"),
    (lambda d: d["histograms"].update(sha256=7), "'histograms.sha256' must be a sha256"),
    (lambda d: d.update(tensors={"x": 1.5}), "tensor 'x' must be an object"),
])
def test_corrupt_json_is_one_error_line(calibrated, qtool, change, message):
    calib = calibrated / "net.calib.json"
    rewrite_json(calib, change)
    code, _, err = qtool("quantize", calibrated / "net.onnx", "--calib", calib,
                         "-o", calibrated / "q.onnx")
    assert code == 1 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (calibrated / "q.onnx").exists()


def _rewrite_npz(calibrated, change, fix_sha=True):
    """Rewrite the histogram archive member by member; keep the JSON's sha256 in step."""
    npz = calibrated / "net.calib.npz"
    with np.load(npz) as archive:
        arrays = {key: archive[key] for key in archive.files}
    change(arrays)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key, value in arrays.items():
            with archive.open(key + ".npy", "w") as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=True)
    npz.write_bytes(buffer.getvalue())
    if fix_sha:
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()
        rewrite_json(calibrated / "net.calib.json",
                     lambda d: d["histograms"].update(sha256=digest))


class Trap:
    """Unpickling this object would create a file: proof that nothing was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _object_array(path):
    array = np.empty(1, dtype=object)
    array[0] = Trap(str(path))
    return array


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("t0/counts"), "histogram data lacks counts"),
    (lambda a: a.update({"t0/counts": a["t0/counts"].astype(np.float64)}),
     "counts must be a 1-D array of non-negative integers"),
    (lambda a: a["t0/counts"].__setitem__(0, -5), "counts must be a 1-D array of non-negative"),
    (lambda a: a.update({"t0/counts": a["t0/counts"][:-3]}), "bins where its range implies"),
    (lambda a: a.update({"t0/bins": np.array([2048, 2048])}), "field 'bins' must be a scalar"),
    (lambda a: a.update({"t0/abs_max": np.float64(-1.0)}), "invalid abs_max"),
    (lambda a: a.update({"t0/bin_width": np.float64(0.0)}), "bin width must be positive"),
    (lambda a: a.update({"t0/bins": np.int64(10**12), "t0/max_bins": np.int64(10**12)}),
     "sizes are out of range (bins 1000000000000"),  # would allocate 8 TB
    (lambda a: a.update({"t0/shift": np.int64(1100)}), "x 2**1100 is not finite"),
    (lambda a: a.update({"t0/max_bins": np.int64(5)}), "max_bins must be an integer >= bins"),
    (lambda a: [a.pop(k) for k in list(a) if k.startswith("t1/")], "has no entry for tensor"),
])
def test_corrupt_histograms_are_one_error_line(calibrated, qtool, change, message):
    _rewrite_npz(calibrated, change)
    code, _, err = qtool("merge-calib", calibrated / "net.calib.json",
                         calibrated / "net.calib.json", "-o", calibrated / "m.json")
    assert code == 1 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (calibrated / "m.json").exists() and not (calibrated / "m.npz").exists()


def test_edited_histograms_fail_their_checksum(calibrated, qtool):
    _rewrite_npz(calibrated, lambda a: a["t0/counts"].__setitem__(0, 1), fix_sha=False)
    code, _, err = qtool("merge-calib", calibrated / "net.calib.json",
                         calibrated / "net.calib.json", "-o", calibrated / "m.json")
    assert code == 1 and "does not match its calibration file (sha256 differs)" in err


def test_pickled_histograms_are_never_unpickled(calibrated, qtool):
    marker = calibrated / "unpickled"
    _rewrite_npz(calibrated, lambda a: a.update({"t0/counts": _object_array(marker)}))
    code, _, err = qtool("merge-calib", calibrated / "net.calib.json",
                         calibrated / "net.calib.json", "-o", calibrated / "m.json")
    assert code == 1 and "holds Python objects" in err and "never pickled" in err
    assert err.count("\n") == 1 and not marker.exists()


@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_pickled_data_is_never_unpickled(tmp_path, qtool, kind):
    model = save(conv_relu_gemm(), tmp_path / "net.onnx")
    marker = tmp_path / "unpickled"
    array = _object_array(marker)
    if kind == "npy":
        np.save(tmp_path / "x.npy", array, allow_pickle=True)
    else:
        np.savez(tmp_path / "x.npz", x=array)
    code, _, err = qtool("calibrate", model, "--data", tmp_path / f"x.{kind}",
                         "-o", tmp_path / "c.json")
    assert code == 1 and "holds Python objects" in err and err.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "c.json").exists()


def test_pickled_labels_are_never_unpickled(calibrated, qtool):
    marker = calibrated / "unpickled"
    np.save(calibrated / "labels.npy", _object_array(marker), allow_pickle=True)
    code, _, err = qtool("compare", calibrated / "net.onnx", calibrated / "net.onnx",
                         "--data", calibrated / "x.npy", "--labels", calibrated / "labels.npy")
    assert code == 1 and "labels.npy" in err and err.count("\n") == 1
    assert not marker.exists()
