"""The shipped demo model and data (demo/, written by scripts/make_demo.py) are intact and
match what demo/README.md and demo/demo.json say about them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

DEMO = Path(__file__).resolve().parents[2] / "demo"
MODEL = DEMO / "digits_cnn.onnx"
# Another CPU or onnxruntime build may round a logit differently; allow ~2 of 540 flips.
ACCURACY_TOLERANCE = 0.004


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((DEMO / "demo.json").read_text())


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return onnx.load(str(MODEL))


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])


def _npz_input(name: str) -> np.ndarray:
    with np.load(DEMO / "data" / name) as archive:
        assert archive.files == ["input"]
        return archive["input"]


def _dims(value_info: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_files_match_recorded_sha256(meta):
    assert set(meta["sha256"]) == {
        "digits_cnn.onnx", "data/calib.npz", "data/test.npz", "data/test_labels.npy",
        "data/split_indices.npz",
    }
    for name, digest in meta["sha256"].items():
        assert hashlib.sha256((DEMO / name).read_bytes()).hexdigest() == digest, name


def test_shipped_files_are_small():
    total = sum(path.stat().st_size for path in DEMO.rglob("*") if path.is_file())
    assert total < 1_000_000


def test_model_passes_checker_and_signature(model):
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "input"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(inp) == ["batch", 1, 8, 8]
    assert out.name == "logits"
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(out) == ["batch", 10]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["preprocessing"] == "x = pixel / 16"


def test_model_has_the_ops_the_placement_rules_need(model):
    ops = [node.op_type for node in model.graph.node]
    for op in ("Conv", "Relu", "Add", "MaxPool", "Concat", "GlobalAveragePool", "Flatten",
               "Gemm", "MatMul"):
        assert op in ops, op
    # Node names are unique, readable module paths; no leftover exporter scopes.
    names = [node.name for node in model.graph.node]
    assert len(set(names)) == len(names)
    assert all(name and "/" not in name for name in names)
    # Every weighted op owns its own constant weight (no Identity-shared initializers).
    inits = {init.name for init in model.graph.initializer}
    assert "Identity" not in ops
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            assert node.input[1] in inits, node.name
    # The residual Add takes a conv output and the skip branch (a Relu output from before).
    producers = {out: node for node in model.graph.node for out in node.output}
    residual = [n for n in model.graph.node
                if n.op_type == "Add" and all(i in producers for i in n.input)]
    assert len(residual) == 1
    assert sorted(producers[i].op_type for i in residual[0].input) == ["Conv", "Relu"]
    concat = next(n for n in model.graph.node if n.op_type == "Concat")
    assert [producers[i].op_type for i in concat.input] == ["Relu", "Relu"]


def test_data_files_have_documented_shapes_and_preprocessing(meta):
    calib = _npz_input("calib.npz")
    test = _npz_input("test.npz")
    labels = np.load(DEMO / "data" / "test_labels.npy")
    assert calib.dtype == np.float32 and calib.shape == (meta["calib_samples"], 1, 8, 8)
    assert test.dtype == np.float32 and test.shape == (meta["test_samples"], 1, 8, 8)
    assert labels.dtype == np.int64 and labels.shape == (meta["test_samples"],)
    assert set(np.unique(labels)) == set(range(10))
    for data in (calib, test):
        # x = pixel / 16 with integer pixels 0..16: exact multiples of 1/16 in [0, 1].
        pixels = data * 16
        assert np.array_equal(pixels, np.round(pixels))
        assert pixels.min() == 0 and pixels.max() == 16


def test_calibration_and_test_splits_are_disjoint():
    calib = _npz_input("calib.npz").reshape(-1, 64)
    test = _npz_input("test.npz").reshape(-1, 64)
    calib_rows = {row.tobytes() for row in calib}
    assert not any(row.tobytes() in calib_rows for row in test)
    with np.load(DEMO / "data" / "split_indices.npz") as idx:
        train, test_idx, calib_idx = idx["train"], idx["test"], idx["calib"]
    assert len(np.intersect1d(train, test_idx)) == 0
    assert np.all(np.isin(calib_idx, train))
    assert len(train) + len(test_idx) == 1797
    assert len(calib_idx) == len(calib) and len(test_idx) == len(test)


def test_data_matches_sklearn_digits_when_available():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    with np.load(DEMO / "data" / "split_indices.npz") as idx:
        test_idx, calib_idx = idx["test"], idx["calib"]
    expected_test = (digits.images[test_idx] / 16).astype(np.float32)[:, None]
    np.testing.assert_array_equal(_npz_input("test.npz"), expected_test)
    expected_calib = (digits.images[calib_idx] / 16).astype(np.float32)[:, None]
    np.testing.assert_array_equal(_npz_input("calib.npz"), expected_calib)
    np.testing.assert_array_equal(np.load(DEMO / "data" / "test_labels.npy"),
                                  digits.target[test_idx])


def test_onnxruntime_accuracy_matches_recorded(meta, session):
    test = _npz_input("test.npz")
    labels = np.load(DEMO / "data" / "test_labels.npy")
    (logits,) = session.run(["logits"], {"input": test})
    assert logits.shape == (len(test), 10) and logits.dtype == np.float32
    accuracy = float(np.mean(logits.argmax(axis=1) == labels))
    assert 0.95 <= meta["fp32_top1"] <= 1.0
    assert accuracy >= meta["fp32_top1"] - ACCURACY_TOLERANCE


def test_readme_states_the_recorded_accuracy(meta):
    readme = (DEMO / "README.md").read_text()
    assert f"**{100 * meta['fp32_top1']:.2f}%**" in readme
    assert f"({meta['test_correct']}/{meta['test_samples']})" in readme
    assert "x = pixel / 16" in readme
    assert "scripts/make_demo.py" in readme


@pytest.mark.parametrize("batch", [1, 7])
def test_batch_dimension_is_dynamic(session, batch):
    test = _npz_input("test.npz")
    (full,) = session.run(["logits"], {"input": test[:batch * 2]})
    (part,) = session.run(["logits"], {"input": test[:batch]})
    assert part.shape == (batch, 10)
    np.testing.assert_allclose(part, full[:batch], rtol=1e-5, atol=1e-5)
