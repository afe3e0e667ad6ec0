#!/usr/bin/env python3
"""Build the demo model and data shipped in demo/: a small CNN trained on scikit-learn's
bundled 8x8 digits, exported to ONNX, with calibration and held-out test sets.

    .venv/bin/pip install torch==2.13.0 scikit-learn
    .venv/bin/python scripts/make_demo.py

torch and scikit-learn are needed only here, to regenerate the files; qtool itself and its
tests use the committed outputs. Everything is seeded and single-threaded, so a rerun on the
same software versions reproduces the same weights, data files and accuracy.

Preprocessing is x = pixel / 16: the digits pixels are integers 0..16, the model sees [0, 1].
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qtool.io.atomic import write_bytes

MODEL_FILE = "digits_cnn.onnx"
OPSET = 17
TEST_SIZE = 540
CALIB_SIZE = 256
PIXEL_MAX = 16.0
NUM_CLASSES = 10
# ONNX Runtime must reproduce the torch logits to float32 rounding noise.
MAX_LOGIT_DIFF = 1e-4


# ---------------------------------------------------------------------------- data

def load_splits(seed: int) -> dict[str, np.ndarray]:
    """Stratified train/test split of sklearn's digits, calibration drawn from train only."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / PIXEL_MAX).astype(np.float32)[:, None, :, :]  # [N, 1, 8, 8]
    labels = digits.target.astype(np.int64)
    indices = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        indices, test_size=TEST_SIZE, stratify=labels, random_state=seed
    )
    rng = np.random.default_rng(seed)
    calib_idx = np.sort(rng.choice(train_idx, size=CALIB_SIZE, replace=False))
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return {
        "images": images,
        "labels": labels,
        "train_idx": train_idx,
        "test_idx": test_idx,
        "calib_idx": calib_idx,
    }


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive with fixed timestamps, so identical arrays give identical bytes
    (np.savez stamps the current time into the zip)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


# ---------------------------------------------------------------------------- model

def build_network():
    """The CNN. Every graph operation is its own submodule so that each exported ONNX node
    gets the submodule's path as its name (see rename_graph)."""
    import torch
    from torch import nn

    class ConvBn(nn.Module):
        # BatchNorm is folded into the Conv by the exporter in eval mode.
        def __init__(self, cin: int, cout: int, kernel: int):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
            self.bn = nn.BatchNorm2d(cout)

        def forward(self, x):
            return self.bn(self.conv(x))

    class ConvBnRelu(ConvBn):
        def __init__(self, cin: int, cout: int, kernel: int):
            super().__init__(cin, cout, kernel)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(super().forward(x))

    class Add(nn.Module):
        def forward(self, a, b):
            return a + b

    class Concat(nn.Module):
        def forward(self, a, b):
            return torch.cat([a, b], dim=1)

    class MatMul(nn.Module):
        def forward(self, a, b):
            return torch.matmul(a, b)

    class MatMulBias(nn.Module):
        # A bare MatMul with a constant [K, N] weight, then a bias Add (not a Gemm).
        def __init__(self, k: int, n: int):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(k, n))
            self.bias = nn.Parameter(torch.zeros(n))
            nn.init.kaiming_uniform_(self.weight.T, a=5**0.5)
            self.matmul = MatMul()
            self.add = Add()

        def forward(self, x):
            return self.add(self.matmul(x, self.weight), self.bias)

    class ResidualBlock(nn.Module):
        # conv1 -> relu -> conv2, plus the identity skip, then relu.
        def __init__(self, channels: int):
            super().__init__()
            self.conv1 = ConvBnRelu(channels, channels, 3)
            self.conv2 = ConvBn(channels, channels, 3)
            self.add = Add()
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.add(self.conv2(self.conv1(x)), x))

    class DigitsCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = ConvBnRelu(1, 16, 3)            # [B, 16, 8, 8]
            self.res = ResidualBlock(16)                # [B, 16, 8, 8]
            self.pool = nn.MaxPool2d(2)                 # [B, 16, 4, 4]
            self.branch1x1 = ConvBnRelu(16, 16, 1)      # two parallel branches ...
            self.branch3x3 = ConvBnRelu(16, 16, 3)
            self.concat = Concat()                      # ... joined: [B, 32, 4, 4]
            self.gap = nn.AdaptiveAvgPool2d(1)          # GlobalAveragePool: [B, 32, 1, 1]
            self.flatten = nn.Flatten(1)                # [B, 32]
            self.fc = nn.Linear(32, 32)                 # Gemm
            self.fc_relu = nn.ReLU()
            self.head = MatMulBias(32, NUM_CLASSES)     # MatMul + Add: [B, 10]

        def forward(self, x):
            x = self.pool(self.res(self.stem(x)))
            x = self.concat(self.branch1x1(x), self.branch3x3(x))
            x = self.flatten(self.gap(x))
            return self.head(self.fc_relu(self.fc(x)))

    return DigitsCNN()


