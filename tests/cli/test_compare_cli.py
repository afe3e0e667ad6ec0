import importlib.util
import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from tests.tiny_models import conv_relu_gemm, save


def perturbed(model: onnx.ModelProto, factor: float) -> onnx.ModelProto:
    """A copy whose Gemm weight is scaled: same graph, slightly different outputs."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for index, init in enumerate(copy.graph.initializer):
        if init.name == "gw":
            array = numpy_helper.to_array(init) * np.float32(factor)
            copy.graph.initializer[index].CopyFrom(numpy_helper.from_array(array, "gw"))
    return copy


@pytest.fixture
def setup(tmp_path):
    model = conv_relu_gemm()
    ref = tmp_path / "ref.onnx"
    cand = tmp_path / "cand.onnx"
    save(model, ref)
    save(perturbed(model, 1.05), cand)
    x = np.random.default_rng(1).normal(size=(10, 2, 6, 6)).astype(np.float32)
    data = tmp_path / "x.npy"
    np.save(data, x)
    return tmp_path, ref, cand, data, x


def ort_outputs(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0].astype(np.float64)


def test_metrics_match_numpy_over_batches(qtool, setup):
    tmp, ref, cand, data, x = setup
    report = tmp / "compare.json"
    result = qtool("compare", ref, cand, "--data", data, "--batch-size", 3, "-o", report, "--json")
    assert result.code == 0, result.err
    printed = json.loads(result.out)
    saved = json.loads(report.read_text())
    assert printed["outputs"] == saved["outputs"]
    a, b = ort_outputs(ref, x), ort_outputs(cand, x)
    metrics = saved["outputs"]["y"]
    assert metrics["sqnr_db"] == pytest.approx(10 * math.log10((a**2).sum() / ((a - b)**2).sum()),
                                               rel=1e-9)
    assert metrics["cosine"] == pytest.approx((a * b).sum() / math.sqrt((a**2).sum() * (b**2).sum()),
                                              rel=1e-12)
    assert metrics["max_abs_error"] == pytest.approx(np.abs(a - b).max(), rel=1e-12)
    assert metrics["mean_abs_error"] == pytest.approx(np.abs(a - b).mean(), rel=1e-9)
    assert saved["samples"] == 10 and saved["batches"] == 4
    assert saved["passed"] is True and saved["gates"] == []
    assert saved["reference"]["kind"] == "onnx" and len(saved["reference"]["sha256"]) == 64


def test_identical_models_print_inf(qtool, setup):
    _, ref, _, data, _ = setup
    result = qtool("compare", ref, ref, "--data", data, "--min-sqnr", 100)
    assert result.code == 0, result.err
    row = next(line for line in result.out.splitlines() if line.startswith("y "))
    assert row.split()[1] == "inf"
    assert "ok: sqnr_db[y] = inf (--min-sqnr: >= 100)" in result.out
    result = qtool("compare", ref, ref, "--data", data, "--json")
    assert json.loads(result.out)["outputs"]["y"]["sqnr_db"] == "inf"


def test_failing_gate_exits_3_naming_metric_value_threshold(qtool, setup):
    tmp, ref, cand, data, x = setup
    a, b = ort_outputs(ref, x), ort_outputs(cand, x)
    sqnr = 10 * math.log10((a**2).sum() / ((a - b)**2).sum())
    passing = qtool("compare", ref, cand, "--data", data, "--min-sqnr", round(sqnr - 0.5, 1))
    assert passing.code == 0, passing.err
    assert "gate passed" in passing.out
    report = tmp / "c.json"
    failing = qtool("compare", ref, cand, "--data", data, "--min-sqnr", round(sqnr + 0.5, 1),
                    "-o", report)
    assert failing.code == 3
    assert failing.err.strip() == (f"error: accuracy gate failed: sqnr_db[y] {sqnr:.6g} < "
                                   f"{round(sqnr + 0.5, 1):g} (--min-sqnr)")
    assert "gate FAILED" in failing.out
    saved = json.loads(report.read_text())  # the report is still written
    assert saved["passed"] is False and saved["gates"][0]["passed"] is False


def test_labels_top1_and_drop_gate(qtool, setup):
    tmp, ref, _, data, x = setup
    cand = tmp / "bad.onnx"
    save(perturbed(conv_relu_gemm(), -1.0), cand)  # flips the logits: argmax changes
    a, b = ort_outputs(ref, x), ort_outputs(cand, x)
    labels = a.argmax(1)
    labels[:2] = (labels[:2] + 1) % 3  # the reference is right on 8 of 10
    np.save(tmp / "labels.npy", labels)
    ref_top1 = 100.0 * (a.argmax(1) == labels).mean()
    cand_top1 = 100.0 * (b.argmax(1) == labels).mean()
    agreement = 100.0 * (a.argmax(1) == b.argmax(1)).mean()
    result = qtool("compare", ref, cand, "--data", data, "--labels", tmp / "labels.npy", "--json",
                   "--max-top1-drop", 100)
    assert result.code == 0, result.err
    cls = json.loads(result.out)["classification"]
    assert cls["reference"]["top1_percent"] == ref_top1 == 80.0
    assert cls["candidate"]["top1_percent"] == cand_top1
    assert cls["top1_agreement_percent"] == agreement
    assert cls["top1_drop_points"] == pytest.approx(ref_top1 - cand_top1)
    result = qtool("compare", ref, cand, "--data", data, "--labels", tmp / "labels.npy",
                   "--max-top1-drop", 1)
    assert result.code == 3
    assert "top1_drop_points" in result.err and "(--max-top1-drop)" in result.err


def test_agreement_gate_with_task(qtool, setup):
    tmp, ref, cand, data, x = setup
    # scaling the last weight by 1.05 (zero bias) scales the logits: the argmax is unchanged
    result = qtool("compare", ref, cand, "--data", data, "--task", "classification",
                   "--min-agreement", 100)
    assert result.code == 0 and "top-1 agreement 100.00%" in result.out
    flipped = tmp / "flipped.onnx"
    save(perturbed(conv_relu_gemm(), -1.0), flipped)
    a, b = ort_outputs(ref, x), ort_outputs(flipped, x)
    agreement = 100.0 * (a.argmax(1) == b.argmax(1)).mean()
    assert agreement < 50
    result = qtool("compare", ref, flipped, "--data", data, "--task", "classification",
                   "--min-agreement", 50)
    assert result.code == 3
    assert result.err.strip() == (f"error: accuracy gate failed: top1_agreement_percent "
                                  f"{agreement:g} < 50 (--min-agreement)")


def test_config_table_sets_gates(qtool, setup, tmp_path):
    _, ref, cand, data, _ = setup
    config = tmp_path / "qtool.toml"
    config.write_text("[compare]\nmin_sqnr = 500.0\nbatch_size = 4\n")
    result = qtool("compare", ref, cand, "--data", data, "--config", config)
    assert result.code == 3 and "(--min-sqnr)" in result.err
    # relative paths in a config name files beside it, not in the working directory
    (tmp_path / "sub").mkdir()
    config = tmp_path / "sub" / "rel.toml"
    config.write_text(f'[compare]\ndata = "../{data.name}"\noutput = "report.json"\n')
    assert data.parent == tmp_path
    result = qtool("compare", ref, cand, "--config", config)
    assert result.code == 0, result.err
    assert (tmp_path / "sub" / "report.json").is_file()
    # a flag overrides the config
    assert qtool("compare", ref, cand, "--data", data, "--config", config, "--min-sqnr", -50).code == 0


def test_user_errors(qtool, setup):
    tmp, ref, cand, data, _ = setup
    result = qtool("compare", ref, cand, "--data", data, "--max-top1-drop", 1)
    assert result.code == 2 and "needs labels" in result.err
    result = qtool("compare", ref, cand)
    assert result.code == 2 and "--data" in result.err
    weird = tmp / "model.bin"
    weird.write_bytes(b"x")
    result = qtool("compare", ref, weird, "--data", data)
    assert result.code == 1
    assert result.err.startswith("error: ") and "unknown model kind '.bin'" in result.err
    result = qtool("compare", ref, tmp / "missing.onnx", "--data", data)
    assert result.code == 1 and "model not found" in result.err
    result = qtool("compare", ref, cand, "--data", data, "-o", data)
    assert result.code == 1 and "would overwrite the input" in result.err
    np.save(tmp / "short.npy", np.zeros(3, np.int64))
    result = qtool("compare", ref, cand, "--data", data, "--labels", tmp / "short.npy")
    assert result.code == 1 and "3 entries" in result.err


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT installed")
def test_engine_without_tensorrt_is_one_line(qtool, setup):
    tmp, ref, _, data, _ = setup
    engine = tmp / "model.engine"
    engine.write_bytes(b"not really an engine")
    result = qtool("compare", ref, engine, "--data", data)
    assert result.code == 1
    assert result.err.startswith("error: TensorRT is not available")
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
