"""The report's figures as PNG bytes, and how they are inlined into the page."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field


@dataclass
class Figures:
    """PNG bytes per figure: histograms by tensor name, the layer and sensitivity charts."""

    histograms: dict[str, bytes] = field(default_factory=dict)
    scales: bytes | None = None
    sensitivity: bytes | None = None


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
