"""Bake FP16 into the ONNX graph outside the Q/DQ regions.

TensorRT 11 builds strongly typed networks: no FP16 builder flag, every layer runs in the type
its ONNX tensors declare. So "FP16 everywhere that is not INT8" has to be written into the model.

How each part of the graph is treated:
- An op runs in FP16 when its schema (at the model's opset) allows float16 for every float32
  tensor it touches through a type variable; inputs fixed to float32 by the schema (Resize
  `scales`) stay float32. Cast nodes meet each op's needs at the boundaries; one Cast per tensor
  and target type, shared by all readers.
- Kept in float32, with Casts around them: ops in `fp32_ops` (default `DEFAULT_FP32_OPS`, chosen
  for accuracy and onnxruntime support) and the node names in `fp32_nodes`; accumulating
  scatters; ops of other domains; ops with subgraphs
  (If/Loop/Scan, whose bodies are left as they are and whose outer-scope reads keep float32);
  ops whose outputs are typed by attributes (`ALWAYS_FP32_OPS`); Casts to non-float types
  (float16 would lose integers above 2048); float arithmetic on shapes (computed from Shape/Size,
  sizes need exact integers); constant-only computations whose results are only read as float32.
- Initializers and Constant nodes become float16 where their readers need it (a float16 copy when
  readers need both), values clamped to +-65504. ConstantOfShape values and Cast(to=FLOAT)
  inside FP16 regions follow.
- Graph inputs and outputs keep float32 with Casts at the boundary unless keep_io_types=False;
  then every float32 input and output becomes float16.

Q/DQ regions. Below opset 19 QuantizeLinear takes only float32 input and scale and
DequantizeLinear returns float32, so every weighted op would read DQ -> Cast(fp16) -> op: TensorRT's
strongly typed mode gives DQ the scale's type and would have to fuse through the Cast to keep the
layer in INT8. So a model holding Q/DQ nodes is first upgraded to opset 19 (`FP16_QDQ_OPSET`), or
the conversion fails with one line. From opset 19 the float side of a Q/DQ has the scale's
type, so a DequantizeLinear feeding FP16 ops gets a float16 scale and emits float16 directly, and a
QuantizeLinear of a float16 tensor takes a float16 scale: no Casts, which is the pattern TensorRT's
strongly typed mode reads as "INT8 layer with FP16 I/O". A QuantizeLinear of constant weights
keeps float32 weights (rounding weights to float16 before quantizing would change the INT8
values). Q/DQ scales are snapped to float16-representable values so both nodes of a pair stay
equal whichever type each gets. Weight scales below float16's smallest normal number (dead or
near-dead channels, often all zero) are raised to 2**-14, requantizing stored INT8 weights; any
other Q/DQ whose scale is outside float16's normal range (2**-14 .. 65504) keeps float32 with
Casts, and a warning names the weighted ops that then read DQ -> Cast.

Modules: convert (the entry point and the Q/DQ-through-Cast check), opset (the opset 19 raise),
working_graph (the model under conversion and its type queries), modes (which nodes run in
float16), scales (weight-scale flooring and float16 snapping), constants (float16 constants),
casts (Cast insertion and the final declarations), schema, order, ops and numbers (shared facts).
"""

from __future__ import annotations

from qtool.quantize.fp16.convert import casts_before_weighted_ops, convert_to_fp16
from qtool.quantize.fp16.numbers import half_safe_scale, to_half

__all__ = ["casts_before_weighted_ops", "convert_to_fp16", "half_safe_scale", "to_half"]