def random_shift(images, generator):
    """Shift each image by up to one pixel in each direction, zero-filled."""
    import torch
    import torch.nn.functional as F

    n = images.shape[0]
    padded = F.pad(images, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=generator)
    dx = torch.randint(0, 3, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(8)[None, :])[:, None, :, None].expand(n, 1, 8, 10)
    shifted = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(8)[None, :])[:, None, None, :].expand(n, 1, 8, 8)
    return torch.gather(shifted, 3, cols)


def train(model, images: np.ndarray, labels: np.ndarray, seed: int, epochs: int, batch: int):
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((len(y_all) + batch - 1) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(y_all), generator=generator)
        total, correct, loss_sum = 0, 0, 0.0
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            x = random_shift(x_all[idx], generator)
            y = y_all[idx]
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += len(idx)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += loss.item() * len(idx)
        if epoch == epochs - 1 or epoch % 10 == 0:
            print(f"epoch {epoch + 1:3d}/{epochs}  loss {loss_sum / total:.4f}  "
                  f"train acc {correct / total:.4f}", file=sys.stderr)
    model.eval()
    return model


def export_onnx(model) -> onnx.ModelProto:
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose; its deprecation notice is noise here.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, 8, 8),),
            buffer,
            dynamo=False,  # the TorchScript exporter: plain ops, module-path node names
            input_names=["input"],
            output_names=["logits"],
            opset_version=OPSET,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())


# ---------------------------------------------------------------------------- graph cleanup

def inline_initializer_identities(graph: onnx.GraphProto) -> None:
    """The exporter shares equal constants through Identity nodes; give every consumer its
    own initializer instead, so each weighted op owns its weight and bias."""
    inits = {init.name: init for init in graph.initializer}
    alias = {}
    for node in list(graph.node):
        if node.op_type == "Identity" and node.input[0] in inits:
            alias[node.output[0]] = node.input[0]
            graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in alias:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[alias[name]])
                copy.name = name
                graph.initializer.append(copy)
                node.input[i] = name


def node_name_from_scope(exported: str) -> str:
    """'/res/conv1/conv/Conv' -> 'res.conv1.conv': the module path, dotted."""
    parts = [p for p in exported.split("/") if p]
    if len(parts) < 2:
        raise RuntimeError(f"exported node {exported!r} has no module scope")
    return ".".join(parts[:-1])


def rename_graph(graph: onnx.GraphProto) -> None:
    """Readable, stable names: node = module path, its output = '<node>.out', weights =
    '<node>.weight' / '<node>.bias'. Graph input and output names are kept."""
    renames: dict[str, str] = {}
    seen = set()
    for node in graph.node:
        name = node_name_from_scope(node.name)
        if name in seen:
            raise RuntimeError(f"two exported nodes map to the name {name!r}")
        seen.add(name)
        node.name = name
        for output in node.output:
            if output != "logits":
                renames[output] = f"{name}.out"
    inits = {init.name for init in graph.initializer}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm"):
            # input 0 is the activation, then weight and (optional) bias
            for tensor, role in zip(node.input[1:], ("weight", "bias")):
                renames[tensor] = f"{node.name}.{role}"
        elif node.op_type in ("MatMul", "Add"):
            # head.matmul / head.add: a constant operand belongs to the enclosing module
            owner = node.name.rsplit(".", 1)[0]
            role = "weight" if node.op_type == "MatMul" else "bias"
            for tensor in node.input:
                if tensor in inits:
                    renames[tensor] = f"{owner}.{role}"
    for init in graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)
    names = [init.name for init in graph.initializer]
    if len(set(names)) != len(names):
        raise RuntimeError(f"duplicate initializer names after renaming: {sorted(names)}")
    # Initializers in graph order, for a readable listing.
    order = {name: i for i, name in enumerate(n for node in graph.node for n in node.input)}
    ordered = sorted(graph.initializer, key=lambda init: order[init.name])
    del graph.initializer[:]
    graph.initializer.extend(ordered)


