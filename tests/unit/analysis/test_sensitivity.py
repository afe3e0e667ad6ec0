import math
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.analysis.evaluation import ReferenceSet
from qtool.analysis.fallback import exclusion_pattern, search_fallback, write_exclude_file
from qtool.analysis.gates import Gates
from qtool.analysis.sensitivity import SensitivityOptions, measure_sensitivity
from qtool.analysis.single_layer import SingleLayerModels, fake_quantized_weight, find_layers
from qtool.calib.api import CalibrateOptions, calibrate
from qtool.calib.calibfile import write_calibration
from qtool.errors import QtoolError
from qtool.placement.exclude import NameMatcher, read_exclude_file
from qtool.quantize.api import quantize_model
from qtool.quantize.options import QuantizeOptions
from tests.helpers.models import planted_model


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    model = planted_model()
    model_path = tmp / "planted.onnx"
    onnx.save_model(model, str(model_path))
    x = np.random.default_rng(1).normal(size=(48, 3, 8, 8)).astype(np.float32)
    data = tmp / "x.npy"
    np.save(data, x)
    run = calibrate(model_path, data, CalibrateOptions(method="max"))
    calib = tmp / "planted.calib.json"
    write_calibration(run.calibration, calib, run.histograms)
    return model, model_path, calib, data, x, run.calibration.amax


def outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0].astype(np.float64)


def sqnr(ref: np.ndarray, cand: np.ndarray) -> float:
    return 10 * math.log10((ref ** 2).sum() / ((ref - cand) ** 2).sum())


