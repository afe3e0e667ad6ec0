"""What a check reports: the codes, one finding, the report of a whole model and how findings
name nodes and values."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx

from qtool.graph.topology import node_label

SEVERITIES = ("error", "warning", "info")
MODEL = "<model>"  # the node a finding about the whole model names

# code -> (severity, what it means). Stable identifiers: tools and `--ignore` match on them.
CODES: dict[str, tuple[str, str]] = {
    "no-qdq": ("warning", "the model has no Q/DQ nodes, so nothing runs in INT8"),
    "opset-per-channel": ("error", "per-channel Q/DQ needs opset 13 or later"),
    "scale-invalid": ("error", "a scale is zero, negative, NaN or infinite"),
    "qparams-not-constant": ("error", "a scale or zero-point depends on run-time data"),
    "zero-point-nonzero": ("error", "a zero-point is not 0; TensorRT quantizes symmetrically"),
    "zero-point-shape": ("error", "zero-point and scale have different sizes"),
    "qdq-dtype-unsupported": ("error", "a quantized type TensorRT cannot run (UINT8, INT32, ...)"),
    "qdq-dtype-low-precision": ("info", "FP8/INT4/FP4 quantization needs recent GPUs and TensorRT"),
    "per-channel-activation": ("error", "a per-channel scale on an activation"),
    "per-channel-implicit-axis": ("warning", "a per-channel Q/DQ relies on ONNX's default axis 1"),
    "per-channel-wrong-axis": ("error", "a per-channel weight scale not along the output channels"),
    "scale-shape-mismatch": ("error", "the scale's length differs from the quantized axis' size"),
    "weighted-output-quantized": ("warning", "Q/DQ on a weighted op's output blocks its fusions"),
    "dq-unfused-consumer": ("warning", "a DequantizeLinear feeds an op TensorRT cannot run in INT8"),
    "dangling-quantize": ("warning", "a QuantizeLinear not followed by a DequantizeLinear"),
    "dangling-dequantize": ("warning", "a DequantizeLinear of an activation with no QuantizeLinear"),
    "partially-quantized": ("warning", "a weighted op with some inputs quantized and others not"),
    "concat-scale-mismatch": ("warning", "Concat inputs with different scales (or some unquantized)"),
    "qdq-pair-mismatch": ("warning", "a Q and its DQ disagree on scale, zero-point or axis"),
    "onnxruntime-load": ("error", "onnxruntime refuses the model (session creation, no optimizations)"),
}


@dataclass(frozen=True)
class Finding:
    severity: str
    code: str
    node: str
    message: str

    def to_dict(self) -> dict:
        return {"severity": self.severity, "code": self.code, "node": self.node,
                "message": self.message}

    def format(self) -> str:
        return f"{self.severity:<7} {self.code:<26} {self.node}: {self.message}"


@dataclass(frozen=True)
class CheckReport:
    findings: tuple[Finding, ...]
    qdq_nodes: int
    ignored: tuple[str, ...] = ()

    def count(self, severity: str) -> int:
        return sum(1 for finding in self.findings if finding.severity == severity)

    def counts(self) -> dict[str, int]:
        return {severity: self.count(severity) for severity in SEVERITIES}

    def passed(self, strict: bool = False) -> bool:
        """No errors; with strict, no warnings either (infos never fail)."""
        return self.count("error") == 0 and not (strict and self.count("warning"))

    def summary(self, strict: bool = False) -> str:
        counts = self.counts()
        verdict = "passed" if self.passed(strict) else "FAILED"
        mode = " (strict)" if strict else ""
        parts = [_plural(counts["error"], "error"), _plural(counts["warning"], "warning"),
                 f"{counts['info']} info"]
        return f"check {verdict}{mode}: {', '.join(parts)} in {self.qdq_nodes} Q/DQ nodes"

    def to_dict(self, strict: bool = False) -> dict:
        return {
            "passed": self.passed(strict),
            "strict": strict,
            "qdq_nodes": self.qdq_nodes,
            "counts": self.counts(),
            "ignored": list(self.ignored),
            "findings": [finding.to_dict() for finding in self.findings],
        }


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def finding(code: str, node: onnx.NodeProto | str, message: str) -> Finding:
    """A finding of `code` (its severity from CODES) about a node, or MODEL."""
    label = node if isinstance(node, str) else node_label(node)
    return Finding(CODES[code][0], code, label, message)


def names(nodes: Iterable[onnx.NodeProto]) -> str:
    """Nodes as messages name them: op type and label."""
    return ", ".join(f"{node.op_type} '{node_label(node)}'" for node in nodes)


def format_values(array: np.ndarray, limit: int = 4) -> str:
    """The first `limit` values of an array, and how many there are when there are more."""
    flat = np.asarray(array).ravel()
    shown = ", ".join(f"{float(v):.6g}" for v in flat[:limit])
    return shown if flat.size <= limit else f"{shown}, ... ({flat.size} values)"
