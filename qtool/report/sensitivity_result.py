"""Read the JSON result of `qtool sensitivity -o` (qtool.analysis.sensitivity) for the report.

    {"samples": 32, "data": "...", "all_quantized": {"sqnr_db": ..., "cosine": ...},
     "ranking": [{"rank": 1, "node": "conv1", "op_type": "Conv", "sqnr_db": 2.4,
                  "cosine": 0.66, ...}, ...],              most damaging first
     "fallback": {"target": {...}, "excluded": ["conv1", ...], "passed": true,
                  "final": {...metrics...}, ...}}          only with a target

Each ranking entry measures the model's outputs against FP32 with that layer alone quantized;
the layers kept in high precision are the fallback's `excluded` list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from qtool.errors import QtoolError
from qtool.report.results import number, read_json

RANK_METRIC = "sqnr_db"
# Per-layer metrics in display order (others that are numbers follow).
LAYER_METRICS = ("sqnr_db", "cosine", "top1_agreement_percent", "top1_percent",
                 "top1_drop_points")
_NOT_METRICS = ("rank", "node", "op_type")


@dataclass
class RankedLayer:
    rank: int
    name: str
    op_type: str | None
    metrics: dict[str, float]

    @property
    def value(self) -> float:
        return self.metrics.get(RANK_METRIC, float("nan"))


@dataclass
class SensitivityView:
    path: Path
    layers: list[RankedLayer]                     # most sensitive first
    columns: list[str]                            # metric keys present, display order
    kept: list[str] = field(default_factory=list)  # the fallback's excluded layers
    all_quantized: dict[str, float] = field(default_factory=dict)
    samples: int | None = None
    data: str | None = None
    fallback: dict | None = None                  # target, passed, final metrics, checks
    model_sha256: str | None = None               # the FP32 model it was measured on

    metric: str = RANK_METRIC

    def is_kept(self, name: str) -> bool:
        return name in self.kept


def _metrics(entry: dict) -> dict[str, float]:
    return {key: number(value) for key, value in entry.items()
            if key not in _NOT_METRICS and (isinstance(value, (int, float, str)) or value is None)
            and not isinstance(value, bool)}


def read_sensitivity(path: str | os.PathLike) -> SensitivityView:
    data = read_json(path, "sensitivity result")
    ranking = data.get("ranking")
    if not isinstance(ranking, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("node"), str) for entry in ranking):
        raise QtoolError(f"{path} is not a sensitivity result (no 'ranking' list of layers); "
                         "write one with `qtool sensitivity MODEL --calib ... -o FILE`")
    layers = []
    for position, entry in enumerate(ranking, 1):
        rank = entry.get("rank")
        layers.append(RankedLayer(
            rank if isinstance(rank, int) and not isinstance(rank, bool) else position,
            entry["node"], entry.get("op_type") if isinstance(entry.get("op_type"), str) else None,
            _metrics(entry)))
    columns = [key for key in LAYER_METRICS if any(key in layer.metrics for layer in layers)]
    columns += sorted({key for layer in layers for key in layer.metrics} - set(columns))
    fallback = data.get("fallback") if isinstance(data.get("fallback"), dict) else None
    kept = []
    if fallback is not None:
        excluded = fallback.get("excluded")
        if not isinstance(excluded, list) or not all(isinstance(n, str) for n in excluded):
            raise QtoolError(f"{path}: 'fallback.excluded' must be a list of layer names")
        kept = list(excluded)
    all_quantized = data.get("all_quantized")
    return SensitivityView(
        path=Path(path), layers=layers, columns=columns, kept=kept,
        all_quantized=_metrics(all_quantized) if isinstance(all_quantized, dict) else {},
        samples=data.get("samples") if isinstance(data.get("samples"), int) else None,
        data=str(data["data"]) if data.get("data") is not None else None,
        fallback=fallback, model_sha256=_sha256(data.get("model")),
    )


def _sha256(entry) -> str | None:
    value = entry.get("sha256") if isinstance(entry, dict) else None
    return value if isinstance(value, str) else None
