"""TensorRT backend on CPU: a recording stand-in for the tensorrt module (defined here, in the
tests only, and handed to the library through its `trt=` parameter) checks the exact calls made
for TensorRT 10 and 11; --shapes parsing and the engine-inspector summariser are pure functions;
the runner is driven through a stand-in engine and CUDA binding that compute real outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from qtool.backends.tensorrt.adapter import TrtAdapter
from qtool.backends.tensorrt.build import BuildOptions, build_engine, count_qdq_nodes, plan_build
from qtool.backends.tensorrt.inspect import (
    dtype_from_text,
    format_layer_table,
    summarize_engine_information,
)
from qtool.backends.tensorrt.logger import make_logger
from qtool.backends.tensorrt.outputs import merge_batches, write_npz
from qtool.backends.tensorrt.runtime import TensorRTRunner
from qtool.backends.tensorrt.shapes import (
    ShapeRange,
    check_profiles,
    parse_profiles,
    parse_shape_spec,
)
from qtool.errors import MissingDependency, QtoolError, UsageError
from qtool.io.model import InputSpec
from tests.helpers.fake_tensorrt import (
    CACHE_BYTES,
    ENGINE_BYTES,
    INSPECTOR_10,
    SEVERITY,
    FakeTensorRT,
    ILogger,
    Member,
    ParserError,
)
from tests.helpers.models import float_conv_model, qdq_conv_model

HINT_TAIL = ("pip install 'qtool[trt]' ('qtool[trt-cu12]' for a CUDA 12 driver) on a machine with an "
             "NVIDIA driver")


def save(model, path: Path) -> Path:
    onnx.save_model(model, str(path))
    return path


BATCH_INPUT = [("x", (-1, 1, 4, 4))]
SHAPES = ["x:1,1,4,4x8,1,4,4x32,1,4,4"]


def expected_calls(major: int, model: Path, cache: Path | None, *, flags=(), network_flags=0,
                   parse_path=None, cache_data=b"", workspace=True, level=True):
    calls = [("Builder",), ("create_network", network_flags), ("OnnxParser",),
             ("parse_from_file", str(parse_path or model)), ("create_builder_config",)]
    calls += [("set_flag", flag) for flag in flags]
    if workspace:
        calls.append(("set_memory_pool_limit", "WORKSPACE", 256 << 20))
    if level:
        calls.append(("config.builder_optimization_level", 4))
    calls += [("config.profiling_verbosity", "DETAILED"),
              ("create_optimization_profile",),
              ("set_shape", "x", (1, 1, 4, 4), (8, 1, 4, 4), (32, 1, 4, 4)),
              ("add_optimization_profile",)]
    if cache is not None:
        calls += [("create_timing_cache", cache_data), ("set_timing_cache", cache_data, False)]
    calls.append(("build_serialized_network",))
    if cache is not None:
        calls += [("get_timing_cache",), ("serialize",)]
    calls += [("Runtime",), ("deserialize_cuda_engine", ENGINE_BYTES), ("create_engine_inspector",),
              ("create_execution_context",), ("set_input_shape", "x", (8, 1, 4, 4)),
              ("inspector.execution_context",), ("get_engine_information", "JSON")]
    return calls


def full_options(tmp_path, **overrides) -> BuildOptions:
    values = {"int8": True, "shapes": list(SHAPES), "workspace_mib": 256, "builder_optimization_level": 4,
              "timing_cache": str(tmp_path / "tactics.cache")}
    values.update(overrides)
    return BuildOptions(**values)


# ----------------------------------------------------------------------------------------------
# build: exact call sequences

def test_tensorrt10_int8_build_sets_int8_flag_and_everything_in_order(tmp_path):
    model = save(qdq_conv_model(), tmp_path / "net.int8.onnx")
    fake = FakeTensorRT("10.16.1.11", BATCH_INPUT, inspector_json=INSPECTOR_10)
    result = build_engine(model, None, full_options(tmp_path), trt=fake)

    cache = tmp_path / "tactics.cache"
    assert fake.calls == expected_calls(10, model, cache, flags=["INT8"])
    engine = tmp_path / "net.int8.engine"
    assert engine.read_bytes() == ENGINE_BYTES
    assert cache.read_bytes() == CACHE_BYTES
    assert result.typing == "weakly typed, INT8 flags"
    assert result.precision_flags == ["INT8"]
    assert [(layer.name, layer.precision) for layer in result.summary.layers] == [
        ("x_Q", "conversion"), ("conv0", "int8")]
    assert result.summary.layers[1].onnx_nodes == ["x_DQ", "w_DQ", "conv0"]
    record = json.loads((tmp_path / "net.int8.engine.json").read_text())
    assert record["format"] == "qtool-engine"
    assert record["tensorrt"] == "10.16.1.11"
    assert record["engine"]["bytes"] == len(ENGINE_BYTES)
    assert record["layers"]["counts"] == {"int8": 1, "conversion": 1}
    assert record["profiles"] == [{"x": {"min": [1, 1, 4, 4], "opt": [8, 1, 4, 4], "max": [32, 1, 4, 4]}}]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_tensorrt10_fp16_sets_both_flags_and_existing_cache_is_read(tmp_path):
    model = save(qdq_conv_model(), tmp_path / "net.onnx")
    cache = tmp_path / "tactics.cache"
    cache.write_bytes(b"old-cache")
    fake = FakeTensorRT("10.3.0", BATCH_INPUT)
    build_engine(model, tmp_path / "out.engine", full_options(tmp_path, fp16=True), trt=fake)
    assert fake.calls == expected_calls(10, model, cache, flags=["INT8", "FP16"], cache_data=b"old-cache")
    assert cache.read_bytes() == CACHE_BYTES


def test_tensorrt10_strongly_typed_uses_the_creation_flag_and_no_precision_flags(tmp_path):
    model = save(qdq_conv_model(), tmp_path / "net.onnx")
    fake = FakeTensorRT("10.16.1.11", BATCH_INPUT)
    result = build_engine(model, None, full_options(tmp_path, strongly_typed=True, timing_cache=None,
                                                    workspace_mib=None, builder_optimization_level=None),
                          trt=fake)
    assert fake.calls == expected_calls(10, model, None, network_flags=1 << 1, workspace=False, level=False)
    assert result.typing == "strongly typed"


@pytest.mark.parametrize("version", ["11.0.0.114", "11.4.0.106"])
def test_tensorrt11_int8_build_sets_no_precision_flag_and_no_network_flag(tmp_path, version):
    model = save(qdq_conv_model(), tmp_path / "net.onnx")
    fake = FakeTensorRT(version, BATCH_INPUT, inspector_json=INSPECTOR_10)
    notes = []
    result = build_engine(model, None, full_options(tmp_path, strongly_typed=True), trt=fake,
                          notify=notes.append)
    assert fake.calls == expected_calls(11, model, tmp_path / "tactics.cache")
    assert result.typing == "strongly typed"
    assert result.precision_flags == []
    assert notes == ["--strongly-typed: TensorRT 11 networks are always strongly typed"]


def test_tensorrt11_fp16_builds_from_a_temporary_fp16_copy(tmp_path, monkeypatch):
    model_path = save(qdq_conv_model(), tmp_path / "net.onnx")
    before = model_path.read_bytes()
    converted = []

    def convert_to_fp16(model, keep_io_types=True):
        converted.append(keep_io_types)
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        copy.doc_string = "fp16 copy"
        return copy

    fp16 = types.ModuleType("qtool.quantize.fp16")
    fp16.convert_to_fp16 = convert_to_fp16
    monkeypatch.setitem(sys.modules, "qtool.quantize.fp16", fp16)
    fake = FakeTensorRT("11.1.0", BATCH_INPUT)
    notes = []
    result = build_engine(model_path, None, full_options(tmp_path, fp16=True), trt=fake, notify=notes.append)

    parsed = Path(fake.parsed_path)
    assert parsed != model_path and parsed.name == "net.fp16.onnx"
    assert fake.parsed_exists and not parsed.exists()  # existed while parsed, removed after
    assert fake.calls == expected_calls(11, model_path, tmp_path / "tactics.cache", parse_path=parsed)
    assert converted == [True]
    assert result.fp16_converted
    assert model_path.read_bytes() == before
    assert notes == [("TensorRT 11 has no FP16 builder flag: converting a temporary copy of net.onnx to "
                      "FP16 outside its Q/DQ nodes (inputs and outputs stay FP32); the model file is not changed")]


def test_tensorrt10_qdq_model_without_int8_option_still_gets_the_int8_flag(tmp_path):
    model = save(qdq_conv_model(), tmp_path / "net.onnx")
    fake = FakeTensorRT("10.16.1.11", BATCH_INPUT)
    notes = []
    build_engine(model, None, full_options(tmp_path, int8=False), trt=fake, notify=notes.append)
    assert ("set_flag", "INT8") in fake.calls
    assert notes == [("net.onnx has Q/DQ nodes: enabling BuilderFlag.INT8 (TensorRT 10 needs it for "
                      "explicitly quantized networks)")]


def test_timing_cache_from_another_gpu_is_replaced_by_a_new_one(tmp_path):
    model = save(qdq_conv_model(), tmp_path / "net.onnx")
    cache = tmp_path / "tactics.cache"
    cache.write_bytes(b"foreign")
    fake = FakeTensorRT("10.16.1.11", BATCH_INPUT, cache_accepts=[False, True])
    notes = []
    build_engine(model, None, full_options(tmp_path), trt=fake, notify=notes.append)
    cache_calls = [c for c in fake.calls if "timing_cache" in c[0]]
    assert cache_calls == [("create_timing_cache", b"foreign"), ("set_timing_cache", b"foreign", False),
                           ("create_timing_cache", b""), ("set_timing_cache", b"", False),
                           ("get_timing_cache",)]
    assert notes == [(f"timing cache {cache} is not used: it was made by another TensorRT version or GPU; "
                      "starting a new one")]
    assert cache.read_bytes() == CACHE_BYTES


def test_unreadable_timing_cache_is_replaced_by_a_new_one(tmp_path):
    model = save(qdq_conv_model(), tmp_path / "net.onnx")
    cache = tmp_path / "tactics.cache"
    cache.write_bytes(b"garbage")
    fake = FakeTensorRT("11.4.0.106", BATCH_INPUT)
    notes = []
    build_engine(model, None, full_options(tmp_path), trt=fake, notify=notes.append)
    cache_calls = [c for c in fake.calls if "timing_cache" in c[0]]
    assert cache_calls == [("create_timing_cache", b"garbage"), ("create_timing_cache", b""),
                           ("set_timing_cache", b"", False), ("get_timing_cache",)]
    assert notes == [f"timing cache {cache} is not used: it is not a TensorRT timing cache; starting a new one"]
    assert cache.read_bytes() == CACHE_BYTES


def test_parser_error_names_the_node_and_writes_nothing(tmp_path):
    model = save(qdq_conv_model(), tmp_path / "net.onnx")
    errors = [ParserError("Assertion failed: unsupported dilation  \n in conv", node=3, node_name="conv0",
                          operator="Conv"), ParserError("second")]
    fake = FakeTensorRT("10.16.1.11", BATCH_INPUT, parse_ok=False, parser_errors=errors)
    with pytest.raises(QtoolError) as info:
        build_engine(model, None, full_options(tmp_path), trt=fake)
    assert str(info.value) == (f"TensorRT cannot parse {model}: node 'conv0' (Conv): Assertion failed: "
                               "unsupported dilation in conv [UNSUPPORTED_NODE] (and 1 more parser error)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]


def test_parser_error_without_a_node_name_falls_back_to_the_node_index(tmp_path):
    model = save(qdq_conv_model(), tmp_path / "net.onnx")
    fake = FakeTensorRT("10.0.1", BATCH_INPUT, parse_ok=False,
                        parser_errors=[ParserError("bad weights", node=2, code="ErrorCode.INVALID_NODE")])
    with pytest.raises(QtoolError, match=r"TensorRT cannot parse .*: node #2: bad weights \[INVALID_NODE\]$"):
        build_engine(model, None, full_options(tmp_path), trt=fake)


def test_builder_that_cannot_start_cuda_is_a_missing_dependency(tmp_path):
    model = save(qdq_conv_model(), tmp_path / "net.onnx")
    fake = FakeTensorRT("10.16.1.11", BATCH_INPUT, builder_error=TypeError("__init__(): incompatible"))
    with pytest.raises(MissingDependency) as info:
        build_engine(model, None, full_options(tmp_path), trt=fake)
    assert str(info.value) == ("TensorRT 10.16.1.11 cannot start CUDA (CUDA initialization failure with "
                               "error: 35); pip install 'qtool[trt]' ('qtool[trt-cu12]' for a CUDA 12 "
                               "driver) on a machine with an NVIDIA driver")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]


def test_failed_build_reports_tensorrts_last_error_and_writes_nothing(tmp_path):
    model = save(qdq_conv_model(), tmp_path / "net.onnx")
    fake = FakeTensorRT("11.4.0.106", BATCH_INPUT, build_fails=True)
    with pytest.raises(QtoolError) as info:
        build_engine(model, None, full_options(tmp_path), trt=fake)
    assert str(info.value) == (f"TensorRT could not build an engine from {model}: "
                               "Error Code 4: Internal Error (no implementation for conv0)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]


def test_tensorrt_older_than_10_is_refused():
    with pytest.raises(MissingDependency, match=r"TensorRT 8\.6\.1 is too old: qtool needs TensorRT 10"):
        TrtAdapter.for_module(SimpleNamespace(__version__="8.6.1"))


def test_input_checks_come_before_tensorrt(tmp_path):
    plain = save(float_conv_model(), tmp_path / "plain.onnx")
    fake = FakeTensorRT("10.16.1.11", [("x", (1, 1, 4, 4))])
    with pytest.raises(QtoolError, match=r"has no Q/DQ .* run `qtool quantize` first"):
        build_engine(plain, None, BuildOptions(int8=True), trt=fake)
    spatial = qdq_conv_model()
    spatial.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    spatial = save(spatial, tmp_path / "spatial.onnx")
    with pytest.raises(QtoolError) as info:
        build_engine(spatial, None, BuildOptions(int8=True), trt=fake)
    assert str(info.value) == (
        "input 'x' [N,1,H,4] has dynamic axis 2 (H) of unknown size (no calibration file gives the "
        "sizes seen): give its range with --shapes (e.g. --shapes x:1,1,1,4x8,1,8,4x32,1,32,4), or "
        "--calib with a calibration of this model, which records the sizes it saw")
    dynamic = save(qdq_conv_model(), tmp_path / "dyn.onnx")
    with pytest.raises(QtoolError, match="is not a folder"):
        build_engine(dynamic, dynamic / "x.engine", BuildOptions(shapes=SHAPES), trt=fake)
    with pytest.raises(QtoolError, match="is a folder, not a regular file"):
        build_engine(dynamic, tmp_path, BuildOptions(shapes=SHAPES), trt=fake)
    with pytest.raises(QtoolError, match="would overwrite the input"):
        build_engine(dynamic, dynamic, BuildOptions(shapes=SHAPES), trt=fake)
    with pytest.raises(UsageError, match="--workspace must be a positive"):
        build_engine(dynamic, None, BuildOptions(shapes=SHAPES, workspace_mib=0), trt=fake)
    assert fake.calls == []


def test_static_model_needs_no_profile(tmp_path):
    model = save(qdq_conv_model(batch=2), tmp_path / "static.onnx")
    fake = FakeTensorRT("11.4.0.106", [("x", (2, 1, 4, 4))])
    build_engine(model, None, BuildOptions(int8=True), trt=fake)
    assert "create_optimization_profile" not in [c[0] for c in fake.calls]
    assert "create_execution_context" not in [c[0] for c in fake.calls]  # no shapes to set


def test_count_qdq_nodes_counts_default_domain_only():
    model = qdq_conv_model()
    assert count_qdq_nodes(model) == 3
    model.graph.node[0].domain = "com.microsoft"
    assert count_qdq_nodes(model) == 2
    assert count_qdq_nodes(float_conv_model()) == 0


def test_plan_build_default_output_is_the_model_stem(tmp_path):
    model = save(qdq_conv_model(batch=1), tmp_path / "net.int8.onnx")
    assert plan_build(model).output == tmp_path / "net.int8.engine"


# ----------------------------------------------------------------------------------------------
# --shapes

def test_parse_shape_spec_three_shapes_one_shape_and_colon_names():
    assert parse_shape_spec("input:1,3,224,224x8,3,224,224x32,3,224,224") == ShapeRange(
        "input", (1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
    assert parse_shape_spec("ids:4,128") == ShapeRange("ids", (4, 128), (4, 128), (4, 128))
    assert parse_shape_spec("input_1:0:1x2x3").name == "input_1:0"
    assert parse_shape_spec("x: 1, 2 x 3, 4 x 5, 6") == ShapeRange("x", (1, 2), (3, 4), (5, 6))


@pytest.mark.parametrize("spec, message", [
    ("input", "invalid --shapes 'input': expected NAME:MINxOPTxMAX (e.g. input:1,3x8,3x32,3)"),
    (":1,2", "invalid --shapes ':1,2': expected NAME:MINxOPTxMAX (e.g. input:1,3x8,3x32,3)"),
    ("x:1x2", "invalid --shapes 'x:1x2': give one shape or three (MINxOPTxMAX), not 2"),
    ("x:1,a", "invalid --shapes 'x:1,a': 'a' is not a non-negative integer dimension"),
    ("x:1,-1", "invalid --shapes 'x:1,-1': '-1' is not a non-negative integer dimension"),
    ("x:", "invalid --shapes 'x:': empty shape (dimensions are joined by ',')"),
    ("x:1,2x3x5,6", "invalid --shapes 'x:1,2x3x5,6': MIN, OPT and MAX have different ranks"),
    ("x:8x4x16", "invalid --shapes 'x:8x4x16': axis 0 needs MIN <= OPT <= MAX (8, 4, 16)"),
])
def test_parse_shape_spec_errors(spec, message):
    with pytest.raises(QtoolError) as info:
        parse_shape_spec(spec)
    assert str(info.value) == message


def test_repeated_inputs_start_new_profiles():
    profiles = parse_profiles(["a:1,8x4,8x8,8", "b:1x4x8", "a:16,8x32,8x64,8", "b:16x32x64"])
    assert [list(p) for p in profiles] == [["a", "b"], ["a", "b"]]
    assert profiles[1]["a"].max == (64, 8)
    assert profiles[1]["b"].min == (16,)
    assert parse_profiles([]) == []


def test_check_profiles_against_model_inputs():
    specs = [InputSpec("a", np.dtype("float32"), ("N", 8)), InputSpec("s", np.dtype("int64"), (2,))]
    check_profiles(parse_profiles(["a:1,8x4,8x8,8"]), specs)
    check_profiles(parse_profiles(["a:1,8x4,8x8,8", "s:2"]), specs)
    cases = [
        (["a:1,8x4,8x8,8", "zz:1"], "--shapes names 'zz', which is not an input of the model (inputs: a, s)"),
        (["a:1x2x3"], "--shapes a:1x2x3: input 'a' has rank 2, not 1"),
        (["a:1,4x1,8x1,8"], "--shapes a:1,4x1,8x1,8: axis 1 of input 'a' is fixed at 8 in the model"),
        (["a:1,8x2,8x4,8", "s:2", "s:2"],
         ("optimization profile 1 has no range for dynamic input 'a' [N,8] (the k-th --shapes of an "
          "input belongs to profile k)")),
    ]
    for specs_given, message in cases:
        with pytest.raises(QtoolError) as info:
            check_profiles(parse_profiles(specs_given), specs)
        assert str(info.value) == message


# ----------------------------------------------------------------------------------------------
# the engine-inspector summariser

@pytest.mark.parametrize("text, dtype", [
    ("Row major linear FP32 format (kLINEAR)", "fp32"),
    ("Channel major FP16 format where channel % 8 == 0 (kHWC8)", "fp16"),
    ("Thirty-two wide channel vectorized row major Int8 format.", "int8"),
    ("Float", "fp32"), ("Half", "fp16"), ("BFloat16", "bf16"), ("Int8", "int8"), ("UInt8", "uint8"),
    ("Int64", "int64"), ("Bool", "bool"), ("FP8", "fp8"),
    ("N/A due to dynamic shapes", None), ("", None), (None, None),
])
def test_dtype_from_text(text, dtype):
    assert dtype_from_text(text) == dtype


def test_summary_of_a_tensorrt10_detailed_engine():
    info = json.dumps({
        "Layers": [
            {"Name": "Reformatting CopyNode for Input Tensor 0 to conv1", "LayerType": "Reformat",
             "Inputs": [{"Name": "x", "Format/Datatype": "Row major linear FP32 format (kLINEAR)"}],
             "Outputs": [{"Name": "x_r", "Format/Datatype": "Channel major FP16 format (kHWC8)"}]},
            {"Name": "conv1 + relu1", "LayerType": "CaskConvolution",
             "Inputs": [{"Name": "a", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
             "Outputs": [{"Name": "b", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
             "TacticValue": "0x00000000000003e8"},
            {"Name": "softmax", "LayerType": "CaskSoftMaxV2",
             "Inputs": [{"Name": "b2", "Format/Datatype": "Channel major FP16 format where channel % 2 == 0"}],
             "Outputs": [{"Name": "c", "Format/Datatype": "Channel major FP16 format where channel % 2 == 0"}]},
            {"Name": "head", "LayerType": "CaskGemmConvolution",
             "Inputs": [{"Name": "c2", "Format/Datatype": "Row major linear FP32 format (kLINEAR)"},
                        {"Name": "c3", "Format/Datatype": "Row major linear FP16 format (kLINEAR)"}],
             "Outputs": [{"Name": "y", "Format/Datatype": "Row major linear FP32 format (kLINEAR)"}]},
            {"Name": "shape_math", "LayerType": "ElementWise",
             "Inputs": [{"Name": "s", "Format/Datatype": "Int64"}], "Outputs": [{"Name": "t", "Format/Datatype": "Int64"}]},
            {"Name": "dyn", "LayerType": "NoOp",
             "Inputs": [{"Name": "u", "Format/Datatype": "N/A due to dynamic shapes"}],
             "Outputs": [{"Name": "v", "Format/Datatype": "N/A due to dynamic shapes"}]},
        ],
        "Bindings": ["x", "y"],
    })
    summary = summarize_engine_information(info)
    assert [layer.precision for layer in summary.layers] == [
        "conversion", "int8", "fp16", "fp32", "other", "unknown"]
    assert summary.counts() == {"int8": 1, "fp16": 1, "fp32": 1, "conversion": 1, "other": 1, "unknown": 1}
    assert (summary.quantized, summary.higher_precision) == (1, 2)
    assert summary.io_tensors == [{"name": "x"}, {"name": "y"}]
    assert summary.layers[1].tactic == "0x00000000000003e8"
    assert summary.summary_line() == ("layers: 6 total, 1 int8, 2 higher precision (1 fp32, 1 fp16), "
                                      "1 conversion, 1 other, 1 unknown")
    table = format_layer_table(summary).splitlines()
    assert table[0] == "#  precision  type                 layer"
    assert table[2] == "1  int8       CaskConvolution      conv1 + relu1"


def test_summary_of_a_tensorrt11_engine_with_io_tensors_and_split_type_keys():
    info = json.dumps({
        "Layers": [{"Name": "gemm", "LayerType": "gemm",
                    "Inputs": [{"Name": "in", "Format": "Row major linear", "Datatype": "Int8"}],
                    "Outputs": [{"Name": "out", "Format": "Row major linear", "DataType": "Half"}]},
                   {"Name": "out_cast", "LayerType": "Cast", "Inputs": [{"Name": "out", "DataType": "Half"}],
                    "Outputs": [{"Name": "y", "DataType": "Float"}]}],
        "I/O Tensors": [{"Name": "in", "IOMode": "Input", "DataType": "Int8", "Dimensions": [1, 16]},
                        {"Name": "y", "IOMode": "Output", "DataType": "Float", "Dimensions": [1, 16]}],
    })
    summary = summarize_engine_information(info)
    assert [(layer.name, layer.precision) for layer in summary.layers] == [("gemm", "int8"), ("out_cast", "fp16")]
    assert summary.io_tensors == [{"name": "in", "mode": "Input", "dtype": "int8", "shape": [1, 16]},
                                  {"name": "y", "mode": "Output", "dtype": "fp32", "shape": [1, 16]}]


def test_summary_of_names_only_bare_lists_and_garbage():
    names_only = summarize_engine_information('{"Layers": ["conv1 + relu1", "fc"], "Bindings": ["x", "y"]}')
    assert [layer.precision for layer in names_only.layers] == ["unknown", "unknown"]
    assert not names_only.detailed
    assert "ProfilingVerbosity.DETAILED" in names_only.note
    bare = summarize_engine_information([{"Name": "c", "LayerType": "Constant",
                                          "Outputs": [{"Name": "w", "Format/Datatype": "Int8"}]}])
    assert bare.layers[0].precision == "int8" and bare.detailed
    assert summarize_engine_information("not json").note == "the engine inspector's output is not JSON"
    assert summarize_engine_information("42").layers == []
    weird = summarize_engine_information('{"Layers": [{"Name": 3, "Inputs": "x", "Outputs": [7]}]}')
    assert weird.layers[0].precision == "unknown"
    assert summarize_engine_information('{"Layers": []}').summary_line() == "layers: none reported"


def test_local_function_suffix_is_not_part_of_the_node_name():
    text = json.dumps({"Layers": [{"Name": "c", "LayerType": "X", "Inputs": [], "Outputs": [],
                                   "Metadata": "[ONNX Layer: /blk/conv | Local Function: Block]\x1e"
                                               "[ONNX Layer: a|b]\x1e[ONNX Layer: /head/Gemm]"}]})
    assert summarize_engine_information(text).layers[0].onnx_nodes == ["/blk/conv", "a|b", "/head/Gemm"]


def test_raw_control_characters_in_metadata_are_accepted():
    text = '{"Layers": [{"Name": "c", "LayerType": "X", "Metadata": "[ONNX Layer: a]\x1e[ONNX Layer: b]", ' \
           '"Inputs": [{"Name": "i", "Format/Datatype": "Half"}], "Outputs": []}]}'
    layer = summarize_engine_information(text).layers[0]
    assert (layer.precision, layer.onnx_nodes) == ("fp16", ["a", "b"])


# ----------------------------------------------------------------------------------------------
# logger

def test_logger_prints_on_stderr_up_to_its_level_and_keeps_errors(capsys):
    logger = make_logger(SimpleNamespace(ILogger=ILogger), "WARNING")
    logger.log(SEVERITY.INFO, "hidden")
    logger.log(SEVERITY.WARNING, "careful")
    logger.log(SEVERITY.ERROR, "  broken\n twice ")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "[TensorRT] warning: careful\n[TensorRT] error: broken\n twice\n"
    assert logger.last_error() == "broken twice"
    silent = make_logger(SimpleNamespace(ILogger=ILogger), None)
    silent.log(SEVERITY.INTERNAL_ERROR, "fatal")
    assert capsys.readouterr().err == "" and silent.last_error() == "fatal"


def test_one_logger_per_tensorrt_module_with_fresh_errors_and_level():
    from qtool.backends.tensorrt.logger import shared_logger

    module = SimpleNamespace(ILogger=ILogger)
    first = shared_logger(module, "WARNING")
    first.log(SEVERITY.ERROR, "old failure")
    second = shared_logger(module, None)
    assert second is first  # TensorRT keeps calling the logger it was first given
    assert second.last_error() == "" and second.max_rank == -1
    assert shared_logger(SimpleNamespace(ILogger=ILogger)) is not first


# ----------------------------------------------------------------------------------------------
# runner: a stand-in engine computing y = 2 * x + 1 on fake device memory

class FakeMemory:
    """A CUDA binding stand-in: device memory is a dict of byte arrays."""

    def __init__(self):
        self.blocks: dict[int, bytearray] = {}
        self.next = 0x1000
        self.log: list[tuple] = []

    def malloc(self, nbytes):
        ptr = self.next
        self.next += 0x1000 + nbytes
        self.blocks[ptr] = bytearray(nbytes)
        self.log.append(("malloc", nbytes))
        return ptr

    def free(self, ptr):
        del self.blocks[ptr]
        self.log.append(("free",))

    def stream_create(self):
        return "stream"

    def stream_handle(self, stream):
        return 77

    def stream_synchronize(self, stream):
        self.log.append(("sync",))

    def stream_destroy(self, stream):
        self.log.append(("destroy",))

    def memcpy_htod_async(self, dst, host, stream):
        self.blocks[dst][:host.nbytes] = host.tobytes()

    def memcpy_dtoh_async(self, host, src, stream):
        host[...] = np.frombuffer(bytes(self.blocks[src][:host.nbytes]), host.dtype).reshape(host.shape)

    def close(self):
        self.log.append(("close",))


class FakeRunEngine:
    """Input x float32 [-1, 3] with profiles [1..4] and [5..16]; output y = 2x + 1."""

    def __init__(self, fake, memory):
        self.fake, self.memory = fake, memory
        self.num_io_tensors = 2
        self.num_optimization_profiles = 2

    def get_tensor_name(self, index):
        return ["x", "y"][index]

    def get_tensor_mode(self, name):
        return self.fake.TensorIOMode.INPUT if name == "x" else self.fake.TensorIOMode.OUTPUT

    def is_shape_inference_io(self, name):
        return False

    def get_tensor_shape(self, name):
        return (-1, 3)

    def get_tensor_dtype(self, name):
        return Member("FLOAT", 0)

    def get_tensor_profile_shape(self, name, profile):
        return [((1, 3), (2, 3), (4, 3)), ((5, 3), (8, 3), (16, 3))][profile]

    def create_execution_context(self):
        return FakeRunContext(self.fake, self.memory)


class FakeRunContext:
    def __init__(self, fake, memory):
        self.fake, self.memory = fake, memory
        self.shapes, self.addresses = {}, {}

    def set_optimization_profile_async(self, index, handle):
        self.fake.calls.append(("set_optimization_profile_async", index, handle))
        if index == self.fake.refuse_profile:  # as TensorRT's bindings report a false return
            raise RuntimeError("Error in set optimization profile async.")
        return True

    def set_input_shape(self, name, shape):
        self.fake.calls.append(("set_input_shape", name, tuple(shape)))
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shapes["x"]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def execute_async_v3(self, handle):
        self.fake.calls.append(("execute_async_v3", handle))
        count = int(np.prod(self.shapes["x"]))
        x = np.frombuffer(bytes(self.memory.blocks[self.addresses["x"]][:4 * count]), np.float32)
        y = (2 * x + 1).astype(np.float32)
        self.memory.blocks[self.addresses["y"]][:y.nbytes] = y.tobytes()
        return True


def runner_fakes():
    fake = FakeTensorRT("10.16.1.11", [])
    fake.refuse_profile = None
    memory = FakeMemory()

    class Runtime:
        def __init__(self, logger):
            fake.calls.append(("Runtime",))

        def deserialize_cuda_engine(self, data):
            fake.calls.append(("deserialize_cuda_engine", bytes(data)))
            return FakeRunEngine(fake, memory) if bytes(data) == ENGINE_BYTES else None

    fake.Runtime = Runtime
    return fake, memory


def test_runner_computes_through_device_memory_and_switches_profiles(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(ENGINE_BYTES)
    fake, memory = runner_fakes()
    batches = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((8, 3), np.float32),
               np.full((3, 3), -1.5, np.float32)]
    with TensorRTRunner(engine, trt=fake, cuda=memory) as runner:
        assert runner.input_specs == [InputSpec("x", np.dtype("float32"), (None, 3))]
        assert runner.output_names == ["y"]
        outputs = [runner.run({"x": batch, "label": np.zeros(1)}) for batch in batches]
    for batch, out in zip(batches, outputs):
        np.testing.assert_array_equal(out["y"], 2 * batch + 1)
    assert fake.calls == [
        ("Runtime",), ("deserialize_cuda_engine", ENGINE_BYTES),
        ("set_input_shape", "x", (2, 3)), ("execute_async_v3", 77),
        ("set_optimization_profile_async", 1, 77), ("set_input_shape", "x", (8, 3)), ("execute_async_v3", 77),
        ("set_optimization_profile_async", 0, 77), ("set_input_shape", "x", (3, 3)), ("execute_async_v3", 77),
    ]
    # buffers grow for the batch of 8 and are reused for the batch of 3; all freed at the end
    assert [entry[0] for entry in memory.log].count("malloc") == 4
    assert memory.blocks == {}
    assert memory.log[-1] == ("destroy",)  # an injected binding is not closed by the runner


def test_runner_errors_are_one_line(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(ENGINE_BYTES)
    fake, memory = runner_fakes()
    with TensorRTRunner(engine, trt=fake, cuda=memory) as runner:
        with pytest.raises(QtoolError, match=r"input 'x': the engine takes float32, the data is float64"):
            runner.run({"x": np.zeros((2, 3))})
        with pytest.raises(QtoolError, match=r"no data for engine input 'x' \(got: y\)"):
            runner.run({"y": np.zeros((2, 3), np.float32)})
        with pytest.raises(QtoolError, match=r"shape \[2, 4\] does not fit the engine's \[-1, 3\]"):
            runner.run({"x": np.zeros((2, 4), np.float32)})
        with pytest.raises(QtoolError, match=r"fits no optimization profile .*profile 0: \[1, 3\]\.\.\[4, 3\], "
                                             r"profile 1: \[5, 3\]\.\.\[16, 3\]"):
            runner.run({"x": np.zeros((17, 3), np.float32)})
    fake.refuse_profile = 1
    with TensorRTRunner(engine, trt=fake, cuda=memory) as runner, pytest.raises(
            QtoolError, match=r"TensorRT cannot switch .*m\.engine to optimization profile 1: Error in set"):
        runner.run({"x": np.zeros((8, 3), np.float32)})
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"garbage")
    with pytest.raises(QtoolError, match=r"TensorRT 10\.16\.1\.11 cannot load .*bad\.engine: not an engine"), \
            TensorRTRunner(bad, trt=fake, cuda=memory):
        pass
    with pytest.raises(QtoolError, match="engine not found"):
        TensorRTRunner(tmp_path / "missing.engine", trt=fake, cuda=memory).open()


# ----------------------------------------------------------------------------------------------
# outputs

def test_merge_batches_concatenates_or_keeps_batches_apart(tmp_path):
    batches = [{"logits": np.ones((2, 3)), "mask": np.zeros((2, 5))},
               {"logits": np.zeros((1, 3)), "mask": np.zeros((1, 7))}]
    merged = merge_batches(batches, ["logits", "mask"])
    assert sorted(merged) == ["logits", "mask/0", "mask/1"]
    np.testing.assert_array_equal(merged["logits"], np.concatenate([np.ones((2, 3)), np.zeros((1, 3))]))
    path = tmp_path / "out.npz"
    write_npz(path, {**merged, "file": np.arange(3), "/fc/Gemm_output_0": np.eye(2)})
    with np.load(path) as data:
        assert sorted(data.files) == ["/fc/Gemm_output_0", "file", "logits", "mask/0", "mask/1"]
        np.testing.assert_array_equal(data["mask/1"], np.zeros((1, 7)))
        np.testing.assert_array_equal(data["file"], np.arange(3))


def test_merge_batches_concatenates_along_the_axis_holding_the_samples():
    state = [np.full((2, 3, 4), 0.0), np.full((2, 3, 4), 1.0), np.full((2, 1, 4), 2.0)]
    batches = [{"out": np.zeros((n, 1)), "state": s, "summary": np.zeros((1, 5))}
               for n, s in zip([3, 3, 1], state)]
    merged = merge_batches(batches, ["out", "state", "summary"], counts=[3, 3, 1])
    assert merged["out"].shape == (7, 1)
    assert merged["state"].shape == (2, 7, 4)  # the samples are on axis 1
    np.testing.assert_array_equal(merged["state"][0, :, 0], [0, 0, 0, 1, 1, 1, 2])
    # one row per batch, not per sample: kept apart rather than stacked as if they were samples
    assert sorted(k for k in merged if k.startswith("summary")) == ["summary/0", "summary/1",
                                                                    "summary/2"]


def test_backend_and_cli_modules_import_no_tensorrt_or_cuda():
    code = ("import sys, qtool.backends.tensorrt.build, qtool.backends.tensorrt.run, "
            "qtool.backends.tensorrt.cuda, qtool.cli.build, qtool.cli.run, qtool.cli.doctor; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'cuda', 'pycuda')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_run_engine_writes_merged_outputs_and_a_record(tmp_path):
    from qtool.backends.tensorrt.run import RunOptions, run_engine

    engine = tmp_path / "m.engine"
    engine.write_bytes(ENGINE_BYTES)
    x = np.linspace(-1, 1, 30, dtype=np.float32).reshape(10, 3)
    np.savez(tmp_path / "data.npz", x=x)
    fake, memory = runner_fakes()
    result = run_engine(engine, tmp_path / "data.npz", None, RunOptions(batch_size=4), trt=fake, cuda=memory)
    assert result.output == tmp_path / "m.outputs.npz"
    with np.load(result.output) as data:
        assert data.files == ["y"]
        np.testing.assert_array_equal(data["y"], 2 * x + 1)
    record = json.loads((tmp_path / "m.outputs.npz.json").read_text())
    assert (record["format"], record["batches"], record["samples"]) == ("qtool-run", 3, 10)
    assert record["outputs"] == {"y": {"shape": [10, 3], "dtype": "float32"}}
    assert [c for c in fake.calls if c[0] == "set_input_shape"] == [
        ("set_input_shape", "x", (4, 3)), ("set_input_shape", "x", (4, 3)), ("set_input_shape", "x", (2, 3))]


class FakeCudart:
    """cuda-python's runtime module as far as the binding uses it; every call fails like a
    machine whose driver is older than the binding's CUDA runtime (or has no driver: 0)."""

    def __init__(self, error=35, driver=0, runtime=13000):
        self.err = SimpleNamespace(value=error)
        self.driver, self.runtime = driver, runtime

    def cudaGetErrorName(self, err):
        return (SimpleNamespace(value=0), b"cudaErrorInsufficientDriver")

    def cudaGetErrorString(self, err):
        return (SimpleNamespace(value=0), b"CUDA driver version is insufficient for CUDA runtime version")

    def cudaFree(self, ptr):
        return (self.err,)

    def cudaMalloc(self, nbytes):
        return (self.err, None)

    def cudaDriverGetVersion(self):
        return (SimpleNamespace(value=0), self.driver)

    def cudaRuntimeGetVersion(self):
        return (SimpleNamespace(value=0), self.runtime)


