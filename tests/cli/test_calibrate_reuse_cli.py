"""`qtool calibrate --reuse`: an output calibration made from the same model, data and options
is kept as it is; a changed option or changed data calibrates again."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from qtool.calib.calibfile import read_calibration
from tests.tiny_models import conv_relu_gemm, save


@pytest.fixture
def model(tmp_path):
    return save(conv_relu_gemm(), tmp_path / "net.onnx")


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "data"
    folder.mkdir()
    for index in range(3):
        np.save(folder / f"b{index}.npy", rng.normal(size=(4, 2, 6, 6)).astype(np.float32))
    return folder


def calibrate(qtool, model, data, out, *flags):
    return qtool("calibrate", model, "--data", data, "--method", "max", "-o", out, "--reuse",
                 *flags)


def stamp(path):
    """Content and modification time of a file and its histograms."""
    npz = path.with_suffix(".npz")
    return [(p.read_bytes(), os.stat(p).st_mtime_ns) for p in (path, npz)]


def test_an_unchanged_calibration_is_reused_and_left_untouched(qtool, model, data, tmp_path):
    out = tmp_path / "net.calib.json"
    first = calibrate(qtool, model, data, out)
    assert first.code == 0, first.err
    assert first.out.startswith("calibrated 3 tensors on 12 samples")
    key = read_calibration(out).config["cache_key"]
    before = stamp(out)
    again = calibrate(qtool, model, data, out)
    assert again.code == 0, again.err
    assert again.out == f"reused {out}: model, data and options unchanged (cache key {key[:12]})\n"
    assert stamp(out) == before
    printed = json.loads(calibrate(qtool, model, data, out, "--json").out)
    assert printed["reused"] is True and printed["cache_key"] == key
    assert stamp(out) == before


def test_a_changed_option_calibrates_again(qtool, model, data, tmp_path):
    out = tmp_path / "net.calib.json"
    assert calibrate(qtool, model, data, out).code == 0
    key = read_calibration(out).config["cache_key"]
    result = calibrate(qtool, model, data, out, "--bins", "1024")
    assert result.code == 0, result.err
    assert result.out.startswith("calibrated 3 tensors on 12 samples")
    calibration = read_calibration(out)
    assert calibration.bins == 1024 and calibration.config["cache_key"] != key


def test_changed_data_calibrates_again(qtool, model, data, tmp_path):
    out = tmp_path / "net.calib.json"
    assert calibrate(qtool, model, data, out).code == 0
    before = read_calibration(out)
    np.save(data / "b0.npy", 10 * np.load(data / "b0.npy"))
    result = calibrate(qtool, model, data, out)
    assert result.code == 0, result.err
    assert result.out.startswith("calibrated 3 tensors on 12 samples")
    after = read_calibration(out)
    assert after.config["cache_key"] != before.config["cache_key"]
    assert after.amax["x"] > before.amax["x"]


def test_a_threshold_option_alone_reuses_the_histograms(qtool, model, data, tmp_path):
    out = tmp_path / "net.calib.json"
    assert calibrate(qtool, model, data, out).code == 0
    result = qtool("calibrate", model, "--data", data, "--method", "percentile", "-o", out,
                   "--reuse")
    assert result.code == 0, result.err
    assert result.out.startswith("picked thresholds again (histograms reused, no inference) "
                                 "for 3 tensors on 12 samples")
    fresh = tmp_path / "fresh.calib.json"
    assert qtool("calibrate", model, "--data", data, "--method", "percentile", "-o",
                 fresh).code == 0
    assert read_calibration(out).amax == read_calibration(fresh).amax
    assert read_calibration(out).method == "percentile"


def test_without_reuse_the_file_records_no_keys(qtool, model, data, tmp_path):
    out = tmp_path / "net.calib.json"
    assert qtool("calibrate", model, "--data", data, "--method", "max", "-o", out).code == 0
    assert "cache_key" not in read_calibration(out).config
    # a calibration made without --reuse cannot be matched: --reuse calibrates again
    result = calibrate(qtool, model, data, out)
    assert result.code == 0 and result.out.startswith("calibrated")
    assert "cache_key" in read_calibration(out).config


def test_a_shard_is_never_reused_for_the_whole(qtool, model, data, tmp_path):
    out = tmp_path / "net.calib.json"
    assert calibrate(qtool, model, data, out, "--shard", "0/2").code == 0
    result = calibrate(qtool, model, data, out)
    assert result.code == 0 and result.out.startswith("calibrated 3 tensors on 12 samples")


def test_reuse_from_a_config_table(qtool, model, data, tmp_path):
    out = tmp_path / "net.calib.json"
    config = tmp_path / "c.toml"
    config.write_text(f'[calibrate]\ndata = "data"\nmethod = "max"\nreuse = true\n'
                      f'output = "{out.name}"\n')
    assert qtool("calibrate", model, "--config", config).code == 0
    result = qtool("calibrate", model, "--config", config)
    assert result.code == 0 and result.out.startswith(f"reused {out}")


def test_a_reuse_run_that_calibrates_hashes_the_model_once(qtool, model, data, tmp_path,
                                                           monkeypatch):
    """The cache key and the calibration file record one sha256 of the model, computed once:
    a large model's weights are read for it once, not twice."""
    from qtool.io import model as model_io

    hashed = []
    real = model_io.sha256_file

    def counted(path, *args, **kwargs):
        hashed.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(model_io, "sha256_file", counted)
    out = tmp_path / "net.calib.json"
    assert calibrate(qtool, model, data, out).code == 0
    assert hashed == [Path(model).name]
    assert read_calibration(out).model_sha256 == real(model)
