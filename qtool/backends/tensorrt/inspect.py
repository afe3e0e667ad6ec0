"""Read TensorRT's engine-inspector JSON and say which layers run in INT8.

Pure functions over the text of `IEngineInspector.get_engine_information(JSON)` (the same text
trtexec --exportLayerInfo writes), so they are tested without a GPU. The shape of that JSON moves
between versions, so nothing here assumes a key is present:

- root: {"Layers": [...], "Bindings": [names]} (TensorRT 10) or
  {"Layers": [...], "I/O Tensors": [{"Name", "IOMode", "DataType", "Dimensions", ...}]}
  (TensorRT 11); a bare list of layers is accepted too.
- a layer is a plain string (name only: ProfilingVerbosity LAYER_NAMES_ONLY) or, with DETAILED,
  an object with "Name", "LayerType", "Inputs"/"Outputs" (tensors with "Name", "Dimensions" and
  "Format/Datatype", or separate "Format" and "Datatype"/"DataType"), "Metadata"
  ("[ONNX Layer: /conv1/Conv]" records, "[ONNX Layer: /conv1/Conv | Local Function: f]" inside
  an ONNX local function), "TacticName"/"TacticValue", "Origin".
- a data type is written as a word ("Float", "Half", "Int8") or inside a format description
  ("Row major linear FP32 format (kLINEAR)", "Thirty-two wide channel vectorized row major
  Int8 format."); "N/A due to dynamic shapes" when no shapes were set.

A layer's precision is that of its inputs: any INT8 (or other quantized) input means it computes
in that type; a layer taking float and producing a quantized type is a conversion (a Q layer), as
are reformat copies; integer/bool-only layers (shape arithmetic) are "other".
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field

DTYPE_WORDS = {
    "FLOAT": "fp32", "FP32": "fp32", "FLOAT32": "fp32",
    "HALF": "fp16", "FP16": "fp16", "FLOAT16": "fp16",
    "BF16": "bf16", "BFLOAT16": "bf16",
    "INT8": "int8", "UINT8": "uint8",
    "FP8": "fp8", "E4M3": "fp8", "INT4": "int4", "FP4": "fp4", "E2M1": "fp4", "E8M0": "e8m0",
    "INT32": "int32", "INT64": "int64", "BOOL": "bool",
}
QUANTIZED = ("int8", "fp8", "int4", "fp4")  # in order of preference when a layer mixes them
HIGH_PRECISION = ("fp32", "bf16", "fp16")   # widest first
CONVERSION = "conversion"
CATEGORIES = ("int8", "fp8", "int4", "fp4", "fp16", "bf16", "fp32", CONVERSION, "other", "unknown")
TENSOR_TYPE_KEYS = ("Format/Datatype", "Datatype", "DataType", "Data type", "Format")
# onnx-tensorrt writes "[ONNX Layer: <node name> | Local Function: <f> | ...]": the name ends at " | "
ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]\x1e]+?)(?: \| [^\]\x1e]*)?\]")


@dataclass
class LayerInfo:
    index: int
    name: str
    type: str
    precision: str
    inputs: list = field(default_factory=list)   # [name, dtype or None]
    outputs: list = field(default_factory=list)
    onnx_nodes: list = field(default_factory=list)
    tactic: str | None = None


@dataclass
class EngineSummary:
    layers: list
    detailed: bool
    io_tensors: list = field(default_factory=list)
    note: str = ""

    def counts(self) -> dict:
        counter = Counter(layer.precision for layer in self.layers)
        return {name: counter[name] for name in CATEGORIES if counter[name]}

    @property
    def quantized(self) -> int:
        return sum(1 for layer in self.layers if layer.precision in QUANTIZED)

    @property
    def higher_precision(self) -> int:
        return sum(1 for layer in self.layers if layer.precision in HIGH_PRECISION)

    def summary_line(self) -> str:
        if not self.layers:
            return "layers: none reported" + (f" ({self.note})" if self.note else "")
        counts = self.counts()
        high = ", ".join(f"{counts[p]} {p}" for p in HIGH_PRECISION if p in counts)
        quantized = ", ".join(f"{counts[p]} {p}" for p in QUANTIZED if p in counts) or "0 int8"
        parts = [f"{len(self.layers)} total", quantized]
        parts.append(f"{self.higher_precision} higher precision" + (f" ({high})" if high else ""))
        for name in (CONVERSION, "other", "unknown"):
            if name in counts:
                parts.append(f"{counts[name]} {name}")
        return "layers: " + ", ".join(parts) + (f" ({self.note})" if self.note else "")

    def to_dict(self) -> dict:
        return {
            "detailed": self.detailed,
            "counts": self.counts(),
            "quantized_layers": self.quantized,
            "higher_precision_layers": self.higher_precision,
            "total_layers": len(self.layers),
            "layers": [asdict(layer) for layer in self.layers],
            "io_tensors": self.io_tensors,
            "note": self.note,
        }


def dtype_from_text(text) -> str | None:
    """'Row major linear FP32 format (kLINEAR)' -> 'fp32'; 'N/A due to dynamic shapes' -> None."""
    if not isinstance(text, str):
        return None
    for word in re.findall(r"[A-Za-z0-9]+", text.upper()):
        if word in DTYPE_WORDS:
            return DTYPE_WORDS[word]
    return None


def tensor_dtype(tensor) -> str | None:
    if not isinstance(tensor, dict):
        return None
    for key in TENSOR_TYPE_KEYS:
        dtype = dtype_from_text(tensor.get(key))
        if dtype:
            return dtype
    return None


def _tensors(layer: dict, key: str) -> list:
    value = layer.get(key)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return []
    return [[str(t.get("Name", "")) if isinstance(t, dict) else str(t), tensor_dtype(t)] for t in value]


def layer_precision(layer_type: str, name: str, inputs: list, outputs: list) -> str:
    if layer_type.lower() == "reformat" or name.startswith("Reformatting CopyNode"):
        return CONVERSION
    in_types = [dtype for _, dtype in inputs if dtype]
    out_types = [dtype for _, dtype in outputs if dtype]
    for dtype in QUANTIZED:
        if dtype in in_types:
            return dtype
    floats_in = [dtype for dtype in HIGH_PRECISION if dtype in in_types]
    if floats_in and any(dtype in QUANTIZED for dtype in out_types):
        return CONVERSION  # a quantize (Q) layer: float in, quantized out
    if floats_in:
        return floats_in[0]
    if in_types:
        return "other"
    if not inputs:
        for dtype in QUANTIZED + HIGH_PRECISION:
            if dtype in out_types:
                return dtype
        if out_types:
            return "other"
    return "unknown"


def _layer(index: int, raw) -> LayerInfo:
    if not isinstance(raw, dict):
        return LayerInfo(index, str(raw), "", "unknown")
    name = str(raw.get("Name", f"layer {index}"))
    layer_type = str(raw.get("LayerType", ""))
    inputs, outputs = _tensors(raw, "Inputs"), _tensors(raw, "Outputs")
    metadata = raw.get("Metadata")
    onnx_nodes = ONNX_LAYER.findall(metadata) if isinstance(metadata, str) else []
    tactic = raw.get("TacticName") or raw.get("TacticValue")
    return LayerInfo(index, name, layer_type, layer_precision(layer_type, name, inputs, outputs),
                     inputs, outputs, [n.strip() for n in onnx_nodes],
                     str(tactic) if tactic is not None else None)


def _io_tensors(root: dict) -> list:
    entries = root.get("I/O Tensors")
    if isinstance(entries, list):
        result = []
        for entry in entries:
            if isinstance(entry, dict):
                result.append({"name": str(entry.get("Name", "")), "mode": entry.get("IOMode"),
                               "dtype": dtype_from_text(entry.get("DataType")),
                               "shape": entry.get("Dimensions")})
            else:
                result.append({"name": str(entry)})
        return result
    bindings = root.get("Bindings")
    if isinstance(bindings, list):
        return [{"name": str(name)} for name in bindings]
    return []


def summarize_engine_information(info) -> EngineSummary:
    """Parse inspector output (JSON text, or the already-decoded object) into an EngineSummary.

    Never raises on unexpected content: what cannot be read is reported as 'unknown' or in
    the summary's note.
    """
    root = info
    if isinstance(info, (bytes, bytearray)):
        info = info.decode("utf-8", errors="replace")
    if isinstance(info, str):
        try:
            # strict=False: layer metadata may hold raw control characters (record separators)
            root = json.loads(info, strict=False)
        except ValueError:
            return EngineSummary([], False, note="the engine inspector's output is not JSON")
    if isinstance(root, dict):
        raw_layers = root.get("Layers", [])
        io_tensors = _io_tensors(root)
    elif isinstance(root, list):
        raw_layers, io_tensors = root, []
    else:
        return EngineSummary([], False, note="the engine inspector's output has no layers")
    if not isinstance(raw_layers, list):
        raw_layers = []
    layers = [_layer(index, raw) for index, raw in enumerate(raw_layers)]
    detailed = any(isinstance(raw, dict) for raw in raw_layers)
    note = ""
    if layers and not detailed:
        note = "layer names only: the engine was not built with ProfilingVerbosity.DETAILED"
    elif layers and all(layer.precision == "unknown" for layer in layers):
        note = "no data types in the inspector output (dynamic shapes without a context?)"
    return EngineSummary(layers, detailed, io_tensors, note)


def format_layer_table(summary: EngineSummary) -> str:
    """A header, then one line per layer: index, precision, layer type, name."""
    if not summary.layers:
        return ""
    width = max([len(layer.type) for layer in summary.layers] + [len("type")])
    index_width = len(str(len(summary.layers) - 1))
    lines = [f"{'#':>{index_width}}  {'precision':<10} {'type':<{width}}  layer"]
    for layer in summary.layers:
        lines.append(f"{layer.index:>{index_width}}  {layer.precision:<10} {layer.type:<{width}}  {layer.name}")
    return "\n".join(lines)
