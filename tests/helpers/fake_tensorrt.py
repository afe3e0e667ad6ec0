"""A recording stand-in for the `tensorrt` module: every call that configures or runs a build is
appended, in order, to `FakeTensorRT.calls`, so tests can assert the exact sequence on CPU."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

ENGINE_BYTES = b"serialized-engine\x00\x01"  # what every build serializes
CACHE_BYTES = b"timing-cache-after-build"  # the timing cache a build leaves


class Member:
    """An enum member as pybind11 exposes them: a .name and an int value."""

    def __init__(self, name: str, value: int):
        self.name, self.value = name, value

    def __int__(self):
        return self.value

    def __repr__(self):
        return self.name


def enum(**members) -> SimpleNamespace:
    return SimpleNamespace(**{name: Member(name, value) for name, value in members.items()})


SEVERITY = enum(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)


class ILogger:
    Severity = SEVERITY

    def __init__(self):
        pass


class FakeTensorRT:
    """Records every call that configures or runs the build, in order, in `calls`."""

    def __init__(self, version: str, inputs: list[tuple[str, tuple]], *, parse_ok=True,
                 parser_errors=(), builder_error=None, build_fails=False, cache_accepts=True,
                 inspector_json='{"Layers": []}'):
        self.__version__ = version
        self.major = int(version.split(".")[0])
        self.calls: list[tuple] = []
        self.inputs = inputs
        self.parse_ok = parse_ok
        self.parser_errors = list(parser_errors)
        self.builder_error = builder_error
        self.build_fails = build_fails
        self.cache_accepts = list(cache_accepts) if isinstance(cache_accepts, (list, tuple)) else cache_accepts
        self.inspector_json = inspector_json
        self.ILogger = ILogger
        self.MemoryPoolType = enum(WORKSPACE=0, DLA_MANAGED_SRAM=1)
        self.ProfilingVerbosity = enum(LAYER_NAMES_ONLY=0, NONE=1, DETAILED=2)
        self.LayerInformationFormat = enum(ONELINE=0, JSON=1)
        self.TensorIOMode = enum(NONE=0, INPUT=1, OUTPUT=2)
        if self.major >= 11:  # TensorRT 11: no precision flags, no EXPLICIT_BATCH
            self.BuilderFlag = enum(DEBUG=0, TF32=5, REFIT=3)
            self.NetworkDefinitionCreationFlag = enum(STRONGLY_TYPED=1)
        else:
            self.BuilderFlag = enum(FP16=0, BF16=1, INT8=2, DEBUG=3, TF32=7)
            self.NetworkDefinitionCreationFlag = enum(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
        fake = self

        class Builder:
            def __init__(self, logger):
                fake.calls.append(("Builder",))
                fake.logger = logger
                if fake.builder_error is not None:
                    logger.log(SEVERITY.ERROR, "CUDA initialization failure with error: 35")
                    raise fake.builder_error

            def create_network(self, flags=0):
                fake.calls.append(("create_network", flags))
                return FakeNetwork(fake)

            def create_builder_config(self):
                fake.calls.append(("create_builder_config",))
                return FakeConfig(fake)

            def create_optimization_profile(self):
                fake.calls.append(("create_optimization_profile",))
                return FakeProfile(fake)

            def build_serialized_network(self, network, config):
                fake.calls.append(("build_serialized_network",))
                if fake.build_fails:
                    fake.logger.log(SEVERITY.ERROR, "Error Code 4: Internal Error (no implementation for conv0)")
                    return None
                return memoryview(ENGINE_BYTES)

        class OnnxParser:
            def __init__(self, network, logger):
                fake.calls.append(("OnnxParser",))
                self.num_errors = len(fake.parser_errors)

            def parse_from_file(self, path):
                fake.calls.append(("parse_from_file", path))
                fake.parsed_path = path
                fake.parsed_exists = Path(path).is_file()
                return fake.parse_ok

            def get_error(self, index):
                return fake.parser_errors[index]

        class Runtime:
            def __init__(self, logger):
                fake.calls.append(("Runtime",))

            def deserialize_cuda_engine(self, data):
                fake.calls.append(("deserialize_cuda_engine", bytes(data)))
                return FakeEngine(fake)

        self.Builder, self.OnnxParser, self.Runtime = Builder, OnnxParser, Runtime


class FakeNetwork:
    def __init__(self, fake):
        self.fake = fake

    @property
    def num_inputs(self):
        return len(self.fake.inputs)

    def get_input(self, index):
        name, shape = self.fake.inputs[index]
        return SimpleNamespace(name=name, shape=shape, is_shape_tensor=False)


class FakeConfig:
    def __init__(self, fake):
        object.__setattr__(self, "fake", fake)

    def __setattr__(self, name, value):
        self.fake.calls.append((f"config.{name}", getattr(value, "name", value)))

    def set_flag(self, flag):
        self.fake.calls.append(("set_flag", flag.name))

    def set_memory_pool_limit(self, pool, size):
        self.fake.calls.append(("set_memory_pool_limit", pool.name, size))

    def add_optimization_profile(self, profile):
        self.fake.calls.append(("add_optimization_profile",))
        return 0

    def create_timing_cache(self, data):
        self.fake.calls.append(("create_timing_cache", bytes(data)))
        if bytes(data) == b"garbage":  # TensorRT returns no cache for a blob it cannot read
            return None
        return SimpleNamespace(data=bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.fake.calls.append(("set_timing_cache", cache.data, ignore_mismatch))
        accepts = self.fake.cache_accepts
        return accepts.pop(0) if isinstance(accepts, list) else accepts

    def get_timing_cache(self):
        fake = self.fake
        fake.calls.append(("get_timing_cache",))

        class Cache:
            def serialize(self):
                fake.calls.append(("serialize",))
                return memoryview(CACHE_BYTES)
        return Cache()


class FakeProfile:
    def __init__(self, fake):
        self.fake = fake

    def set_shape(self, name, low, opt, high):
        self.fake.calls.append(("set_shape", name, tuple(low), tuple(opt), tuple(high)))


class FakeEngine:
    def __init__(self, fake):
        self.fake = fake

    def create_engine_inspector(self):
        self.fake.calls.append(("create_engine_inspector",))
        return FakeInspector(self.fake)

    def create_execution_context(self):
        self.fake.calls.append(("create_execution_context",))
        fake = self.fake
        return SimpleNamespace(set_input_shape=lambda name, shape: fake.calls.append(
            ("set_input_shape", name, tuple(shape))) or True)


class FakeInspector:
    def __init__(self, fake):
        object.__setattr__(self, "fake", fake)

    def __setattr__(self, name, value):
        self.fake.calls.append((f"inspector.{name}",))

    def get_engine_information(self, fmt):
        self.fake.calls.append(("get_engine_information", fmt.name))
        return self.fake.inspector_json


class ParserError:
    def __init__(self, desc, node=-1, node_name=None, operator=None, code="ErrorCode.UNSUPPORTED_NODE"):
        self._desc, self._node, self._name, self._op, self._code = desc, node, node_name, operator, code

    def desc(self):
        return self._desc

    def node(self):
        return self._node

    def node_name(self):
        return self._name

    def node_operator(self):
        return self._op

    def code(self):
        return self._code


# What TensorRT 10's engine inspector reports for models.qdq_conv_model at batch 8.
INSPECTOR_10 = json.dumps({
    "Layers": [
        {"Name": "x_Q", "LayerType": "Scale",
         "Inputs": [{"Name": "x", "Dimensions": [8, 1, 4, 4], "Format/Datatype": "Row major linear FP32 format (kLINEAR)"}],
         "Outputs": [{"Name": "x_q", "Dimensions": [8, 1, 4, 4], "Format/Datatype": "Row major linear Int8 format (kLINEAR)"}],
         "Metadata": "[ONNX Layer: x_Q]"},
        {"Name": "conv0", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "x_q", "Dimensions": [8, 1, 4, 4], "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
         "Outputs": [{"Name": "y", "Dimensions": [8, 2, 4, 4], "Format/Datatype": "Row major linear FP32 format (kLINEAR)"}],
         "Metadata": "[ONNX Layer: x_DQ]\x1e[ONNX Layer: w_DQ]\x1e[ONNX Layer: conv0]",
         "TacticName": "sm80_xmma_fprop_implicit_gemm_interleaved_i8f32"},
    ],
    "Bindings": ["x", "y"],
})
