"""`qtool check`: text and JSON output, exit status 0/1 (and --strict), config, usage errors."""

from __future__ import annotations

import json

import onnx

from tests.helpers.qdq_graphs import clean_model


def _save(model, path):
    onnx.save_model(model, str(path))
    return path


def test_clean_model_exits_0_with_a_summary(qtool, tmp_path):
    result = qtool("check", _save(clean_model(), tmp_path / "ok.onnx"))
    assert result.code == 0, result.err
    assert result.out.strip() == "check passed: 0 errors, 0 warnings, 0 info in 20 Q/DQ nodes"


def test_errors_exit_1_and_name_the_nodes(qtool, tmp_path):
    result = qtool("check", _save(clean_model(act_zp=5), tmp_path / "bad.onnx"))
    assert result.code == 1
    lines = result.out.strip().splitlines()
    assert lines[0].startswith("error   zero-point-nonzero") and " x_q: " in lines[0]
    assert " x_dq: " in lines[1]
    assert lines[-1] == "check FAILED: 2 errors, 0 warnings, 0 info in 20 Q/DQ nodes"


def test_warnings_pass_unless_strict(qtool, tmp_path):
    path = _save(clean_model(relu_before_q=False), tmp_path / "warn.onnx")
    relaxed = qtool("check", path)
    assert relaxed.code == 0
    assert "warning weighted-output-quantized  c1: " in relaxed.out
    strict = qtool("check", path, "--strict")
    assert strict.code == 1
    assert strict.out.strip().splitlines()[-1].startswith("check FAILED (strict): 0 errors, 1 warning")


def test_json_output(qtool, tmp_path):
    path = _save(clean_model(act_zp=5, relu_before_q=False), tmp_path / "m.onnx")
    result = qtool("check", path, "--json")
    assert result.code == 1
    data = json.loads(result.out)
    assert data["passed"] is False and data["strict"] is False
    assert data["counts"] == {"error": 2, "warning": 1, "info": 0}
    assert [(f["severity"], f["code"], f["node"]) for f in data["findings"]] == [
        ("error", "zero-point-nonzero", "x_q"), ("error", "zero-point-nonzero", "x_dq"),
        ("warning", "weighted-output-quantized", "c1")]
    assert data["model"] == str(path) and len(data["model_sha256"]) == 64
    assert "onnx" in data["tools"]


def test_ignore_option_and_config(qtool, tmp_path):
    path = _save(clean_model(act_zp=5, relu_before_q=False), tmp_path / "m.onnx")
    assert qtool("check", path, "--ignore", "zero-point-nonzero").code == 0
    config = tmp_path / "qtool.toml"
    config.write_text('[check]\nstrict = true\nignore = ["zero-point-nonzero"]\n')
    from_config = qtool("check", path, "--config", config)
    assert from_config.code == 1 and "(strict)" in from_config.out


def test_unknown_code_is_a_usage_error(qtool, tmp_path):
    result = qtool("check", _save(clean_model(), tmp_path / "m.onnx"), "--ignore", "nope")
    assert result.code == 2
    assert result.err.strip().startswith("error: unknown check code 'nope'")


def test_missing_and_unreadable_models(qtool, tmp_path):
    missing = qtool("check", tmp_path / "absent.onnx")
    assert missing.code == 1 and missing.err.strip() == f"error: model not found: {tmp_path / 'absent.onnx'}"
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    result = qtool("check", garbage)
    assert result.code == 1 and result.err.startswith("error: ") and "Traceback" not in result.err


def test_help_lists_every_code(qtool):
    from qtool.quantize.check import CODES

    result = qtool("check", "--help")
    assert result.code == 0
    assert all(code in result.out for code in CODES)
