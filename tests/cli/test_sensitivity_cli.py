import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.helpers.models import planted_model


@pytest.fixture
def planted(qtool, tmp_path):
    model = tmp_path / "planted.onnx"
    onnx.save_model(planted_model(), str(model))
    x = np.random.default_rng(1).normal(size=(40, 3, 8, 8)).astype(np.float32)
    data = tmp_path / "x.npy"
    np.save(data, x)
    calib = tmp_path / "planted.calib.json"
    result = qtool("calibrate", model, "--data", data, "--method", "max", "-o", calib, "-q")
    assert result.code == 0, result.err
    return tmp_path, model, calib, data, x


def run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0].astype(np.float64)


def test_ranking_fallback_and_exclude_file_for_quantize(qtool, planted):
    tmp, model, calib, data, x = planted
    report, exclude = tmp / "sens.json", tmp / "keep.txt"
    result = qtool("sensitivity", model, "--calib", calib, "--data", data, "--num-samples", 16,
                   "--target-sqnr", 30, "--write-exclude", exclude, "-o", report, "--json")
    assert result.code == 0, result.err
    printed = json.loads(result.out)
    assert printed["ranking"] == json.loads(report.read_text())["ranking"]
    assert printed["ranking"][0]["node"] == "conv2"
    assert [row["rank"] for row in printed["ranking"]] == [1, 2, 3]
    assert printed["samples"] == 16 and printed["fallback"]["eval_samples"] == 40
    assert printed["fallback"]["excluded"] == ["conv2"]
    assert printed["fallback"]["exclude_file"] == str(exclude)
    assert {"setup", "ranking", "per_layer", "fallback", "total"} <= set(printed["seconds"])
    lines = exclude.read_text().splitlines()
    assert lines[-1] == "conv2" and all(line.startswith("# ") for line in lines[:-1])

    int8 = tmp / "planted.int8.onnx"
    assert qtool("quantize", model, "--calib", calib, "--exclude-file", exclude, "-o", int8).code == 0
    ops = {node.name: node.input for node in onnx.load(str(int8)).graph.node}
    assert list(ops["conv2"]) == ["r1", "w2"]                     # kept in FP32
    assert ops["conv3"][0].endswith("_dequantized")               # still quantized
    ref, cand = run(model, x), run(int8, x)
    assert 10 * math.log10((ref ** 2).sum() / ((ref - cand) ** 2).sum()) >= 30


def test_text_table_and_top(qtool, planted):
    _, model, calib, data, _ = planted
    result = qtool("sensitivity", model, "--calib", calib, "--data", data, "--top", 1)
    assert result.code == 0, result.err
    assert result.out.startswith("ranked 3 layers on 32 samples in ")
    header = next(line for line in result.out.splitlines() if line.startswith("rank "))
    assert header.split() == ["rank", "node", "op", "sqnr_db", "cosine"]
    first = result.out.splitlines()[result.out.splitlines().index(header) + 1]
    assert first.split()[:3] == ["1", "conv2", "Conv"]
    assert "... 2 more (--top 0 shows all)" in result.out
    assert "fallback" not in result.out  # no target, no search, no file
    assert not (model.parent / "planted.exclude.txt").exists()


def test_config_and_usage_errors(qtool, planted, tmp_path, monkeypatch):
    _, model, calib, data, _ = planted
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert qtool("sensitivity", model, "--data", data).code == 2
    result = qtool("sensitivity", model, "--calib", calib, "--data", data, "--max-top1-drop", 1)
    assert result.code == 2 and "needs labels" in result.err
    config = tmp_path / "s.toml"
    config.write_text('[sensitivity]\nnum_samples = 8\ntarget_sqnr = 30.0\n'
                      '[quantize]\nexclude = ["conv3"]\n')
    result = qtool("sensitivity", model, "--calib", calib, "--data", data, "--config", config,
                   "--json")
    assert result.code == 0, result.err
    printed = json.loads(result.out)
    assert printed["samples"] == 8
    assert [row["node"] for row in printed["ranking"]] == ["conv2", "conv1"]  # conv3 excluded
    assert printed["quantize_options"]["exclude"] == ["conv3"]
    assert printed["fallback"]["excluded"] == ["conv2"]
    assert (tmp_path / "cwd" / "planted.exclude.txt").is_file()  # the current folder, not the model's
    assert not (model.parent / "planted.exclude.txt").exists()