class FakePyCudaDriver(types.ModuleType):
    """pycuda.driver on a working machine, as far as the loader's init() goes."""

    def __init__(self):
        super().__init__("pycuda.driver")
        self.calls = []

    def init(self):
        self.calls.append("init")

    def Device(self, index):
        driver = self

        class Context:
            def push(self):
                driver.calls.append(("push", index))

            def detach(self):
                driver.calls.append("detach")

        return SimpleNamespace(retain_primary_context=lambda: Context())


def test_cuda_python_binding_errors(monkeypatch):
    from qtool.backends.tensorrt.cuda import CudaError, CudaPythonBinding, load_cuda_binding

    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", FakeCudart(driver=12040))
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(MissingDependency) as info:
        load_cuda_binding()
    message = str(info.value)
    assert message.startswith(
        "no CUDA Python binding works (cuda-python (cuda.bindings.runtime) ")
    assert (": CUDA initialisation failed (cudaErrorInsufficientDriver: CUDA driver version is "
            "insufficient for CUDA runtime version) (the driver supports CUDA 12.4; this cuda-python "
            "(cuda.bindings.runtime) needs CUDA 13.0: pip install 'qtool[trt-cu12]'); pycuda: ") in message
    assert message.endswith(HINT_TAIL)
    binding = CudaPythonBinding(FakeCudart(), "cuda-python", "13")
    with pytest.raises(CudaError, match=r"CUDA malloc of 64 bytes failed \(cudaErrorInsufficientDriver"):
        binding.malloc(64)
    with pytest.raises(CudaError, match="no NVIDIA driver is installed"):
        binding.describe_devices()


