#!/usr/bin/env python3
"""How much data-aware weight rounding would gain on EfficientNet-Lite0: an experiment, not a
qtool feature (yet).

Every Conv weight is quantized per output channel on qtool's grid (scale = max|w| / 127), once by
rounding each weight to the nearest level and once GPTQ-style: the weights of a channel are
rounded one input position at a time, and each rounding error is pushed onto the positions not
yet rounded through the inverse of H = X X^T, the second moments of the layer's input patches X
measured on calibration photos (1% of the mean diagonal added for stability). Both results keep
plain per-channel INT8 weights. Reported: the logit SQNR of the weights-only model against FP32
on the held-out (odd-position) photos, and of the whole INT8 model (thresholds of qtool
calibrate --method mse on the even-position photos, then qtool quantize: from the original
weights with and without bias correction, and from the GPTQ-rounded ones). H comes from the
first even-position photos (--calib-samples).

    .venv/bin/python scripts/bench_weight_rounding.py [--calib-samples 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from onnx import numpy_helper

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_accuracy import ASSETS, PREPROCESS, image_subset, logits, sqnr_db

from qtool.backends.onnxruntime.session import create_session
from qtool.calib.api import CalibrateOptions, calibrate
from qtool.calib.calibfile import channel_means
from qtool.graph.constants import constant_node_value
from qtool.io.data import open_data
from qtool.io.model import input_specs, load_model, save_model
from qtool.quantize.api import quantize_model
from qtool.quantize.options import QuantizeOptions

DAMPING = 0.01


def attribute(node, name, default):
    for attr in node.attribute:
        if attr.name == name:
            return list(attr.ints) if attr.ints else attr.i
    return default


class Weights:
    """Read and replace Conv weights held as initializers or Constant nodes."""

    def __init__(self, model):
        self.inits = {init.name: init for init in model.graph.initializer}
        self.consts = {node.output[0]: node for node in model.graph.node if node.op_type == "Constant"}

    def get(self, name) -> np.ndarray:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        return constant_node_value(self.consts[name])

    def set(self, name, value: np.ndarray) -> None:
        tensor = numpy_helper.from_array(value.astype(np.float32), name)
        if name in self.inits:
            self.inits[name].CopyFrom(tensor)
        else:
            self.consts[name].attribute[0].t.CopyFrom(tensor)


def patches(x: np.ndarray, node, kernel: int) -> np.ndarray:
    """Input patches [channels, kernel*kernel, positions] in the weight's (c, kh, kw) order."""
    stride = attribute(node, "strides", [1, 1])[0]
    top, left, bottom, right = attribute(node, "pads", [0, 0, 0, 0])
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    count, channels, height, width = x.shape
    out_h, out_w = (height - kernel) // stride + 1, (width - kernel) // stride + 1
    cols = np.stack([x[:, :, i:i + stride * out_h:stride, j:j + stride * out_w:stride]
                     .reshape(count, channels, -1) for i in range(kernel) for j in range(kernel)], 2)
    return cols.transpose(1, 2, 0, 3).reshape(channels, kernel * kernel, -1).astype(np.float64)


def second_moments(model, convs, batches) -> dict[str, np.ndarray]:
    """H per Conv: [K, K] for a dense conv (K = in channels x kernel area), [C, k, k] for a
    depthwise one (one small H per channel)."""
    session = create_session(model, extra_outputs=[node.input[0] for node in convs])
    weights = Weights(model)
    moments: dict[str, np.ndarray] = {}
    for feeds in batches:
        for node, x in zip(convs, session.run([n.input[0] for n in convs], feeds)):
            cols = patches(x, node, weights.get(node.input[1]).shape[2])
            if attribute(node, "group", 1) == 1:
                flat = cols.reshape(-1, cols.shape[-1])
                value = flat @ flat.T
            else:
                value = np.einsum("cin,cjn->cij", cols, cols)
            moments[node.output[0]] = moments.get(node.output[0], 0) + value
    return moments


