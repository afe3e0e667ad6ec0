"""`qtool build` without --shapes: the calibration file's input signature, --batch, the batch-1
default with its one warning, and the error for a dynamic non-batch dimension of unknown size;
and the typing of a model that already holds FP16 on TensorRT 10. TensorRT's calls are checked
with the recording stand-in of tests/helpers/fake_tensorrt.py (no engine is built on CPU)."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from qtool.backends.tensorrt.build import BuildOptions, build_engine, calibration_beside, holds_fp16
from qtool.backends.tensorrt.shapes import ShapeRange, default_profile
from qtool.calib.calibfile import to_dict
from qtool.calib.signature import SeenShapes, merge_inputs, recorded_batch_axes, seen_ranges
from qtool.errors import QtoolError
from qtool.io.model import InputSpec
from tests.helpers.fake_tensorrt import FakeTensorRT
from tests.helpers.models import qdq_conv_model
from tests.tiny_models import save

F32 = np.dtype("float32")


def spec(name, shape, dtype=F32):
    return InputSpec(name, np.dtype(dtype), tuple(shape))


@pytest.mark.parametrize("shape, axis", [
    (("N", 3, 8, 8), 0), ((None, 8), 0), (("batch", 512), 0), ((2, "batch", 128), 1),
    ((2, "batch_size", 128), 1),
])
def test_the_batch_axis_alone_defaults_to_one(shape, axis):
    profile, defaulted = default_profile([spec("x", shape)])
    low = tuple(1 if a == axis else d for a, d in enumerate(shape))
    assert profile == {"x": ShapeRange("x", low, low, low)}
    assert defaulted == ["x"]


def test_the_batch_axis_recorded_in_calibration_wins_over_the_models_own():
    # the model names no batch, so axis 0 would be taken; the calibration ran with axis 1
    inputs = [spec("state", ("L", "T", 16))]
    with pytest.raises(QtoolError, match="dynamic axis 1 \\(T\\)"):
        default_profile(inputs, batch=4)
    profile, _ = default_profile(inputs, {"state": ((2, 1, 16), (2, 8, 16))}, batch=4,
                                 batch_axes={"state": 1})
    assert profile["state"] == ShapeRange("state", (2, 1, 16), (2, 4, 16), (2, 4, 16))


def test_batch_axis_alone_defaults_to_one_and_is_reported():
    profile, defaulted = default_profile([spec("x", ("N", 3, 8, 8)), spec("k", (2, 2))])
    assert profile == {"x": ShapeRange("x", (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))}
    assert defaulted == ["x"]


def test_batch_option_gives_one_to_n():
    profile, defaulted = default_profile([spec("x", ("N", 3, 8, 8))], batch=16)
    assert profile["x"] == ShapeRange("x", (1, 3, 8, 8), (16, 3, 8, 8), (16, 3, 8, 8))
    assert defaulted == []


def test_sizes_seen_in_calibration_set_every_dynamic_axis():
    inputs = [spec("img", ("N", 3, "H", "W")), spec("state", (2, "batch", 128)), spec("sr", (), "int64")]
    seen = {"img": ((2, 3, 320, 240), (8, 3, 640, 480)), "state": ((2, 1, 128), (2, 4, 128))}
    profile, defaulted = default_profile(inputs, seen)
    assert profile == {
        "img": ShapeRange("img", (1, 3, 320, 240), (8, 3, 640, 480), (8, 3, 640, 480)),
        "state": ShapeRange("state", (2, 1, 128), (2, 4, 128), (2, 4, 128)),
    }
    assert defaulted == []
    # --batch overrides the batch axis only
    profile, _ = default_profile(inputs, seen, batch=2)
    assert profile["img"] == ShapeRange("img", (1, 3, 320, 240), (2, 3, 640, 480), (2, 3, 640, 480))
    assert profile["state"] == ShapeRange("state", (2, 1, 128), (2, 2, 128), (2, 2, 128))


def test_a_dynamic_non_batch_axis_of_unknown_size_is_an_error_saying_how_to_give_it():
    inputs = [spec("img", ("N", 3, "H", "W"))]
    with pytest.raises(QtoolError) as info:
        default_profile(inputs)
    assert str(info.value) == (
        "input 'img' [N,3,H,W] has dynamic axis 2 (H), 3 (W) of unknown size (no calibration file "
        "gives the sizes seen): give its range with --shapes (e.g. --shapes "
        "img:1,3,1,1x8,3,8,8x32,3,32,32), or --calib with a calibration of this model, which "
        "records the sizes it saw")
    # a signature recorded at another rank says nothing about this input
    with pytest.raises(QtoolError, match=r"\(old\.calib\.json records no sizes for it\)"):
        default_profile(inputs, {"img": ((1, 3, 4), (1, 3, 4))}, seen_from="old.calib.json")


def test_seen_shapes_and_their_file_entries():
    seen = SeenShapes()
    batches = [{"x": np.zeros((4, 2, 6, 6)), "s": np.zeros(())}, {"x": np.zeros((1, 2, 7, 5))},
               {"x": np.zeros((3, 2, 6, 6)), "r": np.zeros((2,))}, {"r": np.zeros((2, 2))}]
    assert list(seen.watch(iter(batches))) == batches
    entries = seen.entries([spec("x", ("N", 2, "H", "W")), spec("s", ()), spec("r", ("N",))],
                           {"x": 0, "s": None, "r": 0}.get)
    assert entries == [
        {"name": "x", "dtype": "float32", "shape": ["N", 2, "H", "W"], "batch_axis": 0,
         "seen": {"min": [1, 2, 6, 5], "max": [4, 2, 7, 6]}},
        {"name": "s", "dtype": "float32", "shape": [], "batch_axis": None,
         "seen": {"min": [], "max": []}},
        {"name": "r", "dtype": "float32", "shape": ["N"], "batch_axis": 0},  # two ranks: no range
    ]
    assert seen_ranges(entries) == {"x": ((1, 2, 6, 5), (4, 2, 7, 6)), "s": ((), ())}
    assert recorded_batch_axes(entries + [{"name": "t", "batch_axis": "1"}]) == {
        "x": 0, "s": None, "r": 0}


def test_merged_shards_span_every_shards_range():
    a = [{"name": "x", "shape": ["N", 3], "seen": {"min": [2, 3], "max": [4, 3]}},
         {"name": "y", "shape": ["N"], "seen": {"min": [1], "max": [1]}}]
    b = [{"name": "x", "shape": ["N", 3], "seen": {"min": [1, 3], "max": [3, 3]}},
         {"name": "y", "shape": ["N"]}]
    assert merge_inputs([a, b]) == [{"name": "x", "shape": ["N", 3], "seen": {"min": [1, 3], "max": [4, 3]}},
                                    {"name": "y", "shape": ["N"]}]


def _write_calibration(path, seen):
    from qtool.calib.calibfile import Calibration, TensorCalibration

    calibration = Calibration(model_sha256="0" * 64, method="max",
                              tensors={"x": TensorCalibration(amax=1.0)},
                              inputs=[{"name": "x", "dtype": "float32", "shape": ["N", 1, 4, 4],
                                       "seen": seen}])
    path.write_text(json.dumps(to_dict(calibration)))
    return path


def _set_shapes(fake):
    return [call for call in fake.calls if call[0] == "set_shape"]


def test_build_takes_the_sizes_of_the_calibration_beside_the_model(tmp_path, caplog):
    model = save(qdq_conv_model(), tmp_path / "net.int8.onnx")
    assert calibration_beside(model) is None
    _write_calibration(tmp_path / "net.calib.json", {"min": [3, 1, 4, 4], "max": [16, 1, 4, 4]})
    assert calibration_beside(model) == tmp_path / "net.calib.json"
    fake = FakeTensorRT("10.16.1.11", [("x", (-1, 1, 4, 4))])
    notes = []
    with caplog.at_level(logging.WARNING, logger="qtool"):
        result = build_engine(model, None, BuildOptions(int8=True), trt=fake, notify=notes.append)
    assert _set_shapes(fake) == [("set_shape", "x", (1, 1, 4, 4), (16, 1, 4, 4), (16, 1, 4, 4))]
    assert notes[0] == (f"optimization profile 0 from the sizes seen in {tmp_path / 'net.calib.json'}: "
                        "--shapes x:1,1,4,4x16,1,4,4x16,1,4,4")
    assert caplog.records == []
    assert result.to_dict()["profiles"] == [{"x": {"min": [1, 1, 4, 4], "opt": [16, 1, 4, 4],
                                                   "max": [16, 1, 4, 4]}}]
    # --batch wins over the calibration's batch sizes
    fake = FakeTensorRT("10.16.1.11", [("x", (-1, 1, 4, 4))])
    build_engine(model, tmp_path / "b.engine", BuildOptions(int8=True, batch=4), trt=fake)
    assert _set_shapes(fake) == [("set_shape", "x", (1, 1, 4, 4), (4, 1, 4, 4), (4, 1, 4, 4))]


def test_build_without_any_size_warns_once_and_builds_batch_one(tmp_path, caplog):
    model = save(qdq_conv_model(), tmp_path / "net.onnx")
    fake = FakeTensorRT("11.4.0.106", [("x", (-1, 1, 4, 4))])
    with caplog.at_level(logging.WARNING, logger="qtool"):
        result = build_engine(model, None, BuildOptions(int8=True), trt=fake)
    assert [r.getMessage() for r in caplog.records] == [
        ("input 'x': dynamic batch axis of unknown size set to 1; optimization profile 0 is "
        "--shapes x:1,1,4,4x1,1,4,4x1,1,4,4 (give --batch N, --calib or --shapes for other sizes)")]
    assert _set_shapes(fake) == [("set_shape", "x", (1, 1, 4, 4), (1, 1, 4, 4), (1, 1, 4, 4))]
    assert result.notes == [caplog.records[0].getMessage()]


def test_an_unreadable_calibration_beside_the_model_is_ignored_but_a_named_one_is_not(tmp_path, caplog):
    model = save(qdq_conv_model(), tmp_path / "net.onnx")
    (tmp_path / "net.calib.json").write_text("{not json")
    fake = FakeTensorRT("11.4.0.106", [("x", (-1, 1, 4, 4))])
    with caplog.at_level(logging.WARNING, logger="qtool"):
        build_engine(model, None, BuildOptions(int8=True, batch=2), trt=fake)
    assert caplog.records[0].getMessage().startswith(f"ignoring {tmp_path / 'net.calib.json'} for the")
    with pytest.raises(QtoolError, match="is not a valid calibration file"):
        build_engine(model, None, BuildOptions(int8=True, calib=str(tmp_path / "net.calib.json")), trt=fake)


def fp16_qdq_model():
    from qtool.quantize.fp16 import convert_to_fp16

    return convert_to_fp16(qdq_conv_model(batch=2))


def test_holds_fp16():
    assert not holds_fp16(qdq_conv_model())
    assert holds_fp16(fp16_qdq_model())
    model = qdq_conv_model()
    model.graph.node.append(onnx.helper.make_node("Cast", ["y"], ["y16"], to=TensorProto.FLOAT16))
    assert holds_fp16(model)


def test_tensorrt10_builds_a_model_holding_fp16_strongly_typed(tmp_path):
    model = save(fp16_qdq_model(), tmp_path / "net.fp16.onnx")
    fake = FakeTensorRT("10.3.0", [("x", (2, 1, 4, 4))])
    notes = []
    result = build_engine(model, None, BuildOptions(int8=True, fp16=True), trt=fake, notify=notes.append)
    assert ("create_network", 1 << 1) in fake.calls  # NetworkDefinitionCreationFlag.STRONGLY_TYPED
    assert not [call for call in fake.calls if call[0] == "set_flag"]
    assert fake.parsed_path == str(model)  # no second FP16 conversion
    assert result.typing == "strongly typed (the model holds FP16 tensors)"
    assert result.precision_flags == [] and not result.fp16_converted
    assert notes == [
        ("net.fp16.onnx holds FP16 tensors: building a strongly typed network, so the model's own "
        "types decide each layer's precision (weakly typed, TensorRT 10 would need "
        "BuilderFlag.FP16 and could pick other precisions)"),
        "--fp16: net.fp16.onnx already holds FP16 tensors; it is built as it is"]
    # an FP32 Q/DQ model keeps the weakly typed INT8 build on TensorRT 10
    plain = save(qdq_conv_model(batch=2), tmp_path / "net.onnx")
    fake = FakeTensorRT("10.3.0", [("x", (2, 1, 4, 4))])
    assert build_engine(plain, None, BuildOptions(int8=True), trt=fake).typing == "weakly typed, INT8 flags"
