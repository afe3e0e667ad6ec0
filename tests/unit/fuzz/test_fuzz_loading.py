"""Byte-mutation fuzzing of everything qtool reads from untrusted files: ONNX models (with inline
and external data), .npy/.npz data, calibration JSON and its histogram .npz, TensorRT caches.

Each case mutates a valid seed file (overwritten, flipped, inserted and deleted bytes, truncation)
and runs it through the same code the commands use. A case passes when it either succeeds or ends
in a QtoolError; anything else is an uncaught exception, i.e. a traceback for the user.

Budget: a fixed, derandomised number of cases per target (seconds in all); QTOOL_FUZZ_LONG=1
(`make fuzz`) runs many more, randomly seeded. Each test prints its case counts.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from qtool.calib.calibfile import (
    Calibration,
    TensorCalibration,
    histogram_path_for,
    read_calibration,
    write_calibration,
)
from qtool.calib.histogram import AbsHistogram
from qtool.calib.thresholding import amax_from_histograms
from qtool.calib.trtcache import format_cache, read_cache
from qtool.errors import QtoolError
from qtool.graph.observe import tensors_to_observe
from qtool.io.data import open_data
from qtool.io.model import InputSpec, input_specs, load_model
from qtool.quantize.api import quantize_model
from qtool.quantize.check import check_model
from tests.helpers.fuzzing import Tally, fuzz_settings, mutated

# -- models --------------------------------------------------------------------------------------

def seed_model(folder: Path) -> bytes:
    """Conv -> Relu -> Add(residual) -> GlobalAveragePool -> Flatten -> Gemm, with weights in all
    three forms: inline raw_data, a Constant node, and external data in w.bin."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 2, 3, 3)).astype(np.float32)
    w.tofile(folder / "w.bin")
    external = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 2, 3, 3],
                           data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(w.nbytes))):
        external.external_data.add(key=key, value=value)
    gw = numpy_helper.from_array(rng.normal(size=(3, 2)).astype(np.float32), "gw")
    bias = helper.make_tensor("b", TensorProto.FLOAT, [2], [0.5, -0.5])
    nodes = [
        helper.make_node("Constant", [], ["b"], value=bias, name="bias"),
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "x"], ["s"], name="add"),
        helper.make_node("GlobalAveragePool", ["s"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "gw"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [external, gw])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def exercise_model(path: Path) -> None:
    """What `qtool check` and `qtool quantize` do with a model file, short of onnxruntime."""
    model = load_model(path)
    input_specs(model)
    check_model(model)
    tensors = tensors_to_observe(model)
    quantize_model(model, {name: 1.0 for name in tensors})


def test_fuzz_model_loading(scratch):
    seed = seed_model(scratch)
    tally = Tally("model")
    exercise_model_seed = scratch / "seed.onnx"
    exercise_model_seed.write_bytes(seed)
    exercise_model(exercise_model_seed)  # the seed itself is valid

    tally.fuzz_file(seed, scratch / "m.onnx", exercise_model)
    assert tally.counts["QtoolError"] > 0 and tally.counts["ok"] > 0


def mutate_graph(model: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto:
    """Edits that keep the file parseable but break the graph's meaning: rewired, dropped or
    duplicated inputs, other op types, changed attributes, dims, element types and node order."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    names = sorted({n for node in graph.node for n in [*node.input, *node.output]}
                   | {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""})
    ops = ["Conv", "Relu", "Add", "MatMul", "Gemm", "Concat", "AveragePool", "MaxPool",
           "GlobalAveragePool", "Flatten", "Clip", "Identity", "Constant", "QuantizeLinear",
           "DequantizeLinear", "Reshape", "Mul"]
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(9))
        node = graph.node[int(rng.integers(len(graph.node)))] if graph.node else None
        if kind == 0 and node is not None and node.input:
            node.input[int(rng.integers(len(node.input)))] = names[int(rng.integers(len(names)))]
        elif kind == 1 and node is not None and node.input:
            del node.input[int(rng.integers(len(node.input)))]
        elif kind == 2 and node is not None:
            node.op_type = ops[int(rng.integers(len(ops)))]
        elif kind == 3 and node is not None and node.attribute:
            attribute = node.attribute[int(rng.integers(len(node.attribute)))]
            if attribute.ints:
                attribute.ints[int(rng.integers(len(attribute.ints)))] = int(rng.integers(-3, 9))
            else:
                attribute.i = int(rng.integers(-3, 9))
        elif kind == 4 and graph.initializer:
            tensor = graph.initializer[int(rng.integers(len(graph.initializer)))]
            if tensor.dims:
                tensor.dims[int(rng.integers(len(tensor.dims)))] = int(rng.integers(0, 5))
        elif kind == 5 and graph.initializer:
            tensor = graph.initializer[int(rng.integers(len(graph.initializer)))]
            tensor.data_type = int(rng.choice([1, 2, 3, 6, 7, 10, 11, 16]))
        elif kind == 6 and graph.input:
            value = graph.input[0].type.tensor_type
            if rng.random() < 0.5:
                value.elem_type = int(rng.choice([1, 3, 7, 10, 11]))
            elif value.shape.dim:
                value.shape.dim[int(rng.integers(len(value.shape.dim)))].dim_value = int(rng.integers(0, 6))
        elif kind == 7 and node is not None:
            graph.node.append(onnx.NodeProto.FromString(node.SerializeToString()))
        elif kind == 8 and len(graph.node) > 1:
            order = list(graph.node)
            i, j = rng.choice(len(order), 2, replace=False)
            order[i], order[j] = order[j], order[i]
            del graph.node[:]
            graph.node.extend(order)
    return model


def test_fuzz_model_graphs(scratch):
    """Graph-level mutations: the file parses, the graph is wrong in a hundred ways."""
    seed = onnx.ModelProto.FromString(seed_model(scratch))
    tally = Tally("model graph")

    @fuzz_settings(ci=200, long=20000)
    @given(st.integers(0, 2**63 - 1))
    def case(number):
        model = mutate_graph(seed, np.random.default_rng(number))
        path = scratch / "g.onnx"
        path.write_bytes(model.SerializeToString())
        tally.run(exercise_model, path)

    case()
    print(tally.report())
    assert tally.counts["QtoolError"] > 0 and tally.counts["ok"] > 0


# -- data files ----------------------------------------------------------------------------------

SPECS = [InputSpec("x", np.dtype(np.float32), ("N", 2, 4, 4)),
         InputSpec("n", np.dtype(np.int64), ("N",))]


def exercise_data(path: Path) -> None:
    specs = SPECS if path.suffix == ".npz" else SPECS[:1]
    source = open_data(path, specs)
    for feed in source:
        assert set(feed) == {spec.name for spec in specs}


def _npz_seed() -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buffer, x=rng.normal(size=(3, 2, 4, 4)).astype(np.float32),
             n=np.arange(3, dtype=np.int64), labels=np.array([1, 2, 3]))
    return buffer.getvalue()


def _npy_seed() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).normal(size=(3, 2, 4, 4)).astype(np.float32))
    return buffer.getvalue()


@pytest.mark.parametrize("suffix, make_seed", [(".npz", _npz_seed), (".npy", _npy_seed)])
def test_fuzz_data_files(scratch, suffix, make_seed):
    seed = make_seed()
    tally = Tally(f"data {suffix}")
    (scratch / f"seed{suffix}").write_bytes(seed)
    exercise_data(scratch / f"seed{suffix}")

    tally.fuzz_file(seed, scratch / f"d{suffix}", exercise_data)
    assert tally.counts["QtoolError"] > 0


# -- calibration files ---------------------------------------------------------------------------

def _write_seed_calibration(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    histograms = {}
    for name, scale in (("x", 1.0), ("r", 3.0)):
        hist = AbsHistogram(128)
        hist.update((rng.normal(size=500) * scale).astype(np.float32))
        histograms[name] = hist
    hist = AbsHistogram(128)
    hist.update(np.zeros(10, np.float32))  # a tensor that saw only zeros: no grid
    histograms["z"] = hist
    calib = Calibration(
        model_sha256="ab" * 32, method="entropy", bins=128, model_file="m.onnx",
        inputs=[{"name": "x", "dtype": "float32", "shape": ["N", 2, 4, 4]}],
        tensors={name: TensorCalibration(amax=max(h.abs_max, 1e-3), abs_max=h.abs_max,
                                         count=h.count) for name, h in histograms.items()},
        num_samples=500, num_batches=1)
    path = folder / "seed.calib.json"
    write_calibration(calib, path, histograms)
    return path


def exercise_calibration(path: Path) -> None:
    calib = read_calibration(path)
    for tensor in calib.tensors.values():
        assert np.isfinite(tensor.amax) and tensor.amax > 0
    if calib.histogram_file is None:
        return
    histograms = calib.load_histograms()
    # Every method over valid histograms is tests/unit/fuzz/test_fuzz_thresholds.py's job; here two
    # methods show that whatever loads can be thresholded.
    for method in ("max", "entropy"):
        for name, amax in amax_from_histograms(histograms, method).items():
            assert np.isfinite(amax) and amax > 0, (name, method, amax)


def test_fuzz_calibration_json(scratch):
    seed_path = _write_seed_calibration(scratch)
    exercise_calibration(seed_path)
    seed = seed_path.read_bytes()
    npz = histogram_path_for(seed_path).read_bytes()
    tally = Tally("calibration json")

    path = scratch / "c.calib.json"

    def write(data):
        path.write_bytes(data.replace(b"seed.calib.npz", b"c.calib.npz"))
        (scratch / "c.calib.npz").write_bytes(npz)

    tally.fuzz_file(seed, path, exercise_calibration, write=write)
    assert tally.counts["QtoolError"] > 0 and tally.counts["ok"] > 0


def _members(npz: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(npz)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_fuzz_histogram_npz(scratch):
    """Mutations of the archive itself, and of single members inside a valid archive (so the
    array contents are reached, not only the zip structure). The JSON names no sha256 here, so
    every mutation is read: a file edited by hand, or a foreign npz, gets that far too."""
    seed_path = _write_seed_calibration(scratch)
    document = json.loads(seed_path.read_text())
    document["histograms"] = {"file": "h.npz"}
    (scratch / "h.calib.json").write_text(json.dumps(document))
    npz = histogram_path_for(seed_path).read_bytes()
    members = _members(npz)
    names = sorted(members)
    tally = Tally("histogram npz")

    @fuzz_settings(ci=150, long=10000)
    @given(st.one_of(mutated(npz), st.tuples(st.sampled_from(names), st.data())))
    def case(choice):
        if isinstance(choice, bytes):
            data = choice
        else:
            name, draw = choice
            changed = dict(members)
            changed[name] = draw.draw(mutated(members[name]))
            data = _zip(changed)
        (scratch / "h.npz").write_bytes(data)
        tally.run(exercise_calibration, scratch / "h.calib.json")

    case()
    print(tally.report())
    assert tally.counts["QtoolError"] > 0 and tally.counts["ok"] > 0


def test_fuzz_trt_cache(scratch):
    seed = format_cache({"x": 2.5, "conv_out": 0.125, "a name: with colon": 7.0}).encode()
    tally = Tally("trt cache")

    def exercise(path):
        _, scales = read_cache(path)
        assert all(np.isfinite(v) and v > 0 for v in scales.values())

    tally.fuzz_file(seed, scratch / "t.cache", exercise, ci=300, long=10000)
    assert tally.counts["QtoolError"] > 0


# -- what the fuzzing found, kept as plain regression tests ---------------------------------------

def _seed_proto(scratch) -> onnx.ModelProto:
    return onnx.ModelProto.FromString(seed_model(scratch))


def _bad_utf8_name(model):
    data = bytearray(model.SerializeToString())
    position = data.index(b"flatten")
    data[position] = 0xFF
    return bytes(data)


def _untyped_input(model):
    model.graph.input[0].type.tensor_type.elem_type = 0
    return model.SerializeToString()


def _add_with_one_input(model):
    add = next(node for node in model.graph.node if node.op_type == "Add")
    del add.input[1]
    return model.SerializeToString()


def _gemm_without_b(model):
    gemm = next(node for node in model.graph.node if node.op_type == "Gemm")
    del gemm.input[1]
    return model.SerializeToString()


@pytest.mark.parametrize("corrupt, message", [
    (_bad_utf8_name, "is not valid UTF-8 text"),  # names came back as bytes
    (_untyped_input, "input 'x' is not a tensor of a known element type"),  # KeyError
    (_add_with_one_input, "is not a valid ONNX model"),  # IndexError in residual placement
    (_gemm_without_b, "is not a valid ONNX model"),
])
def test_fuzz_regressions(scratch, corrupt, message):
    path = scratch / "regression.onnx"
    path.write_bytes(corrupt(_seed_proto(scratch)))
    with pytest.raises(QtoolError, match=message):
        exercise_model(path)