def finalize_model(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    graph = model.graph
    inline_initializer_identities(graph)
    rename_graph(graph)
    graph.name = "digits_cnn"
    model.doc_string = (
        "Small CNN for sklearn's 8x8 digits (10 classes). Input 'input' float32 [batch,1,8,8], "
        "x = pixel / 16 in [0, 1]; output 'logits' float32 [batch,10]. "
        "Made by scripts/make_demo.py."
    )
    del model.metadata_props[:]
    helper.set_model_props(model, {
        "preprocessing": "x = pixel / 16",
        "classes": ",".join(str(c) for c in range(NUM_CLASSES)),
        "seed": str(seed),
    })
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


# ---------------------------------------------------------------------------- evaluation

def ort_logits(model_bytes: bytes, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": images})[0]


def torch_logits(model, images: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy()


# ---------------------------------------------------------------------------- README

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


# ---------------------------------------------------------------------------- main

def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "demo", help="output folder (demo/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)

    try:
        import sklearn
        import torch
    except ImportError as exc:
        print(f"error: {exc.name} is needed to regenerate the demo "
              f"(pip install torch==2.13.0 scikit-learn)", file=sys.stderr)
        return 1

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # fixed reduction order: same weights on every rerun
    torch.use_deterministic_algorithms(True)

    splits = load_splits(args.seed)
    images, labels = splits["images"], splits["labels"]
    train_x, train_y = images[splits["train_idx"]], labels[splits["train_idx"]]
    test_x, test_y = images[splits["test_idx"]], labels[splits["test_idx"]]
    calib_x = images[splits["calib_idx"]]

    network = build_network()
    started = time.perf_counter()
    network = train(network, train_x, train_y, args.seed, args.epochs, args.batch)
    print(f"trained in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    model = finalize_model(export_onnx(network), args.seed)
    model_bytes = model.SerializeToString(deterministic=True)

    reference = torch_logits(network, test_x)
    logits = ort_logits(model_bytes, test_x)
    max_diff = float(np.max(np.abs(logits - reference)))
    if max_diff > MAX_LOGIT_DIFF:
        raise RuntimeError(f"onnxruntime differs from torch by {max_diff:.3e} on the test logits")
    if not np.array_equal(logits.argmax(1), reference.argmax(1)):
        raise RuntimeError("onnxruntime and torch disagree on a test prediction")
    correct = int((logits.argmax(1) == test_y).sum())
    accuracy = correct / len(test_y)

    files = {
        MODEL_FILE: model_bytes,
        "data/calib.npz": npz_bytes({"input": calib_x}),
        "data/test.npz": npz_bytes({"input": test_x}),
        "data/test_labels.npy": npy_bytes(test_y),
        "data/split_indices.npz": npz_bytes({
            "train": splits["train_idx"], "test": splits["test_idx"], "calib": splits["calib_idx"],
        }),
    }
    counts = np.bincount(test_y, minlength=NUM_CLASSES)
    per_class = str(counts.min())
    if counts.max() != counts.min():
        per_class = f"{counts.min()} to {counts.max()}"
    params = sum(int(np.prod(init.dims)) for init in model.graph.initializer)
    meta = {
        "model": MODEL_FILE,
        "fp32_top1": accuracy,
        "test_correct": correct,
        "test_samples": len(test_y),
        "calib_samples": len(calib_x),
        "train_samples": len(train_y),
        "input": {"name": "input", "dtype": "float32", "shape": ["batch", 1, 8, 8]},
        "output": {"name": "logits", "dtype": "float32", "shape": ["batch", NUM_CLASSES]},
        "preprocessing": "x = pixel / 16",
        "opset": OPSET,
        "parameters": params,
        "seed": args.seed,
        "epochs": args.epochs,
        "batch": args.batch,
        "max_abs_logit_diff_ort_vs_torch": max_diff,
        "versions": {
            "torch": torch.__version__,
            "scikit-learn": sklearn.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
            "numpy": np.__version__,
        },
        "sha256": {name: sha256(data) for name, data in files.items()},
    }
    readme = README_TEMPLATE.format(
        opset=OPSET, params=params, size_kb=len(model_bytes) / 1024, acc_pct=100 * accuracy,
        correct=correct, per_class=per_class, n_test=len(test_y), n_calib=len(calib_x),
        n_train=len(train_y),
        node_table=node_table(model), seed=args.seed, epochs=args.epochs, batch=args.batch,
        torch_version=torch.__version__,
        torch_version_short=torch.__version__.split("+")[0], max_diff=max_diff,
    )

    (args.out / "data").mkdir(parents=True, exist_ok=True)
    outputs = dict(files)
    outputs["demo.json"] = (json.dumps(meta, indent=2) + "\n").encode()
    outputs["README.md"] = readme.encode()
    for name, data in outputs.items():
        write_bytes(args.out / name, data)
        os.chmod(args.out / name, 0o644)  # the atomic temp file is created 0600
    print(f"fp32 top-1 on {len(test_y)} held-out digits: {accuracy:.4f} ({correct}/{len(test_y)}); "
          f"ort vs torch max |diff| {max_diff:.2e}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
