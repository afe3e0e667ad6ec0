import json

import pytest

from qtool.calib.calibfile import (
    Calibration,
    TensorCalibration,
    check_model_match,
    read_calibration,
    to_dict,
    write_calibration,
)
from qtool.errors import QtoolError

SHA = "a" * 64


def _calibration():
    return Calibration(model_sha256=SHA, method="entropy",
                       tensors={"x": TensorCalibration(amax=2.5, abs_max=3.0, count=10),
                                "y/z:0": TensorCalibration(amax=1e-7, abs_max=0.0, count=4)},
                       params={}, bins=2048, num_samples=3, num_batches=1)


def test_round_trip_without_histograms(tmp_path):
    path = tmp_path / "m.calib.json"
    write_calibration(_calibration(), path)
    calib = read_calibration(path)
    assert calib.amax == {"x": 2.5, "y/z:0": 1e-7}
    assert calib.model_sha256 == SHA and calib.method == "entropy"
    assert calib.tensors["x"].abs_max == 3.0 and calib.num_samples == 3


def _write(tmp_path, mutate):
    data = to_dict(_calibration())
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(format="other"), "format"),
    (lambda d: d.update(version=99), "version"),
    (lambda d: d.update(method="magic"), "unknown method"),
    (lambda d: d["model"].update(sha256="abc"), "sha256"),
    (lambda d: d["tensors"]["x"].update(amax=0), "amax"),
    (lambda d: d["tensors"]["x"].update(amax=-1.0), "amax"),
    (lambda d: d["tensors"]["x"].update(amax="big"), "amax"),
    (lambda d: d["tensors"]["x"].update(count=True), "count"),
    (lambda d: d.update(tensors=[]), "tensors"),
    (lambda d: d.update(histograms={"file": "../elsewhere.npz"}), "histograms.file"),
])
def test_invalid_files_are_one_clear_error(tmp_path, mutate, message):
    with pytest.raises(QtoolError, match=message):
        read_calibration(_write(tmp_path, mutate))


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '{"tensors": {"x": {"amax": NaN}}}'])
def test_garbage_is_refused(tmp_path, text):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(QtoolError, match="not a valid calibration file"):
        read_calibration(path)


def test_other_model_is_refused():
    with pytest.raises(QtoolError, match="different model"):
        check_model_match(_calibration(), "b" * 64)
