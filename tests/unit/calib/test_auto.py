"""Method auto: the score, the sample slice, the probe against a numpy fake-quant reference, and
the search on constructed cases whose right answer is known."""

import json
import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.calib.api import CalibrateOptions, calibrate
from qtool.calib.auto import (
    Score,
    SliceTap,
    choose_thresholds,
    estimated_sqnrs,
    score_outputs,
)
from qtool.calib.calibfile import read_calibration
from qtool.calib.histogram import AbsHistogram
from qtool.calib.merge import merge, rethreshold
from qtool.calib.probe import ThresholdProbe
from qtool.errors import QtoolError
from qtool.quantize.options import QuantizeOptions
from tests.tiny_models import _model, conv_relu_gemm, save


def sqnr(ref, out):
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    return 10 * math.log10(np.sum(ref ** 2) / np.sum((out - ref) ** 2))


def test_score_is_the_mean_of_per_output_sqnrs():
    rng = np.random.default_rng(0)
    big, small = rng.normal(size=(2, 3, 50)) * 1000, rng.normal(size=(2, 3, 50)) * 0.001
    big_out, small_out = big + rng.normal(size=big.shape), small * 1.1
    refs = [[big[i].astype(np.float32), small[i].astype(np.float32)] for i in range(2)]
    outs = [[big_out[i].astype(np.float32), small_out[i].astype(np.float32)] for i in range(2)]
    score = score_outputs(refs, outs)
    expected = (sqnr(big.astype(np.float32), big_out.astype(np.float32))
                + sqnr(small.astype(np.float32), small_out.astype(np.float32))) / 2
    assert score.sqnr_db == pytest.approx(expected, abs=1e-9)
    assert math.isnan(score.agreement)


def test_score_skips_integer_outputs_and_caps_exact_ones():
    ref = [[np.ones((2, 3), np.float32), np.arange(6).reshape(2, 3)]]
    assert score_outputs(ref, ref).sqnr_db == 80.0


def test_classification_score_counts_agreement_first():
    ref = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.9]], np.float32)
    flipped = np.array([[3.0, 1.0, 0.0], [0.0, 1.9, 2.0]], np.float32)  # small noise, one flip
    noisy = ref + np.array([[0.5, -0.5, 0.5], [0.0, 0.0, 0.0]], np.float32)  # more noise, no flip
    flip_score = score_outputs([[ref]], [[flipped]], classification=True)
    noisy_score = score_outputs([[ref]], [[noisy]], classification=True)
    assert flip_score.agreement == 0.5 and noisy_score.agreement == 1.0
    assert flip_score.sqnr_db > noisy_score.sqnr_db
    assert noisy_score.beats(flip_score) and not flip_score.beats(noisy_score)


def test_score_gains_below_the_epsilon_do_not_count():
    assert not Score(math.nan, 20.005).beats(Score(math.nan, 20.0))
    assert Score(math.nan, 20.02).beats(Score(math.nan, 20.0))


def layout_of(**shapes):
    from qtool.io.batch_axes import BatchLayout
    from qtool.io.model import InputSpec

    return BatchLayout.of([InputSpec(name, np.dtype(np.float64), shape)
                           for name, shape in shapes.items()])


def test_slice_tap_passes_batches_through_and_keeps_an_even_spread():
    batches = [{"x": np.full((4, 2), float(i))} for i in range(10)]  # 40 samples, ids i
    tap = SliceTap(capacity=8, layout=layout_of(x=("N", 2)))
    passed = list(tap.wrap(iter(batches)))
    assert all(a is b for a, b in zip(passed, batches))
    kept = [float(unit["x"][0, 0]) for unit in tap.units]
    # 40 samples thinned by halving to at most 8: every 8th sample (0, 8, 16, 24, 32)
    assert kept == [0.0, 2.0, 4.0, 6.0, 8.0]
    probe_batches = tap.batches()
    assert [b["x"].shape for b in probe_batches] == [(4, 2), (1, 2)]  # as the data batched