def test_fake_quantized_weight_equals_onnxruntime_q_dq_bit_for_bit():
    rng = np.random.default_rng(3)
    scale = np.array([0.02, 0.5, 3.0], np.float32)
    ints = rng.integers(-140, 140, size=(3, 5)).astype(np.float32)
    ties = (ints + 0.5) * scale[:, None]           # exact halves: rounding must go to even
    w = np.concatenate([ties, rng.normal(size=(3, 7)).astype(np.float32) * 40], axis=1)
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["w", "s", "z"], ["q"], axis=0),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], axis=0)],
        "qdq", [helper.make_tensor_value_info("w", TensorProto.FLOAT, list(w.shape))],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, list(w.shape))],
        [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(np.zeros(3, np.int8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"w": w})[0]
    assert np.array_equal(fake_quantized_weight(w, scale, 0), expected)
    per_tensor = np.array(0.7, np.float32)
    assert np.array_equal(fake_quantized_weight(w, per_tensor, None),
                          np.clip(np.rint(w / per_tensor), -128, 127) * per_tensor)


def test_single_layer_model_structure(planted):
    model, _, _, _, _, amax = planted
    before = model.SerializeToString()
    quantized, _ = quantize_model(model, amax)
    single = SingleLayerModels(model, quantized)
    assert [(layer.name, layer.op_type) for layer in single.layers] == [
        ("conv1", "Conv"), ("conv2", "Conv"), ("conv3", "Conv")]
    conv2 = single.layers[1]
    built = single.build(conv2)
    assert model.SerializeToString() == before  # the FP32 model is not modified
    ops = [(node.op_type, node.name) for node in built.graph.node]
    assert ops == [("Conv", "conv1"), ("Relu", "relu1"),
                   ("QuantizeLinear", "r1_QuantizeLinear"), ("DequantizeLinear", "r1_DequantizeLinear"),
                   ("Conv", "conv2"), ("Relu", "relu2"), ("Conv", "conv3")]
    conv = built.graph.node[4]
    assert list(conv.input) == ["r1_dequantized", "w2_dequantized"]
    assert list(built.graph.node[0].input) == ["x", "w1", "b1"]  # others stay FP32
    assert list(built.graph.node[6].input) == ["r2", "w3"]
    values = {init.name: numpy_helper.to_array(init) for init in built.graph.initializer}
    assert "w2_scale" not in values  # the weight is folded: no Q/DQ pair, no scale
    w2 = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w2"))
    scales = numpy_helper.to_array(next(i for i in quantized.graph.initializer
                                        if i.name == "w2_scale"))
    assert scales.shape == (4,)  # per output channel
    expected = np.clip(np.rint(w2 / scales[:, None, None, None]), -128, 127) \
        * scales[:, None, None, None]
    assert np.array_equal(values["w2_dequantized"], expected.astype(np.float32))
    assert values["r1_scale"] == np.float32(amax["r1"] / 127)
    onnx.checker.check_model(built, full_check=True)


def test_single_layer_model_matches_the_excluded_qdq_model(planted):
    """Quantizing conv3 alone = quantize_model with conv1 and conv2 excluded."""
    model, _, _, _, x, amax = planted
    quantized, _ = quantize_model(model, amax)
    single = SingleLayerModels(model, quantized)
    alone = single.build(single.layers[2])
    reference, _ = quantize_model(model, amax, QuantizeOptions(exclude=("conv1", "conv2")))
    np.testing.assert_allclose(outputs(alone, x), outputs(reference, x), rtol=1e-6, atol=1e-5)


def test_planted_layer_ranks_first_and_fallback_meets_target(planted, tmp_path):
    model, model_path, calib, data, x, amax = planted
    ref = outputs(model, x)
    everything, _ = quantize_model(model, amax)
    without_conv2, _ = quantize_model(model, amax, QuantizeOptions(exclude=("conv2",)))
    worst, best = sqnr(ref, outputs(everything, x)), sqnr(ref, outputs(without_conv2, x))
    assert worst + 6 < best  # the plant works: conv2 costs more than 6 dB
    target = (worst + best) / 2
    options = SensitivityOptions(num_samples=16, batch_size=8, target=Gates(min_sqnr=target))
    result = measure_sensitivity(model_path, calib, data, options)

    assert result.layers[0].node == "conv2"
    assert result.samples == 16
    ranked = {layer.node: layer for layer in result.layers}
    assert ranked["conv2"].evaluation.sqnr_db < min(ranked["conv1"].evaluation.sqnr_db,
                                                    ranked["conv3"].evaluation.sqnr_db) - 6
    # the reported number is the SQNR of conv2 alone on the first 16 samples
    single = SingleLayerModels(model, everything)
    alone = outputs(single.build(single.layers[1]), x[:16])
    assert ranked["conv2"].evaluation.sqnr_db == pytest.approx(sqnr(ref[:16], alone), abs=1e-9)

    fallback = result.fallback
    assert fallback.passed and fallback.excluded == ["conv2"]
    assert result.eval_samples == 48
    assert fallback.final.metrics["sqnr_db"] == pytest.approx(best, abs=1e-6)
    # the exclusion file, read the way `qtool quantize --exclude-file` reads it, meets the target
    path = tmp_path / "exclude.txt"
    write_exclude_file(path, fallback.excluded, result.node_names, header=["test"])
    excluded = read_exclude_file(path)
    assert excluded == ["conv2"]
    rebuilt, _ = quantize_model(model, amax, QuantizeOptions(exclude=tuple(excluded)))
    assert sqnr(ref, outputs(rebuilt, x)) >= target


def test_sensitivity_refuses_other_models_calibration(planted, tmp_path):
    _, _, calib, data, _, _ = planted
    other = planted_model()
    other.graph.node[0].name = "renamed"
    path = tmp_path / "other.onnx"
    onnx.save_model(other, str(path))
    with pytest.raises(QtoolError, match="different model"):
        measure_sensitivity(path, calib, data, SensitivityOptions())


# -- the search, with a made-up check ------------------------------------------------------------

def recording(needed: set, ranking):
    calls = []

    def check(excluded):
        calls.append(excluded)
        return needed <= set(excluded), {"excluded": len(excluded)}

    return check, calls


def test_search_prunes_unneeded_layers_of_the_prefix():
    ranking = list("abcdefgh")
    check, calls = recording({"a", "c", "f"}, ranking)
    result = search_fallback(ranking, check)
    assert result.passed and result.excluded == ["a", "c", "f"]
    assert len(calls) == len(set(calls)) == result.checks  # never the same set twice
    assert result.final.passed and result.final.excluded == ("a", "c", "f")
    phases = [step.phase for step in result.steps]
    assert phases[0] == "baseline" and "grow" in phases and "prune" in phases


def test_search_baseline_and_impossible():
    check, calls = recording(set(), list("abc"))
    result = search_fallback(list("abc"), check)
    assert result.passed and result.excluded == [] and calls == [()]
    result = search_fallback(list("abc"), lambda excluded: (False, {}))
    assert not result.passed and result.excluded == list("abc")


@pytest.mark.parametrize("needed", [{"a"}, {"h"}, {"b", "g"}, set("abcdefgh"), {"d", "e"}])
def test_search_finds_exactly_the_needed_set(needed):
    ranking = list("abcdefgh")
    check, _ = recording(needed, ranking)
    result = search_fallback(ranking, check)
    assert set(result.excluded) == needed
    assert result.excluded == [name for name in ranking if name in needed]


def test_exclusion_patterns_match_only_their_node(tmp_path):
    names = ["/blocks.1/conv", "/blocks11/conv", "plain", "odd #name", " padded", "a+b"]
    assert exclusion_pattern("plain", names) == "plain"
    assert exclusion_pattern("/blocks11/conv", names) == "/blocks11/conv"
    assert exclusion_pattern("/blocks.1/conv", names) == re.escape("/blocks.1/conv")
    path = tmp_path / "ex.txt"
    for chosen in (["/blocks.1/conv"], ["odd #name", " padded"], ["a+b", "plain"]):
        write_exclude_file(path, chosen, names, header=["a comment"])
        assert path.read_text().startswith("# a comment\n")
        matcher = NameMatcher(read_exclude_file(path))
        assert [name for name in names if matcher.match(name)] == \
            [name for name in names if name in chosen]


# -- the replayed evaluation set -------------------------------------------------------------------

def _classifier_set(labels=None):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(20, 4)).astype(np.float32)
    logits = x * np.array([1, 2, 3, 4], np.float32)
    batches = [{"x": x[i:i + 6]} for i in range(0, 20, 6)]
    from qtool.io.batch_axes import BatchLayout
    from qtool.io.model import InputSpec

    layout = BatchLayout.of([InputSpec("x", np.dtype(np.float32), ("N", 4))])
    reference = ReferenceSet(lambda feeds: {"y": feeds["x"] * np.array([1, 2, 3, 4], np.float32)},
                             batches, layout, labels=labels, classification=True)
    return reference, x, logits


