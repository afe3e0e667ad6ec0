"""A quantized model whose activation scales are inputs: one onnxruntime session scores any set of
activation thresholds, with no model rebuilt and no session recreated per candidate.

The probe is the model `quantize_model` writes (same placement, same per-channel weights, same
bias correction), except that the scale of every activation Q/DQ pair is a graph input instead of
a constant. onnxruntime then cannot fuse the pairs into integer kernels and runs them as they are
written: quantize, dequantize, float op. That is the fake-quantization TensorRT's INT8 kernels
approximate, so a threshold set that scores better here is better for the engine.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qtool.graph.facts import ModelFacts
from qtool.quantize.api import quantize_model
from qtool.quantize.options import QuantizeOptions
from qtool.quantize.scales import scale_from_amax


class ThresholdProbe:
    """Runs the quantized model for any activation amax per tensor (see the module doc)."""

    def __init__(self, model: onnx.ModelProto, amax: dict[str, float],
                 options: QuantizeOptions | None = None, channel_means=None, providers=None,
                 facts: ModelFacts | None = None):
        """`model`: the FP32 model with its weights loaded; `amax`: one threshold per tensor the
        calibration observed (any method: only which tensors have one matters here);
        `providers`: where onnxruntime runs (qtool.backends.onnxruntime.providers; default
        the CPU);
        `facts`: the model's facts (qtool.graph.facts), when the caller has them."""
        from qtool.backends.onnxruntime.session import create_session

        options = QuantizeOptions(**vars(options or QuantizeOptions()))
        options.weights = "int8"  # DQ-only weights: fewer nodes to run, the same numerics
        options.high_precision = "fp32"
        quantized, summary = quantize_model(model, amax, options, channel_means=channel_means,
                                            facts=facts)
        _fold_weight_dequantization(quantized)
        self.scale_inputs = _expose_activation_scales(quantized)
        self.tensors = sorted(self.scale_inputs)
        # tensors sharing one scale (Concat inputs) take the largest amax of their group
        self._groups = {name: [name] for name in self.tensors}
        for group in summary.shared_scale_groups:
            for name in group:
                self._groups[name] = group
        self.output_names = [value.name for value in model.graph.output]
        self.session = create_session(quantized, providers)
        known = {value.name for value in self.session.get_inputs()}
        self._data_inputs = [value.name for value in model.graph.input if value.name in known]

    def scales(self, amax: dict[str, float]) -> dict[str, np.ndarray]:
        """The scale feeds for one threshold set (every probed tensor needs an amax)."""
        feeds = {}
        for name, scale_input in self.scale_inputs.items():
            group_amax = max(amax[member] for member in self._groups[name])
            feeds[scale_input] = np.asarray(scale_from_amax(group_amax, name), dtype=np.float32)
        return feeds

    def run(self, feeds: dict[str, np.ndarray], amax: dict[str, float]) -> list[np.ndarray]:
        """The model's outputs (in graph order) for one batch under the thresholds `amax`."""
        from qtool.backends.onnxruntime.session import run_session

        inputs = {name: feeds[name] for name in self._data_inputs}
        inputs.update(self.scales(amax))
        return run_session(self.session, inputs, self.output_names)


def _fold_weight_dequantization(model: onnx.ModelProto) -> None:
    """Replace each DequantizeLinear of a constant INT8 weight by its float result (in place).
    The values are the same (int8 times a float32 scale, zero-point 0), but onnxruntime can
    prepack constant weights for its convolutions: the probe runs 2-3x faster."""
    constants = {init.name: init for init in model.graph.initializer}
    kept, folded = [], []
    for node in model.graph.node:
        source = constants.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if source is None or source.data_type != onnx.TensorProto.INT8:
            kept.append(node)
            continue
        values = numpy_helper.to_array(source).astype(np.float32)
        scale = numpy_helper.to_array(constants[node.input[1]]).astype(np.float32)
        axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 1)
        if scale.ndim:  # per channel: broadcast along the weight's axis
            shape = [1] * values.ndim
            shape[axis] = scale.size
            scale = scale.reshape(shape)
        folded.append(numpy_helper.from_array(values * scale, node.output[0]))
    del model.graph.node[:]
    model.graph.node.extend(kept)
    model.graph.initializer.extend(folded)


def _expose_activation_scales(model: onnx.ModelProto) -> dict[str, str]:
    """Turn each activation pair's scale initializer into a scalar float graph input (in place);
    returns quantized tensor -> scale input name. Weight scales (read by a DequantizeLinear of a
    constant) stay constants."""
    constants = {init.name for init in model.graph.initializer}
    scales = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in constants:
            scales[node.input[0]] = node.input[1]
    wanted = set(scales.values())
    kept = [init for init in model.graph.initializer if init.name not in wanted]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    # before IR 4 initializers are also graph inputs: drop those declarations, then add ours
    declared = [value for value in model.graph.input if value.name not in wanted]
    del model.graph.input[:]
    model.graph.input.extend(declared)
    model.graph.input.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [])
                             for name in sorted(wanted))
    return scales
