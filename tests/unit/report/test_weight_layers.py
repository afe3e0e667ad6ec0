"""Per-layer weight scales and flagged channels, from FP32 models (the quantizer's plan) and from
Q/DQ models (their DequantizeLinear scales), against reference loops."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qtool.quantize.api import quantize_model
from qtool.quantize.options import QuantizeOptions
from qtool.report.weight_layers import (
    ALL_ZERO,
    ROUNDS_TO_ZERO,
    TINY_SCALE,
    analyse_layers,
    flag_channels,
)

FLOOR = 1e-12  # qtool.quantize.scales.MIN_SCALE


def ref_channel_scales(weight: np.ndarray, axis: int) -> np.ndarray:
    """max|w| / 127 per channel, one channel at a time, in float64 then float32, floored."""
    out = []
    for c in range(weight.shape[axis]):
        peak = float(np.abs(np.take(weight, c, axis=axis).astype(np.float64)).max())
        out.append(max(np.float32(peak / 127), np.float32(FLOOR)))
    return np.array(out, dtype=np.float32)


def conv_weight() -> np.ndarray:
    """8 output channels: 0 all zero, 1 tiny next to the rest, 2..7 ordinary."""
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(8, 2, 3, 3)).astype(np.float32)
    weight[0] = 0.0
    weight[1] = weight[1] * np.float32(1e-6)
    return weight


def conv_gemm_matmul_model(weight: np.ndarray) -> onnx.ModelProto:
    """x -> Conv(weight) -> GlobalAveragePool -> Flatten -> Gemm(transB=0) -> MatMul -> y."""
    rng = np.random.default_rng(4)
    gemm_w = rng.normal(size=(8, 5)).astype(np.float32)   # [K, N], transB = 0: channels axis 1
    matmul_w = rng.normal(size=(5, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["conv"], ["pool"], name="gap"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "gw"], ["fc"], name="fc"),
        helper.make_node("MatMul", ["fc", "mw"], ["y"], name="head"),
    ]
    graph = helper.make_graph(
        nodes, "layers", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(gemm_w, "gw"),
         numpy_helper.from_array(matmul_w, "mw")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


AMAX = {"x": 3.0, "conv": 2.0, "flat": 2.0, "fc": 5.0}


def weights_of(model):
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


@pytest.mark.parametrize("source", ["plan", "qdq-fp32", "qdq-int8"])
def test_per_channel_scales_axes_and_flags(source):
    weight = conv_weight()
    model = conv_gemm_matmul_model(weight)
    values = weights_of(model)
    if source != "plan":
        model, _ = quantize_model(model, AMAX, QuantizeOptions(weights=source[4:]))
    analysis = analyse_layers(model, AMAX)
    assert analysis.source == ("plan" if source == "plan" else "qdq")
    assert [(layer.node, layer.op_type, layer.axis) for layer in analysis.layers] == [
        ("conv", "Conv", 0), ("fc", "Gemm", 1), ("head", "MatMul", 1)]
    stored = "_quantized" if source == "qdq-int8" else ""  # the INT8 initializer's name
    for layer, (name, axis) in zip(analysis.layers, [("w", 0), ("gw", 1), ("mw", 1)]):
        assert layer.weight == name + stored
        np.testing.assert_array_equal(layer.scales, ref_channel_scales(values[name], axis))
        low, median, high = layer.spread()
        scales = ref_channel_scales(values[name], axis).astype(np.float64)
        assert (low, median, high) == (scales.min(), float(np.median(scales)), scales.max())
    conv = analysis.layers[0]
    assert [(flag.channel, flag.reason) for flag in conv.flagged] == [(0, ALL_ZERO),
                                                                      (1, TINY_SCALE)]
    assert conv.flagged[0].scale == pytest.approx(FLOOR)
    assert analysis.layers[1].flagged == [] and analysis.layers[2].flagged == []
    assert analysis.weighted_nodes == 3
    # Conv, GlobalAveragePool, Gemm, MatMul run on quantized inputs; x, conv, flat, fc get Q/DQ.
    assert analysis.quantized_nodes == 4
    assert analysis.activation_tensors == 4
    assert analysis.kept == []


@pytest.mark.parametrize("storage", ["fp32", "int8"])
def test_per_tensor_weights_flag_channels_that_round_to_zero(storage):
    weight = conv_weight()
    weight[2] = weight[2] * np.float32(1e-3)   # small next to the largest: rounds to 0
    model = conv_gemm_matmul_model(weight)
    quantized, _ = quantize_model(model, AMAX, QuantizeOptions(per_tensor_weights=True,
                                                               weights=storage))
    conv = analyse_layers(quantized, AMAX).layers[0]
    assert conv.axis is None and conv.per_channel is False
    scale = np.float32(np.abs(weight.astype(np.float64)).max() / 127)
    np.testing.assert_array_equal(conv.scales, [scale])
    # Channel analysis along the output-channel axis; reference: every weight rounds to 0.
    # INT8 storage keeps only the rounded values, so such a channel reads as all zero there.
    expected = []
    for c in range(weight.shape[0]):
        q = np.rint(weight[c] / scale)
        if not weight[c].any() or (storage == "int8" and not q.any()):
            expected.append((c, ALL_ZERO))
        elif not q.any():
            expected.append((c, ROUNDS_TO_ZERO))
    assert [(flag.channel, flag.reason) for flag in conv.flagged] == expected
    assert [c for c, _ in expected] == [0, 1, 2]
    assert conv.channels == 8


def test_flag_rules_on_hand_made_scales():
    scales = np.array([1.0, 2.0, 0.0015, 0.0025, 3.0], dtype=np.float32)
    amax = scales * 127
    amax[4] = 0.0
    flags = flag_channels(scales, amax, per_channel=True)
    # median 1.0: 0.0015 is above 1e-3 x median, so only channel 4 (all zero) ... and none tiny
    assert [(f.channel, f.reason) for f in flags] == [(4, ALL_ZERO)]
    scales[2] = 0.0009
    flags = flag_channels(scales, scales * 127, per_channel=True)
    assert [(f.channel, f.reason) for f in flags] == [(2, TINY_SCALE)]
    # Per tensor: max|w_c| <= scale / 2 rounds to zero, just above it survives.
    flags = flag_channels(np.array([2.0], np.float32), np.array([1.0, 1.0001, 0.0, 7.0]),
                          per_channel=False)
    assert [(f.channel, f.reason) for f in flags] == [(0, ROUNDS_TO_ZERO), (2, ALL_ZERO)]
    assert flag_channels(np.array([1.0], np.float32), None, per_channel=False) == []


def test_layers_left_in_high_precision_are_listed():
    model = conv_gemm_matmul_model(conv_weight())
    amax = {name: value for name, value in AMAX.items() if name != "fc"}  # head uncalibrated
    plan = analyse_layers(model, amax)
    assert [layer.node for layer in plan.layers] == ["conv", "fc"]
    assert [(kept.node, kept.op_type) for kept in plan.kept] == [("head", "MatMul")]
    assert plan.kept[0].reason.startswith("no_calibration")
    quantized, _ = quantize_model(model, amax)
    qdq = analyse_layers(quantized)
    assert [layer.node for layer in qdq.layers] == ["conv", "fc"]
    assert [(kept.node, kept.reason) for kept in qdq.kept] == [("head", "no Q/DQ on its inputs")]
