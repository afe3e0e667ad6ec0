"""scripts/prepare_model.py: equalize and smooth a model file, measured on a data folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.helpers.onnx_graphs import check_and_run
from tests.helpers.rescale import conv_chain, layernorm_qkv

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "prepare_model.py"


def load_script():
    spec = importlib.util.spec_from_file_location("prepare_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_data(folder: Path, shape, count=3):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        np.savez(folder / f"{i}.npz", x=rng.normal(size=shape).astype(np.float32))


@pytest.mark.parametrize("which", ["conv", "layernorm"])
def test_equalize_and_smooth_a_model_file(tmp_path, capsys, which):
    if which == "conv":
        model, _ = conv_chain([(6, 1, True), (5, 1, True)], ["Relu"])
        shape = (2, 3, 6, 6)
    else:
        model = layernorm_qkv()
        shape = (2, 5, 16)
    source = tmp_path / "model.onnx"
    onnx.save_model(model, str(source))
    write_data(tmp_path / "data", shape)
    out = tmp_path / "prepared.onnx"
    rc = load_script().main([str(source), "-o", str(out), "--equalize", "--smooth", "--data",
                             str(tmp_path / "data"), "--check-data"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["equalize"]["pairs"] == (1 if which == "conv" else 0)
    assert report["smooth"]["smoothed"] == (0 if which == "conv" else 1)
    assert report["check"]["max_abs_diff"] <= 1e-4 * report["check"]["max_abs_output"]
    prepared = onnx.load(str(out))
    feeds = {"x": np.random.default_rng(5).normal(size=shape).astype(np.float32)}
    np.testing.assert_allclose(check_and_run(prepared, feeds)[0], check_and_run(model, feeds)[0],
                               rtol=1e-4, atol=1e-5)
    assert source.read_bytes() == model.SerializeToString()


def test_usage_errors(tmp_path):
    script = load_script()
    with pytest.raises(SystemExit):
        script.parse_args([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx")])
    with pytest.raises(SystemExit):
        script.parse_args([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--smooth"])