def round_rows(weights: np.ndarray, moments: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """GPTQ-style rounding of rows sharing one H; scales: one per row."""
    work = weights.astype(np.float64).copy()
    size = work.shape[1]
    damping = DAMPING * np.mean(np.diag(moments))
    # a dead input (all zeros) leaves nothing to weigh: plain nearest rounding there
    moments = moments + np.eye(size) * (damping if damping > 0 else 1.0)
    upper = np.linalg.cholesky(np.linalg.inv(moments)).T
    rounded = np.zeros_like(work)
    for i in range(size):
        rounded[:, i] = np.clip(np.rint(work[:, i] / scales), -128, 127) * scales
        error = (work[:, i] - rounded[:, i]) / upper[i, i]
        work[:, i + 1:] -= np.outer(error, upper[i, i + 1:])
    return rounded


def rounded_model(path: Path, batches, mode: str):
    model = load_model(path)
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    moments = second_moments(model, convs, batches) if mode == "gptq" else {}
    weights = Weights(model)
    for node in convs:
        original = weights.get(node.input[1])
        rows = original.reshape(original.shape[0], -1)
        scales = np.abs(rows).max(1) / 127
        scales[scales == 0] = 1
        if mode == "nearest":
            rounded = np.clip(np.rint(rows / scales[:, None]), -128, 127) * scales[:, None]
        elif attribute(node, "group", 1) == 1:
            rounded = round_rows(rows, moments[node.output[0]], scales)
        else:
            rounded = np.stack([round_rows(rows[c:c + 1], moments[node.output[0]][c], scales[c:c + 1])[0]
                                for c in range(rows.shape[0])])
        weights.set(node.input[1], rounded.reshape(original.shape))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ASSETS / "efficientnet_lite0.onnx")
    parser.add_argument("--images", type=Path, default=ASSETS / "imagenet200")
    parser.add_argument("--calib-samples", type=int, default=32)
    args = parser.parse_args()
    if not args.model.is_file():
        sys.exit(f"model not found: {args.model} (see ../shared/assets/README.md)")
    specs = input_specs(load_model(args.model, load_weights=False))
    everything = list(open_data(args.images, specs, preprocess=PREPROCESS, batch_size=50))
    reference = logits(load_model(args.model), everything)
    odd = np.arange(len(reference)) % 2 == 1
    with tempfile.TemporaryDirectory() as tmp:
        even = image_subset(args.images, lambda i: i % 2 == 0, Path(tmp) / "even")
        calib = list(open_data(even, specs, preprocess=PREPROCESS, batch_size=8,
                               num_samples=args.calib_samples))
        result = calibrate(args.model, even, CalibrateOptions(method="mse", batch_size=8,
                                                              preprocess=PREPROCESS))
        for mode in ("nearest", "gptq"):
            model = rounded_model(args.model, calib, mode)
            weights_only = logits(model, everything)[odd]
            print(f"{mode:<8} weights only (Conv): {sqnr_db(reference[odd], weights_only):6.2f} dB",
                  flush=True)
            # nearest is what qtool quantize does itself, from the original weights (so bias
            # correction sees their rounding error); GPTQ's weights are already on the grid,
            # where bias correction has no rounding error left to correct
            path = args.model
            if mode == "gptq":
                path = Path(tmp) / "gptq.onnx"
                save_model(model, path)
            for corrected in (True, False) if mode == "nearest" else (False,):
                quantized, _ = quantize_model(
                    load_model(path), result.calibration.amax,
                    QuantizeOptions(bias_correction=corrected),
                    channel_means=channel_means(result.means) if corrected else None)
                out = logits(quantized, everything)[odd]
                print(f"{mode:<8} whole INT8 model, bias correction {'on ' if corrected else 'off'}: "
                      f"{sqnr_db(reference[odd], out):6.2f} dB", flush=True)


if __name__ == "__main__":
    main()
