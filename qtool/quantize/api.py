"""`quantize_model`: FP32 ONNX + calibrated amax -> QDQ INT8 ONNX for TensorRT.

The input model is never modified: the rewrite works on a copy, upgraded to opset 13 or later
(per-channel QuantizeLinear needs the `axis` attribute). Steps: place Q/DQ (the plan), correct
biases for the weight rounding (when channel means are given), insert Q/DQ, convert to FP16.
"""

from __future__ import annotations

import json

import onnx

from qtool.errors import QtoolError
from qtool.graph.facts import ModelFacts
from qtool.graph.op_types import ALREADY_QUANTIZED_OPS
from qtool.io.model import MIN_OPSET, ensure_opset, opset_version
from qtool.placement import PlacementOptions, make_plan
from qtool.placement.plan import Plan
from qtool.quantize.bias import (
    DISABLED,
    NO_CHANNEL_MEANS,
    BiasCorrection,
    ChannelMeans,
    correct_biases,
)
from qtool.quantize.insert import insert_qdq
from qtool.quantize.options import QuantizeOptions
from qtool.quantize.summary import QuantizeSummary, WeightFallback


def refuse_quantized(model: onnx.ModelProto) -> None:
    """A model that already holds quantization ops would be quantized twice."""
    found = sorted({node.op_type for node in model.graph.node if node.op_type in ALREADY_QUANTIZED_OPS})
    if found:
        raise QtoolError(
            f"the model already contains {', '.join(found)} nodes, so it is already quantized; "
            "inspect it with `qtool check` instead of quantizing it again"
        )


def placement_options(options: QuantizeOptions) -> PlacementOptions:
    """The quantize options that decide where Q/DQ goes."""
    return PlacementOptions(
        op_types=tuple(options.op_types), exclude=tuple(options.exclude),
        exclude_op_types=tuple(options.exclude_op_types),
        per_tensor_weights=options.per_tensor_weights,
        conv_transpose_per_tensor=options.conv_transpose_per_tensor)


def quantize_model(model: onnx.ModelProto, amax: dict[str, float],
                   options: QuantizeOptions | None = None,
                   in_place: bool = False, channel_means: ChannelMeans | None = None,
                   *, facts: ModelFacts | None = None, plan: Plan | None = None,
                   ) -> tuple[onnx.ModelProto, QuantizeSummary]:
    """Insert Q/DQ following TensorRT's placement rules; returns (new model, summary).

    `amax` maps activation tensor names to calibrated amax values; nodes whose activations have
    none are left in high precision and reported in the summary. `in_place=True` rewrites `model`
    itself instead of a copy: for callers that no longer need it, it saves a copy of the weights.
    `channel_means` maps activation tensor names to (channel axis, float64 mean per channel) from
    calibration; with `options.bias_correction` the biases of weight-quantized nodes absorb the
    expected shift of weight rounding (see qtool.quantize.bias). None leaves biases untouched.

    `facts`: the model's facts (qtool.graph.facts), when the caller has them already; `plan`:
    the placement made from them with these `amax` and options (qtool.placement.make_plan). Both
    are found here when not given, and both are found again when the model needs an opset
    upgrade first (the upgrade rewrites the graph they describe).
    """
    options = (options or QuantizeOptions()).validate()
    refuse_quantized(model)
    if in_place:
        work = model
    else:
        work = onnx.ModelProto()
        work.CopyFrom(model)
    opset_in = opset_version(work)
    upgraded = ensure_opset(work, MIN_OPSET)
    if upgraded is not work:
        facts = plan = None  # the upgrade rewrote the graph they describe
    work = upgraded
    if plan is None:
        plan = make_plan(facts or ModelFacts.of(work), amax, placement_options(options))
    if not options.bias_correction:
        bias = BiasCorrection(status=DISABLED)
    elif channel_means is None:
        bias = BiasCorrection(status=NO_CHANNEL_MEANS)
    else:
        # before insertion: the weights are still float and the plan's node indices hold
        bias = correct_biases(work, plan, channel_means)
    stats = insert_qdq(work, plan, options.weights)
    if options.high_precision == "fp16":
        from qtool.quantize.fp16 import convert_to_fp16

        work = convert_to_fp16(work, keep_io_types=True)

    return work, _summary(plan, stats, bias, options, opset_in, opset_version(work))


def _summary(plan: Plan, stats, bias: BiasCorrection, options: QuantizeOptions, opset_in: int,
             opset_out: int) -> QuantizeSummary:
    quantized: dict[str, int] = {}
    for op_type in plan.quantized.values():
        quantized[op_type] = quantized.get(op_type, 0) + 1
    return QuantizeSummary(
        quantized=quantized,
        skipped=[plan.skipped[index] for index in sorted(plan.skipped)],
        activation_pairs=stats.activation_pairs,
        weights_per_channel=stats.weights_per_channel,
        weights_per_tensor=stats.weights_per_tensor,
        weight_fallbacks=[WeightFallback(spec.tensor, spec.fallback)
                          for spec in plan.weights.values() if spec.axis is None and spec.fallback],
        shared_scale_groups=plan.scale_groups(),
        unmatched_excludes=plan.unmatched_excludes,
        opset_in=opset_in,
        opset_out=opset_out,
        options=options.to_dict(),
        bias_correction=bias,
    )


def record_provenance(model: onnx.ModelProto, source_sha256: str | None = None,
                      calibration_method: str | None = None, options: dict | None = None) -> None:
    """Write what made this model into its metadata (qtool.* keys), for reproducibility."""
    from qtool.versions import tool_versions

    entries = {"qtool.tools": json.dumps(tool_versions(), sort_keys=True)}
    if source_sha256:
        entries["qtool.source_sha256"] = source_sha256
    if calibration_method:
        entries["qtool.calibration_method"] = calibration_method
    if options is not None:
        entries["qtool.quantize_options"] = json.dumps(options, sort_keys=True)
    kept = [prop for prop in model.metadata_props if prop.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