def test_slice_tap_never_joins_more_samples_than_the_data_batches_held():
    tap = SliceTap(capacity=8, layout=layout_of(x=(1, 3)))
    list(tap.wrap([{"x": np.full((1, 3), float(i))} for i in range(5)]))  # a fixed batch of 1
    assert [b["x"].shape for b in tap.batches()] == [(1, 3)] * 5
    tap = SliceTap(capacity=8, layout=layout_of(x=("N", 3)))
    list(tap.wrap([{"x": np.zeros((3, 3))} for _ in range(2)]))
    assert [b["x"].shape for b in tap.batches()] == [(3, 3), (3, 3)]


def test_slice_tap_keeps_batches_without_a_batch_axis_whole():
    feeds = {"x": np.zeros((3, 2), np.float32), "state": np.zeros((2, 3, 4), np.float32)}
    tap = SliceTap(capacity=4, layout=layout_of(x=(3, 2), state=(2, 3, 4)))
    list(tap.wrap([feeds, feeds]))
    assert len(tap.units) == 2 and tap.units[0]["state"].shape == (2, 3, 4)
    assert [b["x"].shape for b in tap.batches()] == [(3, 2), (3, 2)]  # never joined



def test_slice_tap_with_batch_axes_keeps_samples_and_joins_them_on_each_axis():
    from qtool.io.batch_axes import BatchLayout
    from qtool.io.model import input_specs
    from tests.tiny_models import state_step

    layout = BatchLayout.of(input_specs(state_step()))
    batches = [{"x": np.full((3, 16), float(i), np.float32),
                "state": np.stack([np.full((3, 8), float(i), np.float32)] * 2),
                "sr": np.array(16000 if i < 3 else 8000)} for i in range(4)]
    tap = SliceTap(capacity=16, layout=layout)
    list(tap.wrap(batches))
    assert len(tap.units) == 12 and tap.units[0]["state"].shape == (2, 1, 8)
    probes = tap.batches()
    # at most 3 samples a batch (the data's own batch size); sr 8000 is never joined with 16000
    assert [(b["x"].shape[0], b["state"].shape[1], int(b["sr"])) for b in probes] == [
        (3, 3, 16000), (3, 3, 16000), (3, 3, 16000), (3, 3, 8000)]
    assert tap.sizes == [3, 3, 3, 3]
    np.testing.assert_array_equal(probes[1]["state"][0, :, 0], [1, 1, 1])


