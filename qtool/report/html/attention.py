"""Which tensors deserve a look, and the anchors their rows carry."""

from __future__ import annotations

from qtool.report.data import ReportData
from qtool.report.tensors import TensorSummary

# A tensor deserves a look when its chosen threshold clips more than this share of the values
# or its estimated SQNR falls below this many dB (rough guides for 8-bit activations).
ATTENTION_CLIPPED = 0.01


ATTENTION_SQNR_DB = 20.0


def tensor_anchors(data: ReportData) -> dict[str, str]:
    """Fragment id of each tensor's row (by position: names may hold any character)."""
    return {tensor.name: f"tensor-{index}" for index, tensor in enumerate(data.tensors, 1)}


def needs_attention(tensor: TensorSummary) -> bool:
    chosen = tensor.chosen
    if chosen is None:
        return False
    return chosen.clipped > ATTENTION_CLIPPED or chosen.sqnr_db < ATTENTION_SQNR_DB
