"""`check_model`: a clean hand-built model has no findings, codes can be ignored, findings are
sorted errors first, the input is left alone; onnxruntime's own QDQ output is judged as
TensorRT would."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from qtool.errors import UsageError
from qtool.quantize.check import check_model
from tests.helpers.qdq_graphs import clean_model, found


def test_clean_model_has_no_findings():
    report = check_model(clean_model())
    assert report.findings == ()
    assert report.qdq_nodes == 20
    assert report.passed(strict=True)


def test_ignore_and_unknown_codes():
    model = clean_model(act_zp=3, relu_before_q=False)
    assert found(model, ignore=["zero-point-nonzero"]) == {("weighted-output-quantized", "c1")}
    with pytest.raises(UsageError, match="unknown check code 'no-such-code'"):
        check_model(model, ignore=["no-such-code"])


def test_findings_sorted_errors_first_and_report_dict():
    report = check_model(clean_model(act_zp=3, relu_before_q=False))
    assert [f.severity for f in report.findings] == ["error", "error", "warning"]
    data = report.to_dict(strict=False)
    assert data["counts"] == {"error": 2, "warning": 1, "info": 0}
    assert data["passed"] is False
    assert data["findings"][2] == {
        "severity": "warning", "code": "weighted-output-quantized", "node": "c1",
        "message": report.findings[2].message}
    assert report.summary() == "check FAILED: 2 errors, 1 warning, 0 info in 20 Q/DQ nodes"


def test_input_model_is_not_modified():
    model = clean_model(act_zp=3)
    before = model.SerializeToString()
    check_model(model)
    assert model.SerializeToString() == before


# -- onnxruntime.quantization output -----------------------------------------------------------

def _ort_quantize(tmp_path, **options) -> onnx.ModelProto:
    quantization = pytest.importorskip("onnxruntime.quantization")
    from tests.tiny_models import conv_relu_gemm, save

    source = tmp_path / "fp32.onnx"
    save(conv_relu_gemm(batch=1), source)
    rng = np.random.default_rng(0)
    batches = iter([{"x": rng.normal(size=(1, 2, 6, 6)).astype(np.float32)} for _ in range(4)])

    class Reader(quantization.CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    target = tmp_path / "int8.onnx"
    quantization.quantize_static(str(source), str(target), Reader(),
                                 quant_format=quantization.QuantFormat.QDQ, **options)
    return onnx.load(str(target))


def test_onnxruntime_default_asymmetric_quantization_fails(tmp_path):
    quantization = pytest.importorskip("onnxruntime.quantization")
    model = _ort_quantize(tmp_path, activation_type=quantization.QuantType.QUInt8,
                          weight_type=quantization.QuantType.QUInt8)
    report = check_model(model)
    codes = {f.code for f in report.findings if f.severity == "error"}
    assert {"zero-point-nonzero", "qdq-dtype-unsupported"} <= codes
    activation_qs = [n.name for n in model.graph.node if n.op_type == "QuantizeLinear"]
    flagged = {f.node for f in report.findings if f.code == "qdq-dtype-unsupported"}
    assert set(activation_qs) <= flagged
    assert not report.passed()


def test_onnxruntime_defaults_are_asymmetric(tmp_path):
    report = check_model(_ort_quantize(tmp_path))
    assert "zero-point-nonzero" in {f.code for f in report.findings if f.severity == "error"}
    assert not report.passed()


def test_onnxruntime_symmetric_int8_passes(tmp_path):
    quantization = pytest.importorskip("onnxruntime.quantization")
    model = _ort_quantize(
        tmp_path, activation_type=quantization.QuantType.QInt8, weight_type=quantization.QuantType.QInt8,
        per_channel=True,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    report = check_model(model)
    assert report.count("error") == 0, [f.format() for f in report.findings]
    assert report.passed()
