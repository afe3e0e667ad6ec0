"""Read the JSON results of `qtool compare -o` and `qtool sensitivity -o` for the report.

They are read as plain data and checked just enough to render: a file of the wrong kind is one
QtoolError naming it. JSON has no infinities, so metrics arrive as numbers, "inf"/"-inf" strings
or null (not computable); `number()` turns them back into floats (null -> nan).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from qtool.errors import QtoolError


def read_json(path: str | os.PathLike, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise QtoolError(f"{what} file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise QtoolError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise QtoolError(f"{path} is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise QtoolError(f"{path} is not a {what} file: the top level is not an object")
    return data


def number(value) -> float:
    """A metric from JSON as a float: "inf"/"-inf" strings, null or junk as nan."""
    if isinstance(value, bool):
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("inf", "+inf", "Infinity"):
        return math.inf
    if value in ("-inf", "-Infinity"):
        return -math.inf
    return math.nan


@dataclass
class GateView:
    gate: str
    metric: str
    value: float
    threshold: float
    passed: bool


@dataclass
class CompareView:
    path: Path
    reference: str
    candidate: str
    samples: int | None
    data: str | None
    outputs: dict[str, dict[str, float]]   # output -> metric -> value
    classification: dict | None
    gates: list[GateView] = field(default_factory=list)
    passed: bool | None = None
    not_compared: list[str] = field(default_factory=list)
    reference_sha256: str | None = None
    sequence: dict | None = None
    metrics: dict[str, float] = field(default_factory=dict)   # the metric script's numbers


# Per-output metrics in display order (other numeric keys follow).
COMPARE_METRICS = ("sqnr_db", "cosine", "max_abs_error", "mean_abs_error")


def read_compare(path: str | os.PathLike) -> CompareView:
    data = read_json(path, "compare result")
    outputs = data.get("outputs")
    if not isinstance(outputs, dict) or not all(isinstance(v, dict) for v in outputs.values()):
        raise QtoolError(f"{path} is not a compare result (no 'outputs' object); write one with "
                         "`qtool compare REF CAND --data ... -o FILE`")
    metrics = {}
    for name, values in outputs.items():
        keys = [key for key in COMPARE_METRICS if key in values]
        keys += [key for key in values if key not in keys and key not in COMPARE_METRICS]
        metrics[name] = {key: number(values[key]) for key in keys}
    gates = []
    for gate in data.get("gates") or []:
        if isinstance(gate, dict) and "gate" in gate:
            gates.append(GateView(str(gate["gate"]), str(gate.get("metric", gate["gate"])),
                                  number(gate.get("value")), number(gate.get("threshold")),
                                  bool(gate.get("passed"))))
    classification = data.get("classification")
    sequence = data.get("sequence")
    script_metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    passed = data.get("passed") if isinstance(data.get("passed"), bool) else None
    return CompareView(
        path=Path(path), reference=_model_path(data.get("reference")),
        candidate=_model_path(data.get("candidate")),
        samples=data.get("samples") if isinstance(data.get("samples"), int) else None,
        data=str(data["data"]) if data.get("data") is not None else None,
        outputs=metrics,
        classification=classification if isinstance(classification, dict) else None,
        gates=gates, passed=passed if gates else None,
        not_compared=[str(name) for name in data.get("outputs_not_compared") or []],
        reference_sha256=_sha256(data.get("reference")),
        sequence=sequence if isinstance(sequence, dict) else None,
        metrics={str(name): number(value) for name, value in script_metrics.items()},
    )


def _sha256(entry) -> str | None:
    value = entry.get("sha256") if isinstance(entry, dict) else None
    return value if isinstance(value, str) else None


def _model_path(entry) -> str:
    if isinstance(entry, dict):
        return str(entry.get("path", "?"))
    return "?" if entry is None else str(entry)
