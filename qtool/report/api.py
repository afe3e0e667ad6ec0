"""`write_report`: calibration (+ model, sensitivity, compare results) -> one HTML file.

Every input is read and checked, and every figure drawn, before anything is written; each output
(the page, and the PNGs of --png-dir) is written atomically, so a failure leaves no half file.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qtool.calib.calibfile.paths import calibration_files
from qtool.io.atomic import write_bytes, write_text
from qtool.io.outputs import guard_outputs
from qtool.report import figures as fig
from qtool.report.data import ReportData, gather
from qtool.report.html import SENSITIVITY_BARS, Figures, needs_attention, render_html


@dataclass
class ReportResult:
    output: Path
    size_bytes: int
    figures: int
    tensors: int
    layers: int
    attention: list[str]             # tensors whose chosen threshold deserves a look
    png_files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"output": str(self.output), "size_bytes": self.size_bytes,
                "figures": self.figures, "tensors": self.tensors, "layers": self.layers,
                "attention": list(self.attention),
                "png_files": [str(path) for path in self.png_files],
                "seconds": round(self.seconds, 3)}


def make_figures(data: ReportData, on_figure: Callable[[], None] | None = None) -> Figures:
    """Draw every figure the page shows (PNG bytes)."""
    figures = Figures()
    plotter = fig.HistogramPlotter() if data.tensors else None
    for tensor in data.tensors:
        if tensor.histogram is None or not tensor.points:
            continue
        lines = [(point.method, point.amax, point.chosen) for point in tensor.points]
        figures.histograms[tensor.name] = plotter.render(
            tensor.histogram.hist, tensor.histogram.edges, lines)
        if on_figure is not None:
            on_figure()
    if data.layers is not None and data.layers.layers:
        spreads = [layer.spread() for layer in data.layers.layers]
        figures.scales = fig.scale_spread_png(
            [s[0] for s in spreads], [s[1] for s in spreads], [s[2] for s in spreads],
            [bool(layer.flagged) for layer in data.layers.layers])
    view = data.sensitivity
    if view is not None and view.layers:
        shown = view.layers[:SENSITIVITY_BARS]
        if any(math.isfinite(layer.value) for layer in shown):
            figures.sensitivity = fig.sensitivity_png(
                [layer.name for layer in shown], [layer.value for layer in shown],
                [view.is_kept(layer.name) for layer in shown],
                "output SQNR (dB) with only this layer quantized",
                view.all_quantized.get(view.metric))
    return figures


def safe_file_name(name: str, limit: int = 80) -> str:
    """A tensor name as a portable file name part."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "tensor"
    return cleaned[:limit]


def png_files(data: ReportData, figures: Figures) -> dict[str, bytes]:
    """File name -> PNG for --png-dir: hist-NNN-<tensor>.png, weight-scales.png, sensitivity.png."""
    files = {}
    for index, tensor in enumerate(data.tensors, 1):
        png = figures.histograms.get(tensor.name)
        if png is not None:
            files[f"hist-{index:03d}-{safe_file_name(tensor.name)}.png"] = png
    if figures.scales is not None:
        files["weight-scales.png"] = figures.scales
    if figures.sensitivity is not None:
        files["sensitivity.png"] = figures.sensitivity
    return files


def write_report(calibration: str | os.PathLike, output: str | os.PathLike, *,
                 model: str | os.PathLike | None = None,
                 sensitivity: str | os.PathLike | None = None,
                 compare: str | os.PathLike | None = None,
                 png_dir: str | os.PathLike | None = None,
                 on_figure: Callable[[], None] | None = None) -> ReportResult:
    """Write the HTML report (and, with png_dir, its figures as PNG files)."""
    start = time.perf_counter()
    fig.require_matplotlib()
    output = Path(output)
    # checked now, before minutes of drawing
    calibrations = calibration_files(calibration)
    guard_outputs([output], models=[model], calibrations=calibrations, inputs=[sensitivity, compare])
    if png_dir is not None:
        guard_outputs([Path(png_dir) / "figure.png"], models=[model], calibrations=calibrations,
                      inputs=[sensitivity, compare, output])
    data = gather(calibration, model=model, sensitivity=sensitivity, compare=compare)
    figures = make_figures(data, on_figure)
    page = render_html(data, figures)
    written = []
    if png_dir is not None:
        directory = Path(png_dir)  # created by the first write
        for name, png in png_files(data, figures).items():
            write_bytes(directory / name, png)
            written.append(directory / name)
    write_text(output, page)
    count = len(figures.histograms) + (figures.scales is not None) + (figures.sensitivity is not None)
    return ReportResult(
        output=output, size_bytes=output.stat().st_size, figures=count,
        tensors=len(data.tensors), layers=len(data.layers.layers) if data.layers else 0,
        attention=[tensor.name for tensor in data.tensors if needs_attention(tensor)],
        png_files=written, seconds=time.perf_counter() - start)
