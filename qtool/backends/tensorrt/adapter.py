"""Everything that differs between TensorRT 10 and TensorRT 11, in one small object.

TensorRT 10: networks are weakly typed unless created with STRONGLY_TYPED; an explicitly
quantized (Q/DQ) network needs BuilderFlag.INT8, and FP16 kernels need BuilderFlag.FP16.
EXPLICIT_BATCH is deprecated and ignored, so it is never passed.

TensorRT 11: every network is strongly typed (STRONGLY_TYPED is deprecated, always on,
EXPLICIT_BATCH is gone); the INT8/FP16 builder flags, calibrators and
platform_has_fast_int8/fp16 are removed. INT8 comes from the Q/DQ nodes, and FP16 must already
be in the ONNX model's own types.

The rest of the API qtool uses (parser, builder config, optimization profiles, memory pool
limits, timing cache, engine inspector, name-based I/O tensors, execute_async_v3) is the same in
both, so the build and run code share one path and ask this object only where they differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qtool.backends.imports import TRT_INSTALL_HINT
from qtool.errors import MissingDependency

MIN_MAJOR = 10
NEWEST_KNOWN_MAJOR = 11


def parse_version(text: str) -> tuple[int, int]:
    match = re.match(r"\s*(\d+)\.(\d+)", str(text))
    if not match:
        raise MissingDependency(f"cannot read the TensorRT version {text!r}; {TRT_INSTALL_HINT}")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class TrtAdapter:
    trt: object
    version: str
    major: int

    @classmethod
    def for_module(cls, trt) -> TrtAdapter:
        version = str(getattr(trt, "__version__", ""))
        major, _ = parse_version(version)
        if major < MIN_MAJOR:
            raise MissingDependency(
                f"TensorRT {version} is too old: qtool needs TensorRT 10 or newer; {TRT_INSTALL_HINT}"
            )
        return cls(trt, version, major)

    @property
    def always_strongly_typed(self) -> bool:
        return self.major >= 11

    @property
    def untested(self) -> bool:
        return self.major > NEWEST_KNOWN_MAJOR

    def strongly_typed(self, requested: bool) -> bool:
        """Whether the network will be strongly typed."""
        return bool(requested) or self.always_strongly_typed

    def network_flags(self, strongly_typed: bool) -> int:
        if strongly_typed and not self.always_strongly_typed:
            return 1 << int(self.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        return 0

    def precision_flag_names(self, int8: bool, fp16: bool, strongly_typed: bool) -> list[str]:
        """Builder flags that enable reduced precision; none for strongly typed networks
        (TensorRT 10 rejects them there, TensorRT 11 has none)."""
        if strongly_typed or self.always_strongly_typed:
            return []
        return (["INT8"] if int8 else []) + (["FP16"] if fp16 else [])

    def needs_fp16_model(self, fp16: bool, strongly_typed: bool) -> bool:
        """A strongly typed network runs FP16 only where the ONNX model itself is FP16."""
        return bool(fp16) and self.strongly_typed(strongly_typed)

    def set_precision_flags(self, config, names: list[str]) -> None:
        for name in names:
            config.set_flag(getattr(self.trt.BuilderFlag, name))

    def typing_description(self, strongly_typed: bool, flag_names: list[str]) -> str:
        if self.strongly_typed(strongly_typed):
            return "strongly typed"
        return "weakly typed" + (f", {'+'.join(flag_names)} flags" if flag_names else "")

    @staticmethod
    def host_memory_bytes(host_memory) -> bytes:
        """IHostMemory (a serialized engine or timing cache) exposes the buffer protocol."""
        return memoryview(host_memory).tobytes()
