import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from qtool.calib.calibfile import from_dict, read_calibration
from qtool.calib.signature import seen_ranges
from tests.tiny_models import conv_relu_gemm, relu6_conv, relu6_then, save, two_input_matmul


@pytest.fixture
def conv_model(tmp_path):
    return save(conv_relu_gemm(), tmp_path / "net.onnx")


@pytest.fixture
def npy_dir(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "data"
    folder.mkdir()
    for index, batch in enumerate((4, 2, 3)):  # dynamic batch: sizes differ per file
        np.save(folder / f"b{index}.npy", rng.normal(size=(batch, 2, 6, 6)).astype(np.float32) * (index + 1))
    return folder


def test_calibrate_writes_json_and_histograms(qtool, conv_model, npy_dir, tmp_path):
    result = qtool("calibrate", conv_model, "--data", npy_dir, "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["samples"] == 9 and summary["batches"] == 3
    calib = read_calibration(tmp_path / "net.calib.json")
    assert set(calib.amax) == {"x", "relu", "flat"}
    assert all(value > 0 for value in calib.amax.values())
    assert calib.method == "auto" and calib.num_samples == 9
    histograms = calib.load_histograms()
    data = np.concatenate([np.load(npy_dir / f"b{i}.npy") for i in range(3)])
    assert histograms["x"].abs_max == pytest.approx(float(np.abs(data).max()))
    assert histograms["x"].count == data.size


def test_max_method_gives_exact_abs_max(qtool, conv_model, npy_dir, tmp_path):
    out = tmp_path / "max.json"
    assert qtool("calibrate", conv_model, "--data", npy_dir, "--method", "max", "-o", out).code == 0
    data = np.concatenate([np.load(npy_dir / f"b{i}.npy") for i in range(3)])
    assert read_calibration(out).amax["x"] == float(np.abs(data).max())


def test_multi_input_npz(qtool, tmp_path):
    model = save(two_input_matmul(), tmp_path / "mm.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "feeds.npz", a=rng.normal(size=(3, 4, 8)).astype(np.float32),
             b=rng.normal(size=(3, 8, 5)).astype(np.float32), c=rng.normal(size=(3, 4, 5)).astype(np.float32))
    result = qtool("calibrate", model, "--data", tmp_path / "feeds.npz", "-o", tmp_path / "mm.json")
    assert result.code == 0, result.err
    # both activation inputs of the attention-style MatMul and the projection's input; the Add
    # fuses into nothing (no conv), so its inputs are not quantized and not observed
    assert set(read_calibration(tmp_path / "mm.json").amax) == {"a", "b", "sum"}


def test_shards_merge_to_exactly_one_run(qtool, conv_model, npy_dir, tmp_path):
    assert qtool("calibrate", conv_model, "--data", npy_dir, "--method", "entropy",
                 "-o", tmp_path / "all.json").code == 0
    for k in range(2):
        result = qtool("calibrate", conv_model, "--data", npy_dir, "--method", "entropy",
                       "--shard", f"{k}/2", "-o", tmp_path / f"s{k}.json")
        assert result.code == 0, result.err
    result = qtool("merge-calib", tmp_path / "s0.json", tmp_path / "s1.json", "-o", tmp_path / "merged.json")
    assert result.code == 0, result.err
    whole, merged = read_calibration(tmp_path / "all.json"), read_calibration(tmp_path / "merged.json")
    assert merged.amax == whole.amax
    assert merged.num_samples == whole.num_samples == 9
    for name, hist in whole.load_histograms().items():
        other = merged.load_histograms()[name]
        np.testing.assert_array_equal(hist.hist, other.hist)
        np.testing.assert_array_equal(hist.edges, other.edges)


def test_trt_cache_round_trip(qtool, conv_model, npy_dir, tmp_path):
    cache = tmp_path / "net.cache"
    assert qtool("calibrate", conv_model, "--data", npy_dir, "--trt-cache", cache).code == 0
    assert cache.read_text().startswith("TRT-100300-EntropyCalibration2\n")
    result = qtool("calibrate", conv_model, "--from-trt-cache", cache, "-o", tmp_path / "imported.json")
    assert result.code == 0, result.err
    imported = read_calibration(tmp_path / "imported.json")
    assert imported.method == "trt-cache"
    again = tmp_path / "again.cache"
    from qtool.calib.trtcache import write_cache
    write_cache(again, imported.amax)
    assert again.read_bytes() == cache.read_bytes()


def test_all_zero_activation_gets_tiny_positive_amax(qtool, tmp_path):
    model = conv_relu_gemm()
    for init in model.graph.initializer:  # zero weights and bias: relu output is all zeros
        if init.name in ("w", "b"):
            init.CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(onnx.numpy_helper.to_array(init)), init.name))
    path = save(model, tmp_path / "zero.onnx")
    np.save(tmp_path / "x.npy", np.ones((2, 2, 6, 6), np.float32))
    for method in ("entropy", "max", "percentile", "mse", "coverage"):
        out = tmp_path / f"{method}.json"
        result = qtool("calibrate", path, "--data", tmp_path / "x.npy", "--method", method, "-o", out)
        assert result.code == 0, result.err
        amax = read_calibration(out).amax["relu"]
        assert 0 < amax < 1e-3 and np.isfinite(amax)


