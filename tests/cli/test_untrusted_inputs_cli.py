"""Hostile inputs through the commands: data files that would block, caps from the config,
malformed calibrations and models that used to end in a traceback. Each is one `error:` line
now (tests/unit/io/test_untrusted_inputs.py calls the readers directly)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool import limits
from tests.tiny_models import conv_relu_gemm, save

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def default_limits():
    limits.configure(None)
    yield
    limits.configure(None)


def one_line(result, *words):
    assert result.code == 1, result
    assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    for word in words:
        assert word in result.err, result.err


@pytest.mark.parametrize("given", ["folder", "file"])
@pytest.mark.parametrize("name", ["0.npy", "0.npz", "b.jpg"])
def test_a_fifo_in_the_data_never_hangs_the_command(tmp_path, name, given):
    """The real command in its own process, with a timeout (a regression would block for ever on
    the FIFO): it ends with one line, before the FIFO is opened."""
    save(conv_relu_gemm(), tmp_path / "net.onnx")
    (tmp_path / "data").mkdir()
    if not name.endswith(".jpg"):
        np.save(tmp_path / "data" / "a.npy", np.ones((1, 2, 6, 6), np.float32))
    os.mkfifo(tmp_path / "data" / name)
    data = tmp_path / "data" if given == "folder" else tmp_path / "data" / name
    done = subprocess.run([sys.executable, "-m", "qtool", "calibrate", str(tmp_path / "net.onnx"),
                           "--data", str(data), "-o", str(tmp_path / "c.json")],
                          capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert done.returncode == 1 and "is a FIFO, not a regular file" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1


def test_the_data_cap_is_raised_from_the_config(tmp_path, qtool):
    save(conv_relu_gemm(), tmp_path / "net.onnx")
    np.save(tmp_path / "x.npy", np.ones((64, 2, 6, 6), np.float32))
    (tmp_path / "small.toml").write_text("[limits]\ndata_file_bytes = 1000\n")
    (tmp_path / "large.toml").write_text('[limits]\ndata_file_bytes = "1 GiB"\n')
    one_line(qtool("calibrate", tmp_path / "net.onnx", "--data", tmp_path / "x.npy", "--config",
                   tmp_path / "small.toml"), "[limits] data_file_bytes")
    assert qtool("calibrate", tmp_path / "net.onnx", "--data", tmp_path / "x.npy", "--config",
                 tmp_path / "large.toml", "-q").code == 0
    (tmp_path / "bad.toml").write_text("[limits]\nbytes = 1\n")
    result = qtool("calibrate", tmp_path / "net.onnx", "--data", tmp_path / "x.npy", "--config",
                   tmp_path / "bad.toml")
    assert result.code == 2 and "unknown key 'bytes' in [limits]" in result.err


def _memory_cap():  # a regression must fail, not take the machine's memory
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def test_bins_have_a_cap(tmp_path):
    save(conv_relu_gemm(), tmp_path / "net.onnx")
    np.save(tmp_path / "x.npy", np.ones((2, 2, 6, 6), np.float32))
    done = subprocess.run([sys.executable, "-m", "qtool", "calibrate", str(tmp_path / "net.onnx"),
                           "--data", str(tmp_path / "x.npy"), "--bins", "1000000000"],
                          capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
                          preexec_fn=_memory_cap)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("error: --bins 1000000000 is above the cap of 65536 (each tensor's "
                           "histogram may grow to 64 times --bins); raise [limits] bins in the "
                           "--config file if this is intended\n")
    assert not (tmp_path / "net.calib.json").exists()


def test_deep_nesting_is_one_line(tmp_path, qtool):
    save(conv_relu_gemm(), tmp_path / "net.onnx")
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    one_line(qtool("quantize", tmp_path / "net.onnx", "--calib", tmp_path / "deep.json"),
             "nested too deeply")
    (tmp_path / "deep.toml").write_text("a = " + "[" * 100000 + "]" * 100000 + "\n")
    one_line(qtool("calibrate", tmp_path / "net.onnx", "--data", tmp_path / "x.npy", "--config",
                   tmp_path / "deep.toml"), "nested too deeply")
    pytest.importorskip("matplotlib")
    (tmp_path / "deep_compare.json").write_text("{\"a\": " * 100000 + "1" + "}" * 100000)
    one_line(qtool("report", tmp_path / "deep.json", "-o", tmp_path / "r.html"))


def test_an_amax_too_large_for_a_float_is_one_line(tmp_path, qtool):
    import json

    save(conv_relu_gemm(), tmp_path / "net.onnx")
    np.save(tmp_path / "x.npy", np.ones((2, 2, 6, 6), np.float32))
    assert qtool("calibrate", tmp_path / "net.onnx", "--data", tmp_path / "x.npy", "--method",
                 "max", "-q").code == 0
    data = json.loads((tmp_path / "net.calib.json").read_text())
    next(iter(data["tensors"].values()))["amax"] = 123456789
    text = json.dumps(data).replace("123456789", "1" + "0" * 400)  # an integer, 10**400
    (tmp_path / "huge.calib.json").write_text(text)
    one_line(qtool("quantize", tmp_path / "net.onnx", "--calib", tmp_path / "huge.calib.json"),
             "amax must be a finite positive number")


def test_a_model_input_with_a_zero_batch_is_one_line(tmp_path, qtool):
    save(conv_relu_gemm(batch=0), tmp_path / "zero.onnx")
    np.save(tmp_path / "x.npy", np.ones((4, 2, 6, 6), np.float32))
    np.save(tmp_path / "z.npy", np.zeros((0, 2, 6, 6), np.float32))
    for data in ("x.npy", "z.npy"):
        one_line(qtool("calibrate", tmp_path / "zero.onnx", "--data", tmp_path / data),
                 "a batch axis fixed at 0 takes no samples")


def test_bias_correction_skips_a_conv_with_no_output_channels(tmp_path, qtool):
    weight = numpy_helper.from_array(np.zeros((0, 2, 3, 3), np.float32), "w")
    bias = numpy_helper.from_array(np.zeros((0,), np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 0, 4, 4])], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, tmp_path / "empty.onnx")
    np.save(tmp_path / "x.npy", np.ones((2, 2, 6, 6), np.float32))
    assert qtool("calibrate", tmp_path / "empty.onnx", "--data", tmp_path / "x.npy", "-q").code == 0
    result = qtool("quantize", tmp_path / "empty.onnx", "--calib", tmp_path / "empty.calib.json")
    assert result.code == 0, result.err
    assert "not corrected 1: unsupported_weight 1" in result.out


def test_merging_shards_whose_counts_would_overflow_says_so(tmp_path, qtool):
    import hashlib
    import json

    save(conv_relu_gemm(), tmp_path / "net.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(4, 2, 6, 6)).astype(np.float32))
    for k in (0, 1):
        assert qtool("calibrate", tmp_path / "net.onnx", "--data", tmp_path / "x.npy", "--method",
                     "entropy", "--batch-size", "1", "--shard", f"{k}/2", "-o",
                     tmp_path / f"s{k}.json", "-q").code == 0
        npz = tmp_path / f"s{k}.npz"
        with np.load(npz) as archive:
            arrays = {name: archive[name] for name in archive.files}
        for name, value in arrays.items():
            if name.endswith("/counts"):
                arrays[name] = np.where(value > 0, 1 << 61, 0).astype(np.int64)
        np.savez_compressed(npz, **arrays)
        record = json.loads((tmp_path / f"s{k}.json").read_text())
        record["histograms"]["sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
        (tmp_path / f"s{k}.json").write_text(json.dumps(record))
    one_line(qtool("merge-calib", tmp_path / "s0.json", tmp_path / "s1.json", "-o",
                   tmp_path / "m.json"), "counts add up to more than 2**53 values")
    assert not (tmp_path / "m.json").exists()
