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

sys.path.insert(0, str(REPO / "scripts"))

from demo_graph import inline_initializer_identities, rename_graph
from demo_readme import README_TEMPLATE, node_table

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
    """The CNN of scripts/demo_network.py (torch is imported there, only when needed)."""
    from demo_network import DigitsCNN

    return DigitsCNN(NUM_CLASSES)




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




# ---------------------------------------------------------------------------- main

def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_export(network, model_bytes: bytes, test_x: np.ndarray,
                 test_y: np.ndarray) -> tuple[float, int]:
    """onnxruntime must reproduce torch's test logits and predictions; returns the largest
    logit difference and how many test digits the model gets right."""
    reference = torch_logits(network, test_x)
    logits = ort_logits(model_bytes, test_x)
    max_diff = float(np.max(np.abs(logits - reference)))
    if max_diff > MAX_LOGIT_DIFF:
        raise RuntimeError(f"onnxruntime differs from torch by {max_diff:.3e} on the test logits")
    if not np.array_equal(logits.argmax(1), reference.argmax(1)):
        raise RuntimeError("onnxruntime and torch disagree on a test prediction")
    return max_diff, int((logits.argmax(1) == test_y).sum())


def data_files(model_bytes: bytes, splits: dict, calib_x: np.ndarray, test_x: np.ndarray,
               test_y: np.ndarray) -> dict[str, bytes]:
    """The model and data files, by path under demo/."""
    return {
        MODEL_FILE: model_bytes,
        "data/calib.npz": npz_bytes({"input": calib_x}),
        "data/test.npz": npz_bytes({"input": test_x}),
        "data/test_labels.npy": npy_bytes(test_y),
        "data/split_indices.npz": npz_bytes({
            "train": splits["train_idx"], "test": splits["test_idx"], "calib": splits["calib_idx"],
        }),
    }


def per_class_text(test_y: np.ndarray) -> str:
    counts = np.bincount(test_y, minlength=NUM_CLASSES)
    per_class = str(counts.min())
    if counts.max() != counts.min():
        per_class = f"{counts.min()} to {counts.max()}"
    return per_class


def metadata(args, model: onnx.ModelProto, files: dict[str, bytes], counts: dict,
             max_diff: float, versions: dict) -> dict:
    """demo.json: the accuracy, the settings, the tool versions and every file's sha256."""
    params = sum(int(np.prod(init.dims)) for init in model.graph.initializer)
    return {
        "model": MODEL_FILE,
        "fp32_top1": counts["correct"] / counts["test"],
        "test_correct": counts["correct"],
        "test_samples": counts["test"],
        "calib_samples": counts["calib"],
        "train_samples": counts["train"],
        "input": {"name": "input", "dtype": "float32", "shape": ["batch", 1, 8, 8]},
        "output": {"name": "logits", "dtype": "float32", "shape": ["batch", NUM_CLASSES]},
        "preprocessing": "x = pixel / 16",
        "opset": OPSET,
        "parameters": params,
        "seed": args.seed,
        "epochs": args.epochs,
        "batch": args.batch,
        "max_abs_logit_diff_ort_vs_torch": max_diff,
        "versions": versions,
        "sha256": {name: sha256(data) for name, data in files.items()},
    }


def tool_versions(torch, sklearn) -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "numpy": np.__version__,
    }


def write_outputs(out: Path, files: dict[str, bytes], meta: dict, readme: str) -> None:
    """Every file into demo/ atomically, readable by all."""
    (out / "data").mkdir(parents=True, exist_ok=True)
    outputs = dict(files)
    outputs["demo.json"] = (json.dumps(meta, indent=2) + "\n").encode()
    outputs["README.md"] = readme.encode()
    for name, data in outputs.items():
        write_bytes(out / name, data)
        os.chmod(out / name, 0o644)  # the atomic temp file is created 0600


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

    max_diff, correct = check_export(network, model_bytes, test_x, test_y)
    accuracy = correct / len(test_y)
    files = data_files(model_bytes, splits, calib_x, test_x, test_y)
    versions = tool_versions(torch, sklearn)
    counts = {"test": len(test_y), "calib": len(calib_x), "train": len(train_y),
              "correct": correct}
    meta = metadata(args, model, files, counts, max_diff, versions)
    readme = README_TEMPLATE.format(
        opset=OPSET, params=meta["parameters"], size_kb=len(model_bytes) / 1024,
        acc_pct=100 * accuracy, correct=correct, per_class=per_class_text(test_y),
        n_test=len(test_y), n_calib=len(calib_x), n_train=len(train_y),
        node_table=node_table(model), seed=args.seed, epochs=args.epochs, batch=args.batch,
        torch_version=torch.__version__,
        torch_version_short=torch.__version__.split("+")[0], max_diff=max_diff,
    )

    write_outputs(args.out, files, meta, readme)
    print(f"fp32 top-1 on {len(test_y)} held-out digits: {accuracy:.4f} ({correct}/{len(test_y)}); "
          f"ort vs torch max |diff| {max_diff:.2e}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