def test_reference_set_replays_fragile_samples_first():
    reference, _, _ = _classifier_set()
    margins = []
    for _, outputs, _ in reference.batches:
        top2 = np.sort(outputs["y"], axis=1)[:, -2:]
        margins.extend(top2[:, 1] - top2[:, 0])
    assert margins == sorted(margins)
    assert [len(b[0]["x"]) for b in reference.batches] == [6, 6, 6, 2]
    # replaying the reference itself: identical, whatever the order
    evaluation = reference.evaluate(lambda feeds: {"y": feeds["x"] * np.array([1, 2, 3, 4], np.float32)})
    assert evaluation.sqnr_db == math.inf and evaluation.agreement == 100.0


def test_early_stop_only_on_sure_failures():
    labels = np.random.default_rng(6).integers(0, 4, size=20)
    reference, _, _ = _classifier_set(labels)

    def noisy(feeds):
        y = feeds["x"] * np.array([1, 2, 3, 4], np.float32)
        return {"y": y + np.float32(0.3) * np.sin(np.arange(y.size).reshape(y.shape))}

    full = reference.evaluate(noisy)
    assert full.samples == 20 and full.stopped is None
    for gates in (Gates(min_agreement=full.agreement), Gates(min_agreement=full.agreement + 0.1),
                  Gates(min_sqnr=full.sqnr_db), Gates(min_sqnr=full.sqnr_db + 1),
                  Gates(max_top1_drop=full.classification.top1_drop),
                  Gates(max_top1_drop=full.classification.top1_drop - 0.1)):
        quick = reference.evaluate(noisy, gates)
        fails = full.failure(gates) is not None
        assert (quick.failure(gates) is not None) == fails
        if quick.stopped:
            assert fails and quick.samples < 20
        if not fails:
            assert quick.samples == 20
    stopped = reference.evaluate(noisy, Gates(min_sqnr=full.sqnr_db + 40))
    assert stopped.stopped and "can reach at most" in stopped.stopped and stopped.samples == 6


def test_find_layers_requires_q_before_dq(planted):
    model, _, _, _, _, amax = planted
    stored, _ = quantize_model(model, amax, QuantizeOptions(weights="int8"))
    with pytest.raises(ValueError, match="does not follow a QuantizeLinear"):
        find_layers(stored)


def test_reference_set_reorders_state_samples_along_their_own_axis():
    from qtool.io.batch_axes import BatchLayout
    from qtool.io.model import input_specs
    from tests.tiny_models import state_step

    layout = BatchLayout.of(input_specs(state_step()))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 16)).astype(np.float32)
    state = rng.normal(size=(2, 10, 8)).astype(np.float32)
    batches = [{"x": x[i:i + 4], "state": state[:, i:i + 4], "sr": np.array(16000)}
               for i in range(0, 10, 4)]

    def run(feeds):  # logits from x and the state's first row; margins differ per sample
        return {"y": feeds["x"][:, :3] * 3 + feeds["state"][0, :, :3]}

    reference = ReferenceSet(run, batches, layout, classification=True)
    assert reference.counts == [4, 4, 2] and reference.samples == 10
    for feeds, outputs, _ in reference.batches:
        np.testing.assert_array_equal(outputs["y"], run(feeds)["y"])  # samples stayed whole
        assert feeds["sr"] == 16000 and feeds["state"].shape[1] == len(feeds["x"])
    logits = np.concatenate([o["y"] for _, o, _ in reference.batches])
    top2 = np.sort(logits, axis=1)[:, -2:]
    assert list(top2[:, 1] - top2[:, 0]) == sorted(top2[:, 1] - top2[:, 0])

    def run_with_state(feeds):  # an output with the samples on axis 1: left in data order
        return {**run(feeds), "new_state": feeds["state"]}

    kept = ReferenceSet(run_with_state, batches, layout, classification=True)
    assert all(a[0] is b for a, b in zip(kept.batches, batches))
    assert kept.evaluate(run_with_state).samples == 10
