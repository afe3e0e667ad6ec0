"""Large models: no step holds the weights twice. Sessions, saving, shape inference and weight
quantization neither copy nor modify the caller's model; calibration leaves external weights on
disk for onnxruntime to read. The 2 GB case itself is scripts/bench_large_model.py."""

from __future__ import annotations

import weakref

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, external_data_helper, helper, numpy_helper

from qtool.backends.onnxruntime import session as sessions
from qtool.calib.api import CalibrateOptions, calibrate
from qtool.errors import QtoolError
from qtool.graph.types import infer_shapes, tensor_elem_types
from qtool.io.external import ALIGN, save_external
from qtool.io.model import load_model, save_model
from qtool.quantize import insert
from qtool.quantize.api import quantize_model
from tests.tiny_models import conv_relu_gemm


def chain_model(width=64, layers=3, seed=0) -> onnx.ModelProto:
    """x[N,width] -> (MatMul -> Relu) x layers: weights of width*width*4 bytes each."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    source = "x"
    for index in range(layers):
        weight = (rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{index}"))
        nodes.append(helper.make_node("MatMul", [source, f"w{index}"], [f"m{index}"], name=f"mm{index}"))
        nodes.append(helper.make_node("Relu", [f"m{index}"], [f"r{index}"], name=f"relu{index}"))
        source = f"r{index}"
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(source, TensorProto.FLOAT, ["N", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def reference(model: onnx.ModelProto, feeds, outputs):
    session = ort.InferenceSession(sessions.augment_with_outputs(model, outputs).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(outputs, feeds)


FEEDS = {"x": np.random.default_rng(1).normal(size=(5, 64)).astype(np.float32)}
OBSERVED = ["m0", "r1", "m2"]


def test_session_in_memory_adds_outputs_without_touching_the_model():
    model = chain_model()
    before = model.SerializeToString()
    session = sessions.create_session(model, extra_outputs=OBSERVED)
    for got, want in zip(session.run(OBSERVED, FEEDS), reference(model, FEEDS, OBSERVED)):
        np.testing.assert_array_equal(got, want)
    assert model.SerializeToString() == before
    assert [value.name for value in session.get_outputs()] == ["r2", *OBSERVED]


def test_session_above_the_protobuf_limit_goes_through_a_private_folder(monkeypatch, tmp_path):
    model = chain_model()
    before = model.SerializeToString()
    monkeypatch.setattr(sessions, "PROTOBUF_LIMIT", (64 << 20) + 1000)  # 3 x 16 KiB is "too large"
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    written = []
    real = sessions.save_external

    def spy(*args, **kwargs):
        written.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(sessions, "save_external", spy)
    session = sessions.create_session(model, extra_outputs=OBSERVED)
    assert len(written) == 1 and written[0].parent.parent == tmp_path
    for got, want in zip(session.run(OBSERVED, FEEDS), reference(model, FEEDS, OBSERVED)):
        np.testing.assert_array_equal(got, want)
    assert model.SerializeToString() == before  # onnx.save_model would have emptied the weights
    assert list(tmp_path.iterdir()) == []  # the private folder is gone


def test_session_reads_unloaded_weights_from_the_model_folder(tmp_path):
    model = chain_model()
    onnx.save_model(chain_model(), str(tmp_path / "m.onnx"), save_as_external_data=True,
                    location="m.data", size_threshold=0)  # onnx empties the tensors it saves
    graph_only = load_model(tmp_path / "m.onnx", load_weights=False)
    assert sessions.has_unloaded_weights(graph_only)
    with pytest.raises(TypeError, match="pass external_dir"):
        sessions.create_session(graph_only)
    session = sessions.create_session(graph_only, extra_outputs=OBSERVED, external_dir=tmp_path)
    for got, want in zip(session.run(OBSERVED, FEEDS), reference(model, FEEDS, OBSERVED)):
        np.testing.assert_array_equal(got, want)


def test_calibration_never_loads_external_weights_into_python(tmp_path, monkeypatch):
    model = chain_model()
    inline, external = tmp_path / "inline", tmp_path / "external"
    inline.mkdir()
    external.mkdir()
    onnx.save_model(model, str(inline / "m.onnx"))
    onnx.save_model(model, str(external / "m.onnx"), save_as_external_data=True,
                    location="m.data", size_threshold=0)
    np.save(tmp_path / "x.npy", FEEDS["x"])
    options = CalibrateOptions(method="max")
    expected = calibrate(inline / "m.onnx", tmp_path / "x.npy", options).calibration

    def refuse(*args, **kwargs):
        raise AssertionError("calibration read the external weights into memory")

    monkeypatch.setattr(external_data_helper, "load_external_data_for_model", refuse)
    monkeypatch.setattr(external_data_helper, "load_external_data_for_tensor", refuse)
    result = calibrate(external / "m.onnx", tmp_path / "x.npy", options).calibration
    assert result.amax == expected.amax
    assert set(result.amax) == {"x", "r0", "r1"}


def test_save_external_streams_weights_and_keeps_the_model(tmp_path):
    model = chain_model()
    model.graph.initializer.append(numpy_helper.from_array(np.arange(3, dtype=np.int64), "small"))
    before = model.SerializeToString()
    save_external(model, tmp_path / "m.onnx", "m.onnx.data")
    assert model.SerializeToString() == before
    written = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    offsets = {}
    for tensor in written.graph.initializer:
        info = {entry.key: entry.value for entry in tensor.external_data}
        if tensor.name == "small":
            assert tensor.data_location != TensorProto.EXTERNAL
        else:
            assert info["location"] == "m.onnx.data" and int(info["length"]) == 64 * 64 * 4
            offsets[tensor.name] = int(info["offset"])
    assert sorted(offsets.values()) == [0, ALIGN * 4, ALIGN * 8]  # 16 KiB each, page-aligned
    loaded = load_model(tmp_path / "m.onnx")
    for original, back in zip(model.graph.initializer, loaded.graph.initializer):
        np.testing.assert_array_equal(numpy_helper.to_array(original), numpy_helper.to_array(back))


def test_save_external_refuses_a_model_without_its_weights(tmp_path):
    model = chain_model()
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True,
                    location="m.data", size_threshold=0)
    graph_only = load_model(tmp_path / "m.onnx", load_weights=False)
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="still refers to external data"):
        save_external(graph_only, tmp_path / "out" / "m.onnx", "m.onnx.data")


def test_save_model_external_leaves_no_temp_and_keeps_the_model(tmp_path):
    model = chain_model()
    before = model.SerializeToString()
    save_model(model, tmp_path / "big.onnx", external=True)
    assert model.SerializeToString() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    session = ort.InferenceSession(str(tmp_path / "big.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, FEEDS)[0], reference(model, FEEDS, ["r2"])[0])


def test_shape_inference_never_serialises_large_weights(monkeypatch):
    model = chain_model(width=256)  # 256 KiB per weight
    seen = []
    real = onnx.shape_inference.infer_shapes

    def spy(proto, *args, **kwargs):
        seen.append(proto.ByteSize())
        return real(proto, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", spy)
    types = tensor_elem_types(model)
    assert types["m1"] == TensorProto.FLOAT and types["w0"] == TensorProto.FLOAT
    assert seen and max(seen) < 10_000
    inferred = infer_shapes(model)
    assert {v.name for v in inferred.graph.value_info} >= {"m0", "r0", "m1"}


def test_int8_weights_are_dropped_from_the_skeleton_too():
    from qtool.graph.shapes import inference_skeleton

    model = chain_model()
    model.graph.initializer.append(numpy_helper.from_array(np.ones((64, 64), np.int8), "q"))
    light = next(t for t in inference_skeleton(model).graph.initializer if t.name == "q")
    assert list(light.dims) == [64, 64] and not light.raw_data and light.data_type == TensorProto.INT8


@pytest.mark.parametrize("weights", ["fp32", "int8"])
def test_weights_are_read_one_at_a_time(monkeypatch, weights):
    model = chain_model(layers=4)
    alive_at_read = []
    refs = []
    real = insert._weight_value

    def spy(source):
        alive_at_read.append(sum(ref() is not None for ref in refs))
        value = real(source)
        refs.append(weakref.ref(value))
        return value

    monkeypatch.setattr(insert, "_weight_value", spy)
    amax = {"x": 3.0, "r0": 2.0, "r1": 2.0, "r2": 2.0}
    from qtool.quantize.options import QuantizeOptions

    quantize_model(model, amax, QuantizeOptions(weights=weights))
    assert len(alive_at_read) == 4
    assert max(alive_at_read) <= 1  # the previous weight at most, never all of them


def test_quantize_in_place_rewrites_the_given_model_and_default_copies():
    model = conv_relu_gemm()
    before = model.SerializeToString()
    amax = {"x": 2.0, "relu": 3.0, "flat": 1.5}
    copied, _ = quantize_model(model, amax)
    assert copied is not model and model.SerializeToString() == before
    rewritten, _ = quantize_model(model, amax, in_place=True)
    assert rewritten is model
    assert rewritten.SerializeToString() == copied.SerializeToString()


def test_structure_check_never_serialises_large_weights(monkeypatch, tmp_path):
    """load_model runs onnx's checker on a light copy: initializers and Constant-node weights
    become empty placeholders, so the check costs no copy of the weights."""
    model = chain_model(width=128)
    big = numpy_helper.from_array(np.ones((128, 128), np.float32), "k")
    model.graph.node.insert(0, helper.make_node("Constant", [], ["k"], value=big, name="const"))
    model.graph.node[1].input[1] = "k"
    onnx.save_model(model, str(tmp_path / "m.onnx"))
    seen = []
    real = onnx.checker.check_model

    def spy(proto, *args, **kwargs):
        seen.append(proto.ByteSize())
        return real(proto, *args, **kwargs)

    monkeypatch.setattr(onnx.checker, "check_model", spy)
    loaded = load_model(tmp_path / "m.onnx")
    assert seen and max(seen) < 1000 and model.ByteSize() > 250_000
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.node[0].attribute[0].t),
                                  np.ones((128, 128), np.float32))


def test_structure_errors_are_one_line_naming_the_node(tmp_path):
    model = chain_model()
    model.graph.node[2].input[0] = "nowhere"
    onnx.save_model(model, str(tmp_path / "m.onnx"))
    with pytest.raises(QtoolError) as info:
        load_model(tmp_path / "m.onnx")
    message = str(info.value)
    assert "\n" not in message and "is not a valid ONNX model" in message
    assert "input 'nowhere' of node: name: mm1 OpType: MatMul" in message


@pytest.mark.parametrize("too_large", [False, True])
def test_session_appends_extra_nodes_in_memory_and_through_the_private_folder(
        monkeypatch, tmp_path, too_large):
    """Calibration's pooling nodes reach onnxruntime by both routes; the model stays untouched."""
    model = chain_model()
    before = model.SerializeToString()
    if too_large:
        monkeypatch.setattr(sessions, "PROTOBUF_LIMIT", (64 << 20) + 1000)
        monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    node = helper.make_node("ReduceMax", ["r1"], ["r1_max"], keepdims=0)
    session = sessions.create_session(model, extra_outputs=["r1", "r1_max"], extra_nodes=[node])
    r1, r1_max = session.run(["r1", "r1_max"], FEEDS)
    np.testing.assert_array_equal(r1, reference(model, FEEDS, ["r1"])[0])
    assert r1_max == r1.max()
    assert model.SerializeToString() == before
