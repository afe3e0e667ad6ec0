import json

import numpy as np
import onnx
import pytest

from qtool.io.model import model_sha256
from tests.helpers.calibration import AMAX, write_calib
from tests.helpers.models import weight_heavy
from tests.helpers.onnx_graphs import check_and_run, qdq_pairs, ref_scale
from tests.tiny_models import conv_relu_gemm, save


@pytest.fixture
def net(tmp_path):
    model = save(conv_relu_gemm(), tmp_path / "net.onnx")
    return model, write_calib(tmp_path / "net.calib.json", model, AMAX)


def test_quantize_writes_default_output_beside_model(qtool, net, tmp_path):
    model, calib = net
    before = (tmp_path / "net.onnx").read_bytes()
    result = qtool("quantize", model, "--calib", calib)
    assert result.code == 0, result.err
    out = tmp_path / "net.int8.onnx"
    assert f"wrote {out}" in result.out
    assert "quantized 3 nodes: Conv 1, Gemm 1, GlobalAveragePool 1" in result.out
    quantized = onnx.load(str(out))
    pairs = qdq_pairs(quantized)
    assert set(pairs) == {"x", "w", "relu", "flat", "gw"}
    assert pairs["relu"]["scale"] == ref_scale(3.0) and pairs["relu"]["consumers"] == [("pool", 0)]
    assert pairs["w"]["axis"] == 0 and pairs["gw"]["axis"] == 0
    check_and_run(quantized, {"x": np.ones((2, 2, 6, 6), np.float32)})
    assert (tmp_path / "net.onnx").read_bytes() == before
    meta = {p.key: p.value for p in quantized.metadata_props}
    assert meta["qtool.source_sha256"] == model_sha256(model)
    assert meta["qtool.calibration_method"] == "max"
    assert json.loads(meta["qtool.quantize_options"])["weights"] == "fp32"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_calibrate_then_quantize_end_to_end(qtool, tmp_path):
    model = save(conv_relu_gemm(), tmp_path / "net.onnx")
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(0).normal(size=(4, 2, 6, 6)).astype(np.float32))
    assert qtool("calibrate", model, "--data", data, "--method", "max").code == 0
    result = qtool("quantize", model, "--calib", tmp_path / "net.calib.json", "-o", tmp_path / "q.onnx", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["quantized"] == {"Conv": 1, "GlobalAveragePool": 1, "Gemm": 1}
    assert summary["skipped"] == [] and summary["output"] == str(tmp_path / "q.onnx")


def test_json_summary_reports_exclusions(qtool, net, tmp_path):
    model, calib = net
    exclude_file = tmp_path / "sensitive.txt"
    exclude_file.write_text("# from qtool sensitivity\nfc\n")
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx", "--json",
                   "--exclude", "conv", "--exclude", "no_such_node", "--exclude-file", exclude_file,
                   "--exclude-op-type", "GlobalAveragePool")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["quantized"] == {}
    assert {s["node"]: s["reason"] for s in summary["skipped"]} == {
        "conv": "excluded_name", "fc": "excluded_name", "pool": "excluded_op_type"}
    assert summary["unmatched_excludes"] == ["no_such_node"]
    assert "exclude pattern 'no_such_node' matches no node" in result.err


def test_op_types_option_accepts_commas_and_repeats(qtool, net, tmp_path):
    model, calib = net
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx", "--json",
                   "--op-types", "Conv,Gemm")
    assert result.code == 0, result.err
    assert json.loads(result.out)["quantized"] == {"Conv": 1, "Gemm": 1}
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx", "--op-types", "Relu")
    assert result.code == 2 and "error: op type 'Relu' cannot be quantized" in result.err


def test_int8_weights_file_is_about_four_times_smaller(qtool, tmp_path):
    model = save(weight_heavy(), tmp_path / "fc.onnx")
    calib = write_calib(tmp_path / "fc.json", model, {"x": 1.0, "r": 4.0})
    for mode in ("fp32", "int8"):
        result = qtool("quantize", model, "--calib", calib, "--weights", mode, "-o", tmp_path / f"{mode}.onnx")
        assert result.code == 0, result.err
    ratio = (tmp_path / "fp32.onnx").stat().st_size / (tmp_path / "int8.onnx").stat().st_size
    assert 3.5 < ratio <= 4.0


