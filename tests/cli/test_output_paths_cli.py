"""The output guard through the commands: no output destroys an input of the run, outputs that
are not regular files are refused, missing folders are made, modes follow the umask, names too
long are refused, and a command that fails writes nothing."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest

from qtool.errors import QtoolError
from qtool.io.outputs import guard_outputs
from tests.helpers.models import conv_net_with_data
from tests.tiny_models import conv_relu_gemm, save


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def work(tmp_path):
    return conv_net_with_data(tmp_path)


def calibrate(qtool, work: Path, *extra):
    result = qtool("calibrate", work / "net.onnx", "--data", work / "x.npy", "--method", "max",
                   "-q", *extra)
    assert result.code == 0, result.err
    return result


def refused(result, *words) -> None:
    assert result.code == 1, result
    assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    for word in words:
        assert word in result.err, result.err


def test_calibrate_never_overwrites_the_models_external_data(work, qtool):
    onnx.save_model(conv_relu_gemm(), str(work / "ext.onnx"), save_as_external_data=True,
                    location="ext.bin", size_threshold=0)
    before = digest(work)
    result = qtool("calibrate", work / "ext.onnx", "--data", work / "x.npy", "-o", work / "ext.bin")
    refused(result, "would overwrite the external data of the input")
    assert digest(work) == before


def test_quantize_never_overwrites_the_calibrations_histograms(work, qtool):
    calibrate(qtool, work, "--method", "entropy")
    before = digest(work)
    result = qtool("quantize", work / "net.onnx", "--calib", work / "net.calib.json",
                   "-o", work / "net.calib.npz")
    refused(result, "would overwrite the input", "net.calib.npz")
    assert digest(work) == before


def test_outputs_never_overwrite_configs_or_scripts(work, qtool):
    (work / "c.toml").write_text("[calibrate]\nmethod = \"max\"\n")
    (work / "load.py").write_text("import numpy as np\ndef load_data():\n"
                                  "    return [{'x': np.ones((1, 2, 6, 6), np.float32)}]\n")
    before = digest(work)
    refused(qtool("calibrate", work / "net.onnx", "--data", work / "x.npy", "--config",
                  work / "c.toml", "-o", work / "c.toml"), "c.toml")
    refused(qtool("calibrate", work / "net.onnx", "--data-loader-script", work / "load.py",
                  "-o", work / "load.py"), "load.py")
    assert digest(work) == before


@pytest.mark.parametrize("command", [
    "calibrate {w}/net.onnx --data {w}/x.npy",
    "quantize {w}/net.onnx --calib {w}/net.calib.json",
    "compare {w}/net.onnx {w}/net.onnx --data {w}/x.npy",
    "sensitivity {w}/net.onnx --calib {w}/net.calib.json --data {w}/x.npy",
    "build {w}/net.onnx",
    "run {w}/net.engine --data {w}/x.npy",
    "report {w}/net.calib.json",
])
def test_no_command_writes_over_its_config(work, qtool, command):
    calibrate(qtool, work)
    (work / "net.engine").write_bytes(b"engine")
    (work / "c.toml").write_text("")
    before = digest(work)
    result = qtool(*command.format(w=work).split(), "--config", work / "c.toml",
                   "-o", work / "c.toml")
    refused(result, "would overwrite the input", "c.toml")
    assert digest(work) == before


def test_outputs_that_are_not_regular_files_are_refused(work, qtool):
    os.mkfifo(work / "fifo.json")
    result = qtool("calibrate", work / "net.onnx", "--data", work / "x.npy", "-o", work / "fifo.json")
    refused(result, "is a FIFO, not a regular file")
    assert stat.S_ISFIFO(os.stat(work / "fifo.json").st_mode)
    with pytest.raises(QtoolError, match="is a folder, not a regular file"):
        guard_outputs([work])
    if os.path.exists("/dev/null"):
        with pytest.raises(QtoolError, match="is a character device"):
            guard_outputs(["/dev/null"])


def test_two_outputs_of_one_run_may_not_be_one_file(work, qtool):
    result = qtool("calibrate", work / "net.onnx", "--data", work / "x.npy", "-o", work / "c.json",
                   "--trt-cache", work / "c.json")
    assert result.code == 2 and "are the same output file" in result.err
    assert not (work / "c.json").exists()


def test_missing_output_folders_are_created_and_a_file_in_the_way_is_refused(work, qtool):
    calibrate(qtool, work, "-o", work / "new" / "deeper" / "c.json")
    assert (work / "new" / "deeper" / "c.json").is_file()
    result = qtool("calibrate", work / "net.onnx", "--data", work / "x.npy",
                   "-o", work / "x.npy" / "c.json")
    refused(result, "is not a folder")


def test_names_too_long_are_refused_before_any_work_and_long_ones_fit(work, qtool):
    long_name = "c" * 230 + ".calib.json"  # 241 bytes: fits, its temporary file too
    calibrate(qtool, work, "-o", work / long_name)
    assert (work / long_name).is_file()
    result = qtool("calibrate", work / "net.onnx", "--data", work / "x.npy",
                   "-o", work / ("c" * 300 + ".json"))
    refused(result, "is longer than")


def test_outputs_get_the_umask_mode_and_keep_an_existing_files_mode(work, qtool):
    old = os.umask(0o002)
    try:
        calibrate(qtool, work, "--method", "entropy", "--trt-cache", work / "c.cache")
        assert qtool("quantize", work / "net.onnx", "--calib", work / "net.calib.json", "-q").code == 0
        written = ["net.calib.json", "net.calib.npz", "c.cache", "net.int8.onnx"]
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            pass
        else:
            assert qtool("report", work / "net.calib.json", "-o", work / "r.html", "-q").code == 0
            written.append("r.html")
        for name in written:
            assert stat.S_IMODE(os.stat(work / name).st_mode) == 0o664, name
        os.chmod(work / "net.calib.json", 0o640)
        calibrate(qtool, work, "--method", "entropy")
        assert stat.S_IMODE(os.stat(work / "net.calib.json").st_mode) == 0o640
        assert stat.S_IMODE(os.stat(work / "net.calib.npz").st_mode) == 0o664
    finally:
        os.umask(old)


def test_a_bad_trt_version_is_a_usage_error_before_anything_is_written(work, qtool):
    before = digest(work)
    result = qtool("calibrate", work / "net.onnx", "--data", work / "x.npy",
                   "--trt-cache", work / "c.cache", "--trt-version", "x")
    assert result.code == 2 and result.err.startswith("error: --trt-version")
    assert digest(work) == before


def test_a_name_the_cache_cannot_hold_fails_before_anything_is_written(work, qtool):
    model = conv_relu_gemm()
    for node in model.graph.node:
        node.input[:] = ["in\nput" if name == "x" else name for name in node.input]
    model.graph.input[0].name = "in\nput"
    save(model, work / "nl.onnx")
    np.savez(work / "nl.npz", **{"in\nput": np.ones((2, 2, 6, 6), np.float32)})
    before = digest(work)
    result = qtool("calibrate", work / "nl.onnx", "--data", work / "nl.npz", "--method", "max",
                   "--trt-cache", work / "nl.cache")
    refused(result, "cannot be stored in a TensorRT cache")
    assert digest(work) == before


def test_sensitivitys_default_exclude_file_goes_to_the_current_folder(work, qtool, monkeypatch,
                                                                     tmp_path_factory):
    calibrate(qtool, work)
    here = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(here)
    before = digest(work)
    result = qtool("sensitivity", work / "net.onnx", "--calib", work / "net.calib.json", "--data",
                   work / "x.npy", "--target-sqnr", "-1000", "-q")
    assert result.code == 0, result.err
    assert (here / "net.exclude.txt").is_file()
    assert digest(work) == before


def test_default_outputs_go_to_the_current_folder_when_the_models_is_not_yours(
        work, qtool, monkeypatch, tmp_path_factory):
    here = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(here)
    calibrate(qtool, work)  # the user's own folder: beside the model
    assert (work / "net.calib.json").is_file()
    monkeypatch.setattr(os, "getuid", lambda: os.stat(work).st_uid + 1)  # someone else's folder
    before = digest(work)
    calibrate(qtool, work, "--method", "entropy")
    result = qtool("quantize", work / "net.onnx", "--calib", here / "net.calib.json", "-q")
    assert result.code == 0, result.err
    assert digest(work) == before
    assert {"net.calib.json", "net.calib.npz", "net.int8.onnx"} <= {p.name for p in here.iterdir()}


def test_pipeline_refuses_an_output_folder_inside_its_data(work, qtool):
    (work / "data").mkdir()
    np.save(work / "data" / "a.npy", np.ones((2, 2, 6, 6), np.float32))
    (work / "p.toml").write_text('[pipeline]\nmodel = "net.onnx"\noutput_dir = "data"\n'
                                 '[calibrate]\ndata = "data"\n[compare]\ndata = "data"\n')
    before = digest(work)
    refused(qtool("pipeline", work / "p.toml", "-q"), "inside the input folder")
    assert digest(work) == before


def test_pipeline_refuses_an_output_folder_that_is_a_file(work, qtool):
    (work / "p.toml").write_text('[pipeline]\nmodel = "net.onnx"\noutput_dir = "x.npy"\n'
                                 '[calibrate]\ndata = "x.npy"\n[compare]\ndata = "x.npy"\n')
    refused(qtool("pipeline", work / "p.toml", "-q"), "is not a folder")
