"""What a threshold costs, read off a histogram of |x|: clipped mass and estimated SQNR.

Both are estimates from the histogram alone (no data is re-run):

clipped fraction
    The share of the counted values in bins at or above amax: bins whose lower edge is >= amax.
    Every histogram method (entropy, percentile, mse, coverage) returns a bin edge, so this is
    exact for them; an amax at or above the largest |x| clips nothing (0). An amax inside a bin
    (a threshold imported from elsewhere) leaves that bin out, so the figure is a lower bound.

estimated SQNR
    10 log10(signal / noise) in dB, with every value of a bin taken at the bin's centre c:
    signal = sum count * c**2, noise = the expected squared error of symmetric INT8
    quantize-dequantize with scale amax / 127 (round half to even, clamp at 127), the same error
    model the mse threshold minimises (qtool.thresholds.mse.squared_errors). +inf when the model
    predicts no error, nan for a histogram without signal (all zeros).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qtool.thresholds.common import checked_histogram
from qtool.thresholds.mse import squared_errors


def clipped_fraction(hist, edges, amax: float, abs_max: float | None = None) -> float:
    """Share of the values that the threshold amax clips (see the module doc); 0 when empty."""
    counts, edges = checked_histogram(hist, edges)
    total = int(counts.sum())
    if total == 0 or (abs_max is not None and amax >= abs_max):
        return 0.0
    first = int(np.searchsorted(edges[:-1], amax, side="left"))
    return int(counts[first:].sum()) / total


def signal_power(hist, edges) -> float:
    """sum count * centre**2 over the histogram."""
    counts, edges = checked_histogram(hist, edges)
    centres = (edges[:-1] + edges[1:]) / 2
    return float(counts.astype(np.float64) @ (centres * centres))


def estimated_sqnr_db(hist, edges, amax: float) -> float:
    """SQNR in dB of INT8 quantization with this amax, from bin centres (see the module doc)."""
    counts, edges = checked_histogram(hist, edges)
    signal = signal_power(counts, edges)
    if signal == 0:
        return math.nan
    noise = float(squared_errors(counts, edges, np.array([float(amax)]))[0])
    if noise == 0:
        return math.inf
    return 10.0 * math.log10(signal / noise)


# A threshold below this estimated SQNR, or clipping more than this share of the values, is
# poor: on real detectors and recognizers such tensors came from the method that failed the
# model (entropy clipping SiLU outputs: 4-5 dB), while the methods that kept it stayed above
# 23 dB and below 2% clipped.
POOR_SQNR_DB = 15.0
POOR_CLIPPED = 0.05


@dataclass(frozen=True)
class PoorThreshold:
    tensor: str
    sqnr_db: float
    clipped: float


def poor_thresholds(histograms: dict, amax: dict[str, float]) -> list[PoorThreshold]:
    """Tensors whose threshold costs much (see POOR_SQNR_DB and POOR_CLIPPED), worst first.
    `histograms`: tensor -> AbsHistogram; tensors without an amax are skipped."""
    poor = []
    for name, hist in histograms.items():
        if name not in amax:
            continue
        sqnr = estimated_sqnr_db(hist.hist, hist.edges, amax[name])
        clipped = clipped_fraction(hist.hist, hist.edges, amax[name], hist.abs_max)
        if sqnr < POOR_SQNR_DB or clipped > POOR_CLIPPED:
            poor.append(PoorThreshold(name, sqnr, clipped))
    return sorted(poor, key=lambda item: (item.sqnr_db, -item.clipped, item.tensor))
