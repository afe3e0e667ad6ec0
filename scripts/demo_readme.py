"""The demo's README.md, written by scripts/make_demo.py from the run's numbers."""

from __future__ import annotations

import onnx

README_TEMPLATE = """\
# Demo model and data

A small but real model and real data, shipped so that qtool runs end to end with no download.
Every file here is written by `scripts/make_demo.py`; do not edit them by hand.

## The model: `digits_cnn.onnx`

A convolutional network classifying scikit-learn's bundled digits data set
(`sklearn.datasets.load_digits`: 1797 grayscale 8x8 images of handwritten digits, 10 classes).

- Input `input`: float32 `[batch, 1, 8, 8]`, dynamic batch dimension (`dim_param` "batch").
- Output `logits`: float32 `[batch, 10]`, unnormalised class scores; the prediction is the argmax
  (class k is the digit k).
- ONNX opset {opset}, {params} parameters, {size_kb:.1f} KiB.
- FP32 top-1 accuracy on the held-out test split, measured with onnxruntime (CPU):
  **{acc_pct:.2f}%** ({correct}/{n_test}).

Its layers were chosen to exercise the quantizer's TensorRT placement rules while staying tiny:
Conv+Relu (BatchNorm folded into the Conv at export), a residual block whose Add takes the skip
branch, a MaxPool, two parallel convolutions joined by a Concat, a GlobalAveragePool, a Flatten, a
Gemm and a MatMul with a constant weight followed by a bias Add. Node names are the module paths:

| node | op | output shape |
| --- | --- | --- |
{node_table}

## Preprocessing

`x = pixel / 16`: the digits pixels are integers 0..16, so inputs lie in [0, 1] in steps of 1/16.
No mean/std normalisation. The shipped data files are already preprocessed.

## Data: `data/`

- `data/calib.npz`: key `input`, float32 `[{n_calib}, 1, 8, 8]`, calibration samples drawn at
  random from the training split.
- `data/test.npz`: key `input`, float32 `[{n_test}, 1, 8, 8]`, the held-out split (stratified,
  {per_class} images per class), never used for training or calibration.
- `data/test_labels.npy`: int64 `[{n_test}]`, the test labels, in the order of `data/test.npz`.
- `data/split_indices.npz`: keys `train`, `test`, `calib`, the indices into `load_digits()` of
  each split, for provenance.

## Metadata: `demo.json`

The accuracy above (`fp32_top1`, a fraction), the settings, the tool versions and the sha256 of
every file, written by the same run; the tests read the accuracy from there.

## How it was made

```
.venv/bin/pip install torch=={torch_version_short} scikit-learn
.venv/bin/python scripts/make_demo.py
```

Stratified split of the 1797 images into {n_train} training and {n_test} test images (seed
{seed}); training for {epochs} epochs with AdamW and a one-cycle learning rate, batch {batch},
random shifts of up to one pixel as augmentation, seeded and single-threaded, so a rerun with the
same versions rewrites identical files. Export with torch {torch_version}
(`torch.onnx.export(..., dynamo=False)`), opset {opset}; the script then gives the nodes and
weights readable names, checks the model with `onnx.checker` and verifies that onnxruntime
reproduces torch's logits on the test split (largest absolute difference {max_diff:.2e}).
torch and scikit-learn are needed only to regenerate these files, never by qtool.
"""


def node_table(model: onnx.ModelProto) -> str:
    shapes = {}
    for info in list(model.graph.value_info) + list(model.graph.output):
        dims = [d.dim_param or str(d.dim_value) for d in info.type.tensor_type.shape.dim]
        shapes[info.name] = "[" + ", ".join(dims) + "]"
    return "\n".join(
        f"| `{node.name}` | {node.op_type} | {shapes.get(node.output[0], '?')} |"
        for node in model.graph.node
    )
