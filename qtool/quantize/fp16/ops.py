"""Op types the FP16 conversion treats specially."""

from __future__ import annotations

from qtool.graph.op_types import DEQUANTIZE_LINEAR, QUANTIZE_LINEAR

# Kept in float32 by default. Accuracy: detection post-processing compares close scores and
# coordinates beyond 2048; running sums and sums of squares/products overflow float16's 65504.
# onnxruntime: its expansion of MeanVarianceNormalization mixes float32 constants into float16.
DEFAULT_FP32_OPS = frozenset({
    "NonMaxSuppression", "TopK", "RoiAlign",
    "CumSum", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "ReduceProd",
    "MeanVarianceNormalization",
})
# Output types set by attributes this pass does not rewrite.
ALWAYS_FP32_OPS = frozenset({
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
    "Bernoulli", "EyeLike", "BitCast",
})
# Scatters that accumulate (reduction add/mul/max/min) sum in float16 and have no float16
# onnxruntime CPU kernel.
ACCUMULATING_SCATTERS = ("ScatterElements", "ScatterND")
Q, DQ = QUANTIZE_LINEAR, DEQUANTIZE_LINEAR
# The first opset whose DequantizeLinear outputs its scale's type (float16 straight into the op).
FP16_QDQ_OPSET = 19
