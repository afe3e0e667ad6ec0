"""onnxruntime output of quantized models vs numpy fake-quant references of the same graphs, INT8
weight storage, and an amax too large for float32 refused by name."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from qtool.errors import QtoolError
from qtool.io.model import save_model
from qtool.quantize.api import quantize_model
from qtool.quantize.options import QuantizeOptions
from tests.helpers.models import RESIDUAL_AMAX, residual_classifier, weight_heavy
from tests.helpers.onnx_graphs import (
    attention_block,
    build,
    check_and_run,
    conv2d,
    fake_quant,
    init,
    ref_scale,
    ref_weight_scales,
    value,
)
from tests.tiny_models import conv_relu_gemm


def residual_reference(x, p, amax):
    fq_w = {name: fake_quant(p[name], ref_weight_scales(p[name], 0), 0) for name in ("w1", "w2", "fc")}
    r = np.maximum(conv2d(fake_quant(x, ref_scale(amax["x"])), fq_w["w1"], p["b1"], pad=1), 0)
    r_q = fake_quant(r, ref_scale(amax["r"]))  # one pair, read by conv2 and the residual Add
    s = conv2d(r_q, fq_w["w2"], pad=1) + r_q
    rs = np.maximum(s, 0)
    flat = fake_quant(rs, ref_scale(amax["rs"])).mean(axis=(2, 3))
    return fake_quant(flat, ref_scale(amax["flat"])) @ fq_w["fc"].T + p["fc_b"]


def test_residual_classifier_matches_fake_quant_reference():
    model, params = residual_classifier()
    x = np.random.default_rng(11).normal(size=(2, 3, 6, 6)).astype(np.float32)
    quantized, _ = quantize_model(model, RESIDUAL_AMAX)
    (got,) = check_and_run(quantized, {"x": x})
    expected = residual_reference(x, params, RESIDUAL_AMAX)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # and the quantization is visible: the FP32 model differs by more than float noise
    (fp32,) = check_and_run(model, {"x": x})
    assert np.abs(fp32 - got).max() > 1e-3


def test_int8_and_fp32_weight_storage_give_identical_outputs():
    model, _ = residual_classifier()
    x = np.random.default_rng(5).normal(size=(2, 3, 6, 6)).astype(np.float32)
    fp32_weights, _ = quantize_model(model, RESIDUAL_AMAX, QuantizeOptions(weights="fp32"))
    int8_weights, _ = quantize_model(model, RESIDUAL_AMAX, QuantizeOptions(weights="int8"))
    (a,) = check_and_run(fp32_weights, {"x": x})
    (b,) = check_and_run(int8_weights, {"x": x})
    np.testing.assert_array_equal(a, b)


def attention(seed=2):
    rng = np.random.default_rng(seed)
    params = {name: rng.normal(size=(8, 8)).astype(np.float32) * 0.4 for name in ("wq", "wk", "wv")}
    return attention_block(**params), params


def test_attention_matches_fake_quant_reference():
    model, p = attention()
    amax = {"x": 3.0, "q": 4.0, "kt": 4.5, "v": 3.5, "probs": 1.0}
    x = np.random.default_rng(9).normal(size=(2, 5, 8)).astype(np.float32)
    quantized, summary = quantize_model(model, amax)
    assert summary.quantized == {"MatMul": 5}
    (got,) = check_and_run(quantized, {"x": x})

    xq = fake_quant(x, ref_scale(amax["x"]))
    w = {n: fake_quant(p[n], ref_weight_scales(p[n], 1), 1) for n in p}
    q, k, v = xq @ w["wq"], xq @ w["wk"], xq @ w["wv"]
    scores = fake_quant(q, ref_scale(amax["q"])) @ fake_quant(k.transpose(0, 2, 1), ref_scale(amax["kt"]))
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs = e / e.sum(axis=-1, keepdims=True)
    expected = fake_quant(probs, ref_scale(amax["probs"])) @ fake_quant(v, ref_scale(amax["v"]))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_concat_shared_scale_numerics():
    rng = np.random.default_rng(4)
    wa, wb, wc = (rng.normal(size=s).astype(np.float32) for s in ((2, 3, 1, 1), (3, 3, 1, 1), (2, 5, 1, 1)))
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a"),
             helper.make_node("Conv", ["x", "wb"], ["b"], name="conv_b"),
             helper.make_node("Concat", ["a", "b"], ["cat"], name="concat", axis=1),
             helper.make_node("Conv", ["cat", "wc"], ["y"], name="conv_c")]
    model = build(nodes, [value("x", [1, 3, 4, 4])], [value("y", [1, 2, 4, 4])],
                  [init("wa", wa), init("wb", wb), init("wc", wc)])
    amax = {"x": 2.0, "a": 1.0, "b": 6.0, "cat": 5.0}
    x = rng.normal(size=(1, 3, 4, 4)).astype(np.float32)
    (got,) = check_and_run(quantize_model(model, amax)[0], {"x": x})
    xq = fake_quant(x, ref_scale(2.0))
    fqw = {n: fake_quant(w, ref_weight_scales(w, 0), 0) for n, w in (("a", wa), ("b", wb), ("c", wc))}
    shared = ref_scale(6.0)  # the largest amax among the concat's tensors
    cat = np.concatenate([fake_quant(conv2d(xq, fqw["a"]), shared), fake_quant(conv2d(xq, fqw["b"]), shared)], 1)
    expected = conv2d(fake_quant(cat, shared), fqw["c"])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_saturation_clamps_to_int8_range():
    w = np.eye(4, dtype=np.float32)
    model = build([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                  [value("x", [1, 4])], [value("y", [1, 4])], [init("w", w)])
    x = np.array([[10.0, -10.0, 0.5, -0.51]], np.float32)
    (got,) = check_and_run(quantize_model(model, {"x": 1.0})[0], {"x": x})
    scale = np.float32(1.0 / 127)
    np.testing.assert_allclose(got, [[127 * scale, -128 * scale, 64 * scale, -65 * scale]], rtol=1e-6)


def test_int8_weight_file_is_about_four_times_smaller(tmp_path):
    model = weight_heavy()
    amax = {"x": 1.0, "r": 4.0}
    sizes = {}
    for mode in ("fp32", "int8"):
        quantized, _ = quantize_model(model, amax, QuantizeOptions(weights=mode))
        path = tmp_path / f"{mode}.onnx"
        save_model(quantized, path)
        sizes[mode] = path.stat().st_size
        assert onnx.load(str(path)).graph.node  # readable
    ratio = sizes["fp32"] / sizes["int8"]
    assert 3.5 < ratio <= 4.0, sizes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_int8_stored_weights_equal_quantize_linear(seed):
    """INT8 weights computed in numpy are exactly what QuantizeLinear gives in onnxruntime."""
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(6, 7)) * rng.uniform(0.01, 10, size=(6, 1))).astype(np.float32)
    model = build([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)],
                  [value("x", [1, 7])], [value("y", [1, 6])], [init("w", w)])
    fp32, _ = quantize_model(model, {"x": 1.0})
    int8, _ = quantize_model(model, {"x": 1.0}, QuantizeOptions(weights="int8"))
    probe = helper.make_tensor_value_info("w_quantized", onnx.TensorProto.INT8, [6, 7])
    fp32.graph.output.append(probe)
    (_, q_ort) = check_and_run(fp32, {"x": np.zeros((1, 7), np.float32)})
    stored = next(t for t in int8.graph.initializer if t.name == "w_quantized")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(stored), q_ort)


def test_an_amax_beyond_float32_is_refused_by_name():
    model = conv_relu_gemm()
    with pytest.raises(QtoolError, match=r"amax of 'x' is 1e\+300: its scale would overflow"):
        quantize_model(model, {"x": 1e300, "relu": 1.0, "flat": 1.0})


def test_facts_and_plan_made_before_give_the_same_model():
    from qtool.graph.facts import ModelFacts
    from qtool.placement import make_plan
    from qtool.quantize.api import placement_options

    model, _ = residual_classifier()
    amax = {"x": 2.0, "r": 3.0, "flat": 1.5}
    options = QuantizeOptions(exclude=("conv2", "nothing"))
    expected, summary = quantize_model(model, amax, options)
    facts = ModelFacts.of(model)
    plan = make_plan(facts, amax, placement_options(options))
    given, given_summary = quantize_model(model, amax, options, facts=facts, plan=plan)
    assert given.SerializeToString() == expected.SerializeToString()
    assert given_summary == summary
    only_facts, _ = quantize_model(model, amax, options, facts=facts)
    assert only_facts.SerializeToString() == expected.SerializeToString()


def test_facts_of_a_model_upgraded_first_are_found_again():
    from qtool.graph.facts import ModelFacts
    from qtool.placement import make_plan

    model, _ = residual_classifier()
    old = onnx.ModelProto()
    old.CopyFrom(model)
    old.opset_import[0].version = 11  # every op of the graph reads the same in opset 11
    amax = {"x": 2.0, "r": 3.0, "flat": 1.5}
    expected, _ = quantize_model(old, amax)
    stale = ModelFacts.of(old)
    given, summary = quantize_model(old, amax, facts=stale, plan=make_plan(stale, {}))
    assert summary.opset_in == 11 and summary.opset_out >= 13
    assert summary.quantized
    assert given.SerializeToString() == expected.SerializeToString()