def test_nan_activations_warn_and_stay_finite(qtool, conv_model, tmp_path):
    data = np.random.default_rng(0).normal(size=(2, 2, 6, 6)).astype(np.float32)
    data[0, 0, 0, 0] = np.nan
    data[1, 1, 1, 1] = np.inf
    np.save(tmp_path / "nan.npy", data)
    result = qtool("calibrate", conv_model, "--data", tmp_path / "nan.npy", "-o", tmp_path / "c.json")
    assert result.code == 0, result.err
    assert "NaN" in result.err
    calib = read_calibration(tmp_path / "c.json")
    assert calib.tensors["x"].nan == 1 and calib.tensors["x"].inf == 1
    assert all(np.isfinite(v) and v > 0 for v in calib.amax.values())


def _no_outputs(tmp_path):
    return not list(tmp_path.glob("*.calib.*")) and not list(tmp_path.glob("out.*"))


@pytest.mark.parametrize("case", ["missing_model", "corrupt_model", "empty_dir", "not_array",
                                  "wrong_name", "wrong_rank", "wrong_dtype"])
def test_bad_input_is_one_line_exit_1_and_no_output(qtool, conv_model, tmp_path, case):
    model, data = conv_model, tmp_path / "d.npy"
    np.save(data, np.zeros((1, 2, 6, 6), np.float32))
    if case == "missing_model":
        model = tmp_path / "nope.onnx"
    elif case == "corrupt_model":
        model = tmp_path / "corrupt.onnx"
        model.write_bytes(b"\x00garbage\xff" * 10)
    elif case == "empty_dir":
        data = tmp_path / "empty"
        data.mkdir()
    elif case == "not_array":
        data = tmp_path / "text.npy"
        data.write_text("hello")
    elif case == "wrong_name":
        data = tmp_path / "d.npz"
        np.savez(data, y=np.zeros((1, 2, 6, 6), np.float32))
    elif case == "wrong_rank":
        np.save(data, np.zeros((1, 1, 2, 6, 6), np.float32))
    elif case == "wrong_dtype":
        np.save(data, np.zeros((1, 2, 6, 6), np.float64))
    result = qtool("calibrate", model, "--data", data, "-o", tmp_path / "out.json")
    assert result.code == 1
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "out.npz").exists()


def test_usage_errors_exit_2(qtool, conv_model, npy_dir):
    assert qtool("calibrate", conv_model, "--data", npy_dir, "--method", "magic").code == 2
    assert qtool("calibrate", conv_model).code == 2


def test_output_over_input_is_refused(qtool, conv_model, npy_dir):
    result = qtool("calibrate", conv_model, "--data", npy_dir, "-o", conv_model)
    assert result.code == 1 and "overwrite" in result.err