def test_a_binding_that_imports_but_cannot_start_cuda_is_passed_over(monkeypatch):
    """Selection only: the loader moves on to pycuda and says what it passed over."""
    from qtool.backends.tensorrt.cuda import PyCudaBinding, load_cuda_binding

    driver = FakePyCudaDriver()
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", FakeCudart(driver=12040))
    monkeypatch.setitem(sys.modules, "cuda.cudart", FakeCudart(driver=12040))
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    binding = load_cuda_binding()
    assert isinstance(binding, PyCudaBinding)
    assert driver.calls == ["init", ("push", 0)]
    assert len(binding.tried) == 1  # the old cuda.cudart layout is the same library: not retried
    assert binding.tried[0].startswith("cuda-python (cuda.bindings.runtime) ")
    assert "needs CUDA 13.0: pip install 'qtool[trt-cu12]'" in binding.tried[0]
    # without init nothing is started, and the first binding that imports is taken
    assert load_cuda_binding(init=False).name == "cuda-python (cuda.bindings.runtime)"


def test_stream_handles_use_cuda_pythons_native_handle_getter():
    from qtool.backends.tensorrt.cuda import CudaPythonBinding

    class Stream:
        def __int__(self):
            raise AssertionError("int(stream) is deprecated in cuda-python")

    binding = CudaPythonBinding(FakeCudart(), "cuda-python", "13", native_handle=lambda s: 0x7F00)
    assert binding.stream_handle(Stream()) == 0x7F00
    assert CudaPythonBinding(FakeCudart(), "cuda-python", "12.6").stream_handle(7) == 7