def matmul_chain(k=6, n=5, seed=0):
    """x[N,k] -> MatMul(w1[k,n]) -> h -> MatMul(w2[n,3]) -> y."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(k, n)).astype(np.float32)
    w2 = rng.normal(size=(n, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm2")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                   [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return model, w1, w2


def fake_quant(x, amax, axis=None):
    """Symmetric INT8 quantize-dequantize in numpy (per tensor, or per channel along `axis`)."""
    x = np.asarray(x, np.float32)
    if axis is None:
        scale = np.float32(amax / 127)
    else:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale = (np.abs(x).max(axis=tuple(i for i in range(x.ndim) if i != axis)) / 127
                 ).astype(np.float32).reshape(shape)
    return (np.clip(np.rint(x / scale), -128, 127) * scale).astype(np.float32)


def test_probe_matches_numpy_fake_quantization_for_any_thresholds():
    model, w1, w2 = matmul_chain()
    x = np.random.default_rng(1).normal(size=(7, 6)).astype(np.float32)
    probe = ThresholdProbe(model, {"x": 1.0, "h": 1.0}, QuantizeOptions(bias_correction=False))
    assert probe.tensors == ["h", "x"]
    for amax in ({"x": 2.5, "h": 4.0}, {"x": 0.7, "h": 9.0}):
        h = fake_quant(x, amax["x"]) @ fake_quant(w1, None, axis=1)
        expected = fake_quant(h, amax["h"]) @ fake_quant(w2, None, axis=1)
        (out,) = probe.run({"x": x}, amax)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_probe_shares_one_scale_across_a_concat():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    w = numpy_helper.from_array(np.eye(4, 2, dtype=np.float32), "w")
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["b"]),
             helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
             helper.make_node("MatMul", ["c", "w8"], ["y"])]
    w8 = numpy_helper.from_array(np.ones((8, 2), np.float32), "w8")
    model = _model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
                   [w, w8])
    probe = ThresholdProbe(model, {"a": 1.0, "b": 1.0, "c": 1.0},
                           QuantizeOptions(bias_correction=False))
    feeds = probe.scales({"a": 1.0, "b": 3.0, "c": 3.0})
    assert {float(value) for value in feeds.values()} == {np.float32(3.0) / np.float32(127)}


def chain_case(seed=0):
    """The matmul chain, its FP32 references on 4 batches, and a probe."""
    model, w1, w2 = matmul_chain(seed=seed)
    rng = np.random.default_rng(seed + 10)
    batches = [{"x": rng.normal(size=(4, 6)).astype(np.float32)} for _ in range(4)]
    references = [[(b["x"] @ w1) @ w2] for b in batches]
    probe = ThresholdProbe(model, {"x": 1.0, "h": 1.0}, QuantizeOptions(bias_correction=False))
    x_max = max(float(np.abs(b["x"]).max()) for b in batches)
    h_max = max(float(np.abs(b["x"] @ w1).max()) for b in batches)
    return probe, batches, references, x_max, h_max


def estimates_for(values: dict[str, float], candidates: dict[str, dict[str, float]]) -> dict:
    """The candidates' estimated SQNRs on histograms of values spread evenly over +-values."""
    hists = {}
    for name, top in values.items():
        hist = AbsHistogram(128)
        hist.update(np.linspace(-top, top, 1001, dtype=np.float32))
        hists[name] = hist
    return estimated_sqnrs(hists, candidates)


def test_per_model_choice_picks_the_set_that_keeps_the_outputs():
    probe, batches, references, x_max, h_max = chain_case()
    candidates = {"mse": {"x": x_max * 40, "h": h_max * 40},   # wastes the range
                  "max": {"x": x_max, "h": h_max}}
    choice = choose_thresholds(probe.run, batches, references, candidates, {},
                               estimates_for({"x": x_max, "h": h_max}, candidates),
                               budget=0)
    assert choice.model_method == "max" and choice.methods == {"x": "max", "h": "max"}
    assert choice.amax == {"x": x_max, "h": h_max}
    assert choice.model_scores["max"].sqnr_db > choice.model_scores["mse"].sqnr_db + 10
    assert choice.sample_runs == 2 * 16 and choice.refined == []  # no budget past phase 1


def test_per_tensor_search_fixes_the_tensor_the_model_choice_got_wrong():
    probe, batches, references, x_max, h_max = chain_case()
    # each method is right for one tensor only; the per-model winner leaves one tensor bad
    candidates = {"mse": {"x": x_max, "h": h_max * 60}, "max": {"x": x_max * 60, "h": h_max}}
    choice = choose_thresholds(probe.run, batches, references, candidates, {},
                               estimates_for({"x": x_max, "h": h_max}, candidates),
                               budget=1000)
    assert choice.amax == {"x": x_max, "h": h_max}
    winner = choice.model_method
    fixed = "h" if winner == "mse" else "x"
    assert choice.refined == [fixed]
    assert choice.methods[fixed] != winner
    scores = choice.tensor_scores[fixed]
    assert set(scores) == {"mse", "max"}


