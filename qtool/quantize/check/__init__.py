"""Lint a Q/DQ model against what TensorRT accepts (errors) and what makes it fast (warnings).

Works on any explicitly quantized ONNX model: ours, onnxruntime.quantization's, ModelOpt's, QAT
exports. Scales and zero-points are read from initializers or Constant nodes; a scale computed by
other ops from constants is accepted unread (TensorRT folds it), one computed from run-time data
is an error. Each check is one small function over a `QdqGraph`, grouped by family: structure
(Q/DQ pairs, types, opset), scales (values, zero-points, per-channel axes), fusion (placement
conformance) and runtime (onnxruntime loads it); `CODES` lists what they report.

Decisions:
- A QuantizeLinear without zero-point quantizes to UINT8 by the ONNX spec (onnxruntime clips
  negatives to 0) while TensorRT reads it as INT8: reported as `qdq-dtype-unsupported`, since the
  model means different things on the two runtimes.
- Control-flow bodies (If/Loop/Scan) are not linted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import onnx

from qtool.errors import UsageError
from qtool.quantize.check.findings import CODES, SEVERITIES, CheckReport, Finding
from qtool.quantize.check.fusion import (
    check_concat_scales,
    check_dq_consumers,
    check_partially_quantized,
    check_weighted_outputs,
)
from qtool.quantize.check.graph import QdqGraph
from qtool.quantize.check.runtime import check_runtime_load
from qtool.quantize.check.scales import (
    check_pairs,
    check_per_channel,
    check_scales,
    check_zero_points,
)
from qtool.quantize.check.structure import (
    check_dangling,
    check_dtypes,
    check_has_qdq,
    check_opset_per_channel,
)

__all__ = ["CHECKS", "CODES", "SEVERITIES", "CheckReport", "Finding", "QdqGraph", "check_model",
           "check_runtime_load"]

# In this order: findings of one severity are reported in check order.
CHECKS: tuple[Callable[[QdqGraph], Iterator[Finding]], ...] = (
    check_has_qdq,
    check_opset_per_channel,
    check_scales,
    check_zero_points,
    check_dtypes,
    check_per_channel,
    check_weighted_outputs,
    check_dq_consumers,
    check_dangling,
    check_partially_quantized,
    check_concat_scales,
    check_pairs,
)


def check_model(model: onnx.ModelProto, ignore: Iterable[str] = ()) -> CheckReport:
    """Run every check; findings sorted by severity (errors first), then in check order."""
    ignore = tuple(dict.fromkeys(ignore))
    unknown = [code for code in ignore if code not in CODES]
    if unknown:
        raise UsageError(f"unknown check code {unknown[0]!r}; known codes: {', '.join(CODES)}")
    g = QdqGraph(model)
    findings = [finding for check in CHECKS for finding in check(g) if finding.code not in ignore]
    if "onnxruntime-load" not in ignore:
        findings.extend(check_runtime_load(model))
    findings.sort(key=lambda finding: SEVERITIES.index(finding.severity))
    return CheckReport(tuple(findings), len(g.qdq_nodes), ignore)
