"""Op types that several layers name: one definition, with no imports, so the CLI can show them
in its help without loading onnx."""

# Ops with weights that TensorRT runs in INT8 when their inputs are quantized.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
