"""Statistics onnxruntime computes inside the calibration graph, so a tensor need not leave it.

Taking a tensor out of onnxruntime as a graph output is costly for convolution networks:
onnxruntime keeps their activations in a blocked channel layout (NCHWc) and converts every
output back to NCHW. On EfficientNet-Lite0 those conversions alone made a session with the
observed tensors 1.75x slower than plain inference. Two statistics need far less than the whole
tensor, and global pooling runs in the blocked layout without any conversion:

- max|x| of a tensor whose values are never negative (the output of a ReLU6 or a sigmoid, whose
  amax is its max, see qtool.graph.bounded): GlobalMaxPool gives the max per sample and channel;
- the per-channel mean of a convolution input (for bias correction): GlobalAveragePool gives the
  mean per sample and channel.

Both need a tensor of rank 3 or more with channels on axis 1 (NCHW...).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

MAX_SUFFIX = "::qtool_max"
MEAN_SUFFIX = "::qtool_mean"


def pooling_nodes(max_of: list[str], mean_of: list[str],
                  taken: set[str]) -> tuple[list[onnx.NodeProto], dict[str, str], dict[str, str]]:
    """Global pooling nodes to append to the graph: (nodes, tensor -> max output,
    tensor -> mean output). Output names avoid every name in `taken`."""
    nodes, maxima, means = [], {}, {}
    for op_type, tensors, suffix, names in (("GlobalMaxPool", max_of, MAX_SUFFIX, maxima),
                                            ("GlobalAveragePool", mean_of, MEAN_SUFFIX, means)):
        for tensor in tensors:
            name = tensor + suffix
            while name in taken:
                name += "_"
            taken.add(name)
            names[tensor] = name
            nodes.append(helper.make_node(op_type, [tensor], [name], name=name))
    return nodes, maxima, means


class PooledMax:
    """The largest |x| of a non-negative tensor, from its per-sample, per-channel maxima."""

    def __init__(self, abs_max: float = 0.0, non_finite: int = 0):
        self.abs_max = abs_max
        self.non_finite = non_finite  # channel maxima that were NaN or Inf (values unknown)

    def update(self, pooled: np.ndarray) -> None:
        pooled = np.asarray(pooled, dtype=np.float64)
        finite = np.isfinite(pooled)
        self.non_finite += int(pooled.size - np.count_nonzero(finite))
        if finite.any():
            self.abs_max = max(self.abs_max, float(np.abs(pooled[finite]).max()))