def test_per_tensor_weights_flag(qtool, net, tmp_path):
    model, calib = net
    assert qtool("quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx", "--per-tensor-weights").code == 0
    pairs = qdq_pairs(onnx.load(str(tmp_path / "q.onnx")))
    assert pairs["w"]["axis"] is None and pairs["w"]["scale"].shape == ()


def test_config_table_gives_defaults_that_flags_override(qtool, net, tmp_path):
    model, calib = net
    config = tmp_path / "q.toml"
    config.write_text('[quantize]\nexclude = ["fc"]\nweights = "int8"\n')
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx", "--config", config, "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["options"]["weights"] == "int8" and summary["options"]["exclude"] == ["fc"]
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx", "--config", config,
                   "--weights", "fp32", "--json")
    assert json.loads(result.out)["options"]["weights"] == "fp32"
    config.write_text("[quantize]\nexclud = [\"fc\"]\n")
    result = qtool("quantize", model, "--calib", calib, "--config", config)
    assert result.code == 2 and "unknown key 'exclud'" in result.err


def test_refuses_to_overwrite_the_input(qtool, net):
    model, calib = net
    result = qtool("quantize", model, "--calib", calib, "-o", model)
    assert result.code == 1 and "would overwrite the input" in result.err


def test_refuses_calibration_of_another_model(qtool, net, tmp_path):
    model, _ = net
    other = save(conv_relu_gemm(seed=5), tmp_path / "other.onnx")
    calib = write_calib(tmp_path / "other.json", other, AMAX)
    result = qtool("quantize", model, "--calib", calib)
    assert result.code == 1
    assert "calibration file was made for a different model" in result.err
    assert not (tmp_path / "net.int8.onnx").exists()


def test_missing_calib_is_a_usage_error(qtool, net):
    model, _ = net
    result = qtool("quantize", model)
    assert result.code == 2 and "missing --calib" in result.err


def test_already_quantized_model_points_at_check(qtool, net, tmp_path):
    model, calib = net
    assert qtool("quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx").code == 0
    result = qtool("quantize", tmp_path / "q.onnx", "--calib", calib, "-o", tmp_path / "qq.onnx")
    assert result.code == 1 and "qtool check" in result.err
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert not (tmp_path / "qq.onnx").exists()


def test_bad_inputs_give_one_line_errors(qtool, net, tmp_path):
    model, calib = net
    result = qtool("quantize", tmp_path / "missing.onnx", "--calib", calib)
    assert result.code == 1 and "model not found" in result.err
    result = qtool("quantize", model, "--calib", tmp_path / "missing.json")
    assert result.code == 1 and "calibration file not found" in result.err
    result = qtool("quantize", model, "--calib", calib, "--exclude-file", tmp_path / "missing.txt")
    assert result.code == 1 and "exclude file not found" in result.err
    result = qtool("quantize", model, "--calib", calib, "--weights", "int4")
    assert result.code == 2


def test_help_lists_every_option(qtool):
    result = qtool("quantize", "--help")
    assert result.code == 0
    for option in ("--calib", "--op-types", "--exclude", "--exclude-op-type", "--exclude-file",
                   "--per-tensor-weights", "--weights", "--conv-transpose-per-tensor",
                   "--high-precision", "--bias-correction", "--no-bias-correction", "--config",
                   "--json", "-v", "-q", "-o"):
        assert option in result.out


def test_high_precision_fp16(qtool, net, tmp_path):
    pytest.importorskip("qtool.quantize.fp16", reason="FP16 conversion not available yet")
    model, calib = net
    result = qtool("quantize", model, "--calib", calib, "-o", tmp_path / "h.onnx", "--high-precision", "fp16")
    assert result.code == 0, result.err
    quantized = onnx.load(str(tmp_path / "h.onnx"))
    assert quantized.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(n.op_type == "QuantizeLinear" for n in quantized.graph.node)
    (y,) = check_and_run(quantized, {"x": np.ones((2, 2, 6, 6), np.float32)})
    assert y.dtype == np.float32 and y.shape == (2, 3)
