"""What TensorRT does with each ONNX op type under explicit quantization: the one table that
placement (what gets Q/DQ), check (what a Q/DQ model should look like), calibration (what is
observed), FP16 conversion and the weight report all read, so they cannot disagree.

No imports, so the CLI can show these names in its help without loading onnx. Ordered tuples
where the order reaches users (--op-types defaults, the effective config); frozensets for
membership only. Each name is followed by the string that documents it.
"""

QUANTIZE_LINEAR = "QuantizeLinear"
DEQUANTIZE_LINEAR = "DequantizeLinear"
QDQ_OPS = (QUANTIZE_LINEAR, DEQUANTIZE_LINEAR)
"""The explicit-quantization ops; only default-domain ones count."""

ALREADY_QUANTIZED_OPS = QDQ_OPS + ("DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                                   "ConvInteger", "MatMulInteger")
"""Ops whose presence means a model is already quantized (Q/DQ or operator-style)."""

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
"""Ops with weights that TensorRT runs in INT8 when all their data inputs arrive through DQ:
a node is quantized whole (data and weight) or not at all, and its output is never quantized."""

WEIGHT_INPUT = 1
"""Input slot of a weighted op's weight (Conv/ConvTranspose W, Gemm/MatMul B)."""

WEIGHTED_DATA_INPUTS = 2
"""Leading inputs of a weighted op that take Q/DQ (data and weight); a bias after them stays
float: TensorRT quantizes it itself from the input and weight scales."""

CONSTANT_WEIGHT_OPS = frozenset({"Conv", "ConvTranspose"})
"""Weighted ops whose weight must be a build-time constant; Gemm and MatMul may multiply two
activations (attention), and then both take per-tensor Q/DQ."""

AVERAGE_POOL_OPS = ("AveragePool", "GlobalAveragePool")
"""Pools with INT8 kernels that take Q/DQ around them; worth it only where the input Q fuses
into the op producing the tensor."""

MAX_POOL_OPS = frozenset({"MaxPool", "GlobalMaxPool"})
"""Pools that need no Q/DQ of their own: they commute with a positive per-tensor scale, and
TensorRT moves the neighbouring Q/DQ across them."""

RESIDUAL_ADD_OPS = ("Add",)
"""The skip-connection op: its residual input takes Q/DQ so TensorRT fuses it into the conv
producing its other input."""

RESIDUAL_FUSING_OPS = frozenset({"Conv"})
"""Ops a residual Add fuses into, when quantized and their output feeds only that Add."""

FOLDED_INTO_CONV_OPS = frozenset({"BatchNormalization"})
"""Ops TensorRT folds into the preceding conv before fusing a residual Add."""

SCALE_SHARING_OPS = ("Concat",)
"""Ops whose inputs and output share one scale, so TensorRT copies INT8 data straight into the
concatenated buffer."""

PLACEMENT_OPS = RESIDUAL_ADD_OPS + AVERAGE_POOL_OPS + SCALE_SHARING_OPS
"""Ops that get Q/DQ only so that TensorRT can fuse or run them in INT8 (placement extras)."""

QUANTIZABLE_OPS = WEIGHTED_OPS + PLACEMENT_OPS
"""Every op type placement may quantize, in the order --op-types shows them; calibration
observes the float inputs of all of them."""

INT8_COMPUTE_OPS = frozenset(WEIGHTED_OPS + AVERAGE_POOL_OPS + SCALE_SHARING_OPS
                             + (QUANTIZE_LINEAR,))
"""Ops with INT8 kernels in TensorRT: a Q/DQ pair in front of them fuses into the op (a
QuantizeLinear after a DequantizeLinear is a requantization)."""

INT8_CONSUMER_OPS = INT8_COMPUTE_OPS | frozenset(RESIDUAL_ADD_OPS)
"""Ops that also take a dequantized input without a float fallback: the residual Add fuses into
the convolution producing its other input."""

CAST_OPS = frozenset({"Identity", "Cast"})
"""Nodes between an op and its readers that change nothing for a Q's fusion (FP16 conversion
below opset 19 puts Casts there)."""

DATA_MOVEMENT_OPS = frozenset({
    "Identity", "Cast", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice",
    "Split", "Gather", "Pad", "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "Resize",
})
"""Ops that move, copy, pad or resize data: they commute with a positive per-tensor scale."""

PASS_THROUGH_OPS = DATA_MOVEMENT_OPS | MAX_POOL_OPS
"""Ops TensorRT moves Q/DQ across, so a dequantized tensor stays "quantized" through them."""

RELU_LIKE_OPS = frozenset({"Relu", "LeakyRelu", "Clip"})
"""Activations that commute with a positive scale, looked through when tracing a tensor back to
its DequantizeLinear."""

SHAPE_OPS = frozenset({"Shape", "Size"})
"""Ops that read only their input's shape: their outputs are shape data, never values."""


def weight_output_axis(op_type: str, rank: int | None, trans_b: bool = False) -> int | None:
    """The axis of the output channels of a weighted op's weight (at WEIGHT_INPUT), by layout:
    Conv W [C_out, C_in/group, k...] 0; ConvTranspose W [C_in, C_out/group, k...] 1; Gemm B 0
    with transB, else 1; MatMul B [..., K, N] its last axis. None for any other op, and for a
    MatMul weight of unknown rank or below rank 2. graph/weights.weight_axis adds the cases
    where a per-channel scale is not used (groups, ranks onnxruntime refuses)."""
    if op_type == "Conv":
        return 0
    if op_type == "ConvTranspose":
        return 1
    if op_type == "Gemm":
        return 0 if trans_b else 1
    if op_type == "MatMul" and rank is not None and rank >= 2:
        return rank - 1
    return None