def test_a_change_that_helps_only_the_samples_it_was_chosen_on_is_rejected():
    # half A is batches 0 and 2, half B batches 1 and 3: the alternative threshold of "t" is
    # better on A and worse on B, so it must not be kept
    references = [[np.full((1, 10), 1.0, np.float32)] for _ in range(4)]

    def run(feeds, amax):
        index = int(feeds["i"][0])
        good_on_a = amax["t"] == 2.0
        error = 0.01 if (good_on_a == (index % 2 == 0)) else 0.1
        return [np.full((1, 10), 1.0 + error, np.float32)]

    batches = [{"i": np.array([i])} for i in range(4)]
    candidates = {"mse": {"t": 1.0}, "max": {"t": 2.0}}
    # phase 1 over all four batches is a tie, so mse (the more robust method) wins it
    choice = choose_thresholds(run, batches, references, candidates, {},
                               estimates_for({"t": 2.0}, candidates), budget=100)
    assert choice.model_method == "mse"
    assert "t" in choice.tensor_scores  # tried: max is better on half A ...
    assert choice.tensor_scores["t"]["max"].beats(choice.tensor_scores["t"]["mse"])
    assert choice.refined == [] and choice.amax == {"t": 1.0}  # ... but not kept


@pytest.fixture
def conv_data(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "data"
    folder.mkdir()
    for index in range(6):
        np.save(folder / f"b{index}.npy", rng.normal(size=(4, 2, 6, 6)).astype(np.float32))
    return folder


def test_calibrate_auto_records_the_choice_and_round_trips(tmp_path, conv_data):
    from qtool.calib.calibfile import write_calibration

    model = save(conv_relu_gemm(), tmp_path / "net.onnx")
    result = calibrate(model, conv_data, CalibrateOptions(method="auto"))
    calibration = result.calibration
    assert calibration.method == "auto"
    record = calibration.auto
    assert set(record["model_scores"]) == {"mse", "percentile", "entropy", "max"}
    assert record["slice_samples"] == 24 and record["budget"] == 24
    for tensor in calibration.tensors.values():
        if tensor.rule == "bounded":
            continue
        assert tensor.method in record["model_scores"]
        # the amax is the winning method's candidate
        assert tensor.amax == tensor.candidates[tensor.method]["amax"]
    write_calibration(calibration, tmp_path / "c.json", result.histograms, result.means)
    again = read_calibration(tmp_path / "c.json")
    assert again.auto == json.loads(json.dumps(record))
    assert {n: t.method for n, t in again.tensors.items()} == {
        n: t.method for n, t in calibration.tensors.items()}
    # re-thresholding with auto re-applies each tensor's method to the stored histograms
    assert rethreshold(again, "auto", {"percentile": 99.99}).calibration.amax == calibration.amax


def test_auto_needs_a_choice_to_re_apply(tmp_path, conv_data):
    from qtool.calib.calibfile import write_calibration

    model = save(conv_relu_gemm(), tmp_path / "net.onnx")
    result = calibrate(model, conv_data, CalibrateOptions(method="entropy"))
    write_calibration(result.calibration, tmp_path / "c.json", result.histograms, result.means)
    with pytest.raises(QtoolError, match="method auto needs calibration data"):
        rethreshold(read_calibration(tmp_path / "c.json"), "auto", {})


def test_auto_shards_take_mse_and_merge_re_applies_the_methods(tmp_path, conv_data):
    from qtool.calib.calibfile import write_calibration

    model = save(conv_relu_gemm(), tmp_path / "net.onnx")
    shards = []
    for index in range(2):
        result = calibrate(model, conv_data, CalibrateOptions(method="auto", shard=f"{index}/2"))
        assert result.calibration.auto["reason"] == "a shard"
        path = tmp_path / f"s{index}.json"
        write_calibration(result.calibration, path, result.histograms, result.means)
        shards.append(read_calibration(path))
    merged = merge(shards).calibration
    whole = calibrate(model, conv_data, CalibrateOptions(method="mse")).calibration
    assert merged.method == "auto" and merged.amax == whole.amax


def test_too_few_samples_fall_back_to_mse(tmp_path, caplog):
    model = save(conv_relu_gemm(), tmp_path / "net.onnx")
    data = tmp_path / "few.npy"
    np.save(data, np.random.default_rng(0).normal(size=(3, 2, 6, 6)).astype(np.float32))
    result = calibrate(model, data, CalibrateOptions(method="auto"))
    mse = calibrate(model, data, CalibrateOptions(method="mse"))
    assert result.calibration.amax == mse.calibration.amax
    assert "fewer than 8 samples" in caplog.text