def test_config_file_supplies_defaults(qtool, conv_model, npy_dir, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[calibrate]\nmethod = "percentile"\npercentile = 99.9\n')
    out = tmp_path / "p.json"
    assert qtool("calibrate", conv_model, "--data", npy_dir, "--config", config, "-o", out).code == 0
    calib = read_calibration(out)
    assert calib.method == "percentile" and calib.params == {"percentile": 99.9}
    config.write_text('[calibrate]\nmethd = "max"\n')
    result = qtool("calibrate", conv_model, "--data", npy_dir, "--config", config, "-o", out)
    assert result.code == 2 and "methd" in result.err


def test_demo_model_end_to_end(qtool, tmp_path):
    from tests.conftest import REPO

    out = tmp_path / "demo.calib.json"
    result = qtool("calibrate", REPO / "demo" / "digits_cnn.onnx", "--data", REPO / "demo" / "data" / "calib.npz",
                   "--batch-size", "64", "-o", out, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["samples"] == 256
    calib = read_calibration(out)
    # every activation input of a weighted op, the residual Add and the pooling/concat inputs
    assert {"input", "stem.relu.out", "res.conv1.relu.out", "pool.out", "concat.out",
            "flatten.out", "fc_relu.out"} <= set(calib.amax)
    assert calib.amax["input"] == pytest.approx(1.0, abs=1e-3)  # pixels / 16 span [0, 1]


def _demo():
    from tests.conftest import REPO

    return onnx.load(str(REPO / "demo" / "digits_cnn.onnx"))


@pytest.mark.parametrize("build", [conv_relu_gemm, two_input_matmul, _demo])
def test_calibration_covers_everything_quantize_places(tmp_path, build):
    """Only the tensors the default placement quantizes are observed, and none is missing."""
    from qtool.calib.routes import tensors_to_calibrate
    from qtool.graph.observe import tensors_to_observe
    from qtool.quantize.api import quantize_model

    model = build()
    observed = tensors_to_calibrate(model)
    assert set(observed) <= set(tensors_to_observe(model))
    _, summary = quantize_model(model, dict.fromkeys(observed, 1.0))
    assert not [skip for skip in summary.skipped if skip.reason == "no_calibration"]
    _, everything = quantize_model(model, dict.fromkeys(tensors_to_observe(model), 1.0))
    assert summary.quantized == everything.quantized


def test_calibration_file_keeps_the_means_of_conv_inputs(qtool, tmp_path):
    model = tmp_path / "net.onnx"
    onnx.save_model(conv_relu_gemm(), str(model))
    rng = np.random.default_rng(3)
    data = [(rng.normal(size=(n, 2, 6, 6)) + [[[[0.5]], [[-2.0]]]]).astype(np.float32) for n in (3, 4)]
    folder = tmp_path / "data"
    folder.mkdir()
    for index, batch in enumerate(data):
        np.save(folder / f"b{index}.npy", batch)
    assert qtool("calibrate", model, "--data", folder, "-o", tmp_path / "c.json").code == 0
    means = read_calibration(tmp_path / "c.json").load_channel_means()
    assert set(means) == {"x", "flat"}
    axis, mean = means["x"]
    assert axis == 1
    np.testing.assert_allclose(mean, np.concatenate(data).astype(np.float64).mean(axis=(0, 2, 3)),
                               rtol=1e-6)
    # shards merged keep the same means
    for k in range(2):
        assert qtool("calibrate", model, "--data", folder, "--shard", f"{k}/2",
                     "-o", tmp_path / f"s{k}.json").code == 0
    assert qtool("merge-calib", tmp_path / "s0.json", tmp_path / "s1.json",
                 "-o", tmp_path / "m.json").code == 0
    merged = read_calibration(tmp_path / "m.json").load_channel_means()
    np.testing.assert_allclose(merged["x"][1], mean, rtol=1e-12)
    # without its .npz a calibration simply has no means
    (tmp_path / "c.npz").unlink()
    assert read_calibration(tmp_path / "c.json").load_channel_means() is None


def test_bounded_activation_outputs_keep_their_max_unless_turned_off(qtool, tmp_path):
    from qtool.thresholds import compute_amax

    rng = np.random.default_rng(0)
    model = relu6_conv(rng.normal(size=(3, 2, 1, 1)), 4)
    path = save(model, tmp_path / "clip.onnx")
    data = np.minimum(rng.exponential(0.3, size=(640, 2, 4, 4)), 6.0).astype(np.float32)
    data.reshape(-1)[:10] = 7.0  # saturates at 6 after the Clip
    np.save(tmp_path / "data.npy", data)
    assert qtool("calibrate", path, "--data", tmp_path / "data.npy", "--method", "entropy",
                 "-o", tmp_path / "on.json").code == 0
    result = qtool("calibrate", path, "--data", tmp_path / "data.npy", "--method", "entropy",
                   "--no-bounded-max",
                   "-o", tmp_path / "off.json")
    assert result.code == 0, result.err
    on, off = read_calibration(tmp_path / "on.json"), read_calibration(tmp_path / "off.json")
    assert on.tensors["clipped"].rule == "bounded" and on.amax["clipped"] == 6.0
    hist = off.load_histograms()["clipped"]
    assert off.tensors["clipped"].rule is None
    assert off.amax["clipped"] == compute_amax("entropy", hist.hist, hist.edges,
                                               abs_max=hist.abs_max) < 6.0
    assert json.loads((tmp_path / "on.json").read_text())["tensors"]["clipped"]["rule"] == "bounded"


def test_non_negative_bounded_tensors_are_pooled_not_histogrammed(qtool, tmp_path):
    """The max and channel means pooled inside onnxruntime equal those of the whole tensor."""
    rng = np.random.default_rng(1)
    model = relu6_conv(rng.normal(size=(2, 3, 1, 1)), 5)
    path = save(model, tmp_path / "clip.onnx")
    data = (rng.normal(size=(12, 3, 5, 5)) * 2 + [[[0.5]], [[1.0]], [[3.0]]]).astype(np.float32)
    folder = tmp_path / "data"
    folder.mkdir()
    for index in range(3):
        np.save(folder / f"b{index}.npy", data[index * 4:(index + 1) * 4])
    assert qtool("calibrate", path, "--data", folder, "-o", tmp_path / "pooled.json").code == 0
    assert qtool("calibrate", path, "--data", folder, "--no-bounded-max",
                 "-o", tmp_path / "whole.json").code == 0
    pooled, whole = read_calibration(tmp_path / "pooled.json"), read_calibration(tmp_path / "whole.json")
    expected = np.clip(data, 0, 6)
    entry = pooled.tensors["clipped"]
    assert entry.amax == entry.abs_max == float(expected.max()) and entry.count == 0
    assert "clipped" not in pooled.load_histograms()
    assert whole.tensors["clipped"].abs_max == entry.abs_max
    for calibration in (pooled, whole):
        axis, mean = calibration.load_channel_means()["clipped"]
        assert axis == 1
        np.testing.assert_allclose(mean, expected.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-6)
    # shards merge to the same max; the report shows the tensor without a histogram
    for k in range(2):
        assert qtool("calibrate", path, "--data", folder, "--shard", f"{k}/2",
                     "-o", tmp_path / f"s{k}.json").code == 0
    assert qtool("merge-calib", tmp_path / "s0.json", tmp_path / "s1.json",
                 "-o", tmp_path / "m.json").code == 0
    assert read_calibration(tmp_path / "m.json").amax == pooled.amax
    result = qtool("report", tmp_path / "pooled.json", "-o", tmp_path / "r.html")
    assert result.code == 0, result.err
    assert "max of a bounded activation" in (tmp_path / "r.html").read_text()


def test_a_tensor_calibrated_by_its_max_alone_reads_back_and_quantizes(qtool, tmp_path):
    """A ReLU6 output feeding only a pooling has no histogram and no means: no .npz entry."""
    rng = np.random.default_rng(2)
    tail = [helper.make_node("GlobalAveragePool", ["clipped"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "w"], ["y"], transB=1)]
    weight = numpy_helper.from_array(rng.normal(size=(2, 3)).astype(np.float32), "w")
    model = relu6_then(tail, 3, 4, ["N", 2], [weight])
    path = save(model, tmp_path / "pool.onnx")
    data = (rng.normal(size=(6, 3, 4, 4)) * 3).astype(np.float32)
    np.save(tmp_path / "data.npy", data)
    result = qtool("calibrate", path, "--data", tmp_path / "data.npy", "-o", tmp_path / "c.json")
    assert result.code == 0, result.err
    calibration = read_calibration(tmp_path / "c.json")
    entry = calibration.tensors["clipped"]
    assert entry.key is None and entry.count == 0 and entry.rule == "bounded"
    assert entry.amax == float(np.clip(data, 0, 6).max())
    result = qtool("quantize", path, "--calib", tmp_path / "c.json", "-o", tmp_path / "q.onnx")
    assert result.code == 0, result.err


def test_merging_shards_calibrated_with_other_options_is_an_error(qtool, tmp_path):
    model = relu6_conv(np.ones((2, 2, 1, 1)), 3)
    path = save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(size=(4, 2, 3, 3)).astype(np.float32))
    assert qtool("calibrate", path, "--data", tmp_path / "d.npy", "-o", tmp_path / "a.json").code == 0
    assert qtool("calibrate", path, "--data", tmp_path / "d.npy", "--no-bounded-max",
                 "-o", tmp_path / "b.json").code == 0
    result = qtool("merge-calib", tmp_path / "b.json", tmp_path / "a.json", "-o", tmp_path / "m.json")
    assert result.code == 1 and "other options" in result.err and not (tmp_path / "m.json").exists()


def test_a_calibration_of_max_only_tensors_has_no_npz_and_still_merges(qtool, tmp_path):
    model = relu6_then([helper.make_node("GlobalAveragePool", ["clipped"], ["y"])], 2, 3,
                       ["N", 2, 1, 1])
    path = save(model, tmp_path / "m.onnx")
    data = np.random.default_rng(0).normal(size=(6, 2, 3, 3)).astype(np.float32) * 3
    np.save(tmp_path / "d.npy", data)
    for k in range(2):
        result = qtool("calibrate", path, "--data", tmp_path / "d.npy", "--batch-size", "2",
                       "--shard", f"{k}/2", "-o", tmp_path / f"s{k}.json")
        assert result.code == 0, result.err
    assert not (tmp_path / "s0.npz").exists()
    result = qtool("merge-calib", tmp_path / "s0.json", tmp_path / "s1.json", "-o", tmp_path / "m.json")
    assert result.code == 0, result.err
    assert read_calibration(tmp_path / "m.json").amax["clipped"] == float(np.clip(data, 0, 6).max())


def test_method_auto_from_the_command_line(qtool, conv_model, npy_dir, tmp_path):
    out = tmp_path / "auto.json"
    result = qtool("calibrate", conv_model, "--data", npy_dir, "--method", "auto",
                   "--task", "classification", "--auto-budget", "3", "-o", out, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["method"] == "auto"
    calib = read_calibration(out)
    assert calib.config["task"] == "classification" and calib.config["auto_budget"] == 3.0
    assert calib.auto["budget"] == 27  # 3 x 9 samples
    assert all("agreement" in score for score in calib.auto["model_scores"].values())
    assert qtool("quantize", conv_model, "--calib", out, "-o", tmp_path / "q.onnx").code == 0
    text = qtool("calibrate", conv_model, "--data", npy_dir, "-o", out).out
    winner = read_calibration(out).auto["model_method"]
    assert f"method auto ({winner} won; output SQNR on 9 held-aside samples: mse " in text
    shard = qtool("calibrate", conv_model, "--data", npy_dir, "--shard", "0/2", "-o", out).out
    assert "method auto (mse for every tensor: a shard)" in shard


def test_auto_budget_must_be_positive(qtool, conv_model, npy_dir):
    result = qtool("calibrate", conv_model, "--data", npy_dir, "--method", "auto",
                   "--auto-budget", "0")
    assert result.code == 2
    assert result.err.strip().splitlines()[-1] == "error: --auto-budget must be positive, got 0.0"


def test_costly_thresholds_are_named_by_calibrate_and_quantize(qtool, conv_model, npy_dir, tmp_path):
    out = tmp_path / "p50.json"
    result = qtool("calibrate", conv_model, "--data", npy_dir, "--method", "percentile",
                   "--percentile", "50", "-o", out)
    assert result.code == 0, result.err
    warning = next(line for line in result.err.splitlines() if "quantize poorly" in line)
    assert "with method percentile" in warning and "x (" in warning
    assert "calibrate with --method auto" in warning
    result = qtool("quantize", conv_model, "--calib", out, "-o", tmp_path / "q.onnx")
    assert result.code == 0 and "quantize poorly" in result.err
    quiet = qtool("calibrate", conv_model, "--data", npy_dir, "--method", "max",
                  "-o", tmp_path / "max.json")
    assert "quantize poorly" not in quiet.err


def test_trt_cache_header_names_the_installed_tensorrt_or_says_which_it_names(
        qtool, conv_model, npy_dir, tmp_path, monkeypatch):
    import sys
    import types

    cache = tmp_path / "net.cache"
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = qtool("calibrate", conv_model, "--data", npy_dir, "--method", "max", "--trt-cache", cache)
    assert result.code == 0, result.err
    assert cache.read_text().splitlines()[0] == "TRT-100300-EntropyCalibration2"
    assert ("WARNING: the TensorRT cache header names TensorRT 10.3.0 (no TensorRT 10 is installed "
            "here); TensorRT refuses a cache made for another version, so give --trt-version with "
            "the version that will read it") in result.err
    trt = types.ModuleType("tensorrt")
    trt.__version__, trt.Builder, trt.Runtime = "10.16.1.11", object, object
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    result = qtool("calibrate", conv_model, "--data", npy_dir, "--method", "max", "--trt-cache", cache)
    assert result.code == 0 and "WARNING" not in result.err
    assert cache.read_text().splitlines()[0] == "TRT-101601-EntropyCalibration2"
    trt.__version__ = "11.1.0.5"
    result = qtool("calibrate", conv_model, "--data", npy_dir, "--method", "max", "--trt-cache", cache)
    assert "(TensorRT 11.1.0.5 reads no calibration caches)" in result.err
    assert cache.read_text().splitlines()[0] == "TRT-100300-EntropyCalibration2"
    result = qtool("calibrate", conv_model, "--data", npy_dir, "--method", "max", "--trt-cache", cache,
                   "--trt-version", "8.6.1")
    assert "WARNING" not in result.err and cache.read_text().startswith("TRT-8601-EntropyCalibration2\n")


HEADER = "TRT-100300-EntropyCalibration2"  # the first line of a TensorRT calibration cache


def test_unknown_names_are_summarised_in_one_line(tmp_path, qtool):
    save(conv_relu_gemm(), tmp_path / "net.onnx")
    lines = [HEADER, "x: 3f800000"] + [f"ghost{i}: 3f800000" for i in range(5000)]
    lines.append("nul\\x00: 3f800000".replace("\\x00", "\x01"))
    (tmp_path / "c.cache").write_text("\n".join(lines) + "\n")
    result = qtool("calibrate", tmp_path / "net.onnx", "--from-trt-cache", tmp_path / "c.cache",
                   "-o", tmp_path / "c.json")
    assert result.code == 0, result.err
    assert result.err.count("\n") == 1
    assert result.err.startswith("WARNING: 5001 cache tensor(s) are not in the model and were "
                                 "ignored: 'ghost0', 'ghost1', 'ghost2', 'ghost3', 'ghost4' and "
                                 "4996 more")


def test_calibration_records_the_signature_and_old_files_still_read(tmp_path, qtool):
    model = save(conv_relu_gemm(), tmp_path / "net.onnx")
    folder = tmp_path / "data"
    folder.mkdir()
    for index, batch in enumerate((4, 2, 3)):
        np.save(folder / f"b{index}.npy", np.ones((batch, 2, 6, 6), np.float32))
    result = qtool("calibrate", model, "--data", folder, "--method", "max", "--batch-size", "2")
    assert result.code == 0, result.err
    path = tmp_path / "net.calib.json"
    calibration = read_calibration(path)
    assert seen_ranges(calibration.inputs) == {"x": ((1, 2, 6, 6), (2, 2, 6, 6))}
    data = json.loads(path.read_text())
    assert data["model"]["inputs"][0]["seen"] == {"min": [1, 2, 6, 6], "max": [2, 2, 6, 6]}
    del data["model"]["inputs"][0]["seen"]  # a file written before the signature was recorded
    assert seen_ranges(from_dict(data).inputs) == {}
    data["model"]["inputs"][0]["seen"] = {"min": [3, 2], "max": [2, 2]}
    with pytest.raises(Exception, match="'seen' min and max must have one size per axis"):
        from_dict(data)
