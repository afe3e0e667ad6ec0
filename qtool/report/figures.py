"""The report's figures as small PNGs (matplotlib, Agg, imported only here and only when called).

Figures are thumbnails (HIST_SIZE_PX at FIGURE_DPI) so that a page with a few hundred of them
stays light; each PNG is re-encoded with an adaptive palette (pillow), which makes it about three
times smaller without visible loss on flat-coloured plots. No pyplot: figures are created
directly (matplotlib.figure.Figure), so no global backend or state is touched.
"""

from __future__ import annotations

import io
import math

import numpy as np

from qtool.errors import MissingDependency
from qtool.report.histstats import display_bins

FIGURE_DPI = 80
HIST_SIZE_PX = (320, 160)
DISPLAY_BINS = 256
PALETTE_COLOURS = 64
# One colour per threshold method, shared by the plots and the HTML tables.
METHOD_COLOURS = {
    "max": "#555555",
    "percentile": "#1f77b4",
    "mse": "#2ca02c",
    "entropy": "#e67e00",
    "coverage": "#9467bd",
}
CHOSEN_CLIP_COLOUR = "#d62728"
BAR_COLOUR = "#4c78a8"
KEPT_COLOUR = "#d62728"
HIST_COLOUR = "#9db4c8"
MISSING_MESSAGE = "matplotlib is not installed: pip install 'qtool[report]'"


def require_matplotlib() -> None:
    """Fail early, with the one-line install hint, when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        raise MissingDependency(MISSING_MESSAGE) from None


def method_colour(method: str) -> str:
    return METHOD_COLOURS.get(method, "#7f7f7f")


def _figure(width_px: float, height_px: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_px / FIGURE_DPI, height_px / FIGURE_DPI), dpi=FIGURE_DPI)


def _png(fig) -> bytes:
    """Render with Agg and encode once, with a small palette (flat plots lose nothing visible)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    width, height = canvas.get_width_height()
    image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    out = io.BytesIO()
    image.convert("RGB").quantize(colors=PALETTE_COLOURS).save(out, format="PNG", optimize=True)
    return out.getvalue()


def log_label(value: float, _position=None) -> str:
    """Log-axis labels as plain text, 1e3 or 2e-3 (mathtext layout would dominate the render
    time); only for ticks at 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return ""
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = value / 10.0**exponent
    nearest = round(mantissa)
    if nearest not in (1, 2, 5) or abs(mantissa - nearest) > 1e-6:
        return ""
    if exponent == 0:
        return str(nearest)
    return f"{nearest}e{exponent}"


def _style_log_axis(axis, low: float, high: float) -> None:
    """Decades only for wide ranges; 1-2-5 steps when the data spans under three decades."""
    from matplotlib import ticker

    narrow = low > 0 and high / low < 1e3
    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,),
                                             numticks=8 if narrow else 5))
    axis.set_major_formatter(ticker.FuncFormatter(log_label))
    axis.set_minor_locator(ticker.NullLocator())


class HistogramPlotter:
    """Draws |x| histograms (log counts) on one reused figure.

    Creating a figure with its axes and ticks costs more than drawing the data, so the figure
    is made once and only the data artists are replaced per histogram (about 3x faster).
    One vertical line per (method, amax, chosen): the chosen threshold is a solid thick line
    and everything it clips is shaded; the other methods are thin dashed lines in their
    METHOD_COLOURS.
    """

    def __init__(self) -> None:
        self.fig = _figure(*HIST_SIZE_PX)
        self.ax = self.fig.add_axes((0.13, 0.17, 0.84, 0.78))
        self.ax.set_yscale("log")
        self.ax.tick_params(labelsize=8, length=2, pad=1)
        self.ax.set_xlabel("|x|", fontsize=8, labelpad=0)
        for side in ("top", "right"):
            self.ax.spines[side].set_visible(False)
        self._artists: list = []

    def render(self, hist, edges, lines: list[tuple[str, float, bool]]) -> bytes:
        from matplotlib.patches import StepPatch

        ax = self.ax
        for artist in self._artists:
            artist.remove()
        counts, plot_edges = display_bins(hist, edges, DISPLAY_BINS)
        right = max([float(plot_edges[-1])] + [amax for _, amax, _ in lines]) * 1.03
        top = max(float(counts.max()), 1.0) * 2.5
        # Added as a plain artist: the limits are set below, and letting the axes compute them
        # from the step path (ax.stairs) costs as much as drawing it.
        artists = [ax.add_artist(StepPatch(np.maximum(counts, 0.5), plot_edges, baseline=0.5,
                                           fill=True, color=HIST_COLOUR))]
        ax.set_ylim(0.5, top)
        _style_log_axis(ax.yaxis, 0.5, top)
        ax.set_xlim(0, right)
        for method, amax, chosen in sorted(lines, key=lambda line: line[2]):
            colour = method_colour(method)
            if chosen:
                artists.append(ax.axvspan(amax, right, color=CHOSEN_CLIP_COLOUR, alpha=0.10,
                                          lw=0))
                artists.append(ax.axvline(amax, color=colour, lw=2.2))
            else:
                artists.append(ax.axvline(amax, color=colour, lw=1.1, ls=(0, (3, 2))))
        self._artists = artists
        return _png(self.fig)


def histogram_png(hist, edges, lines: list[tuple[str, float, bool]]) -> bytes:
    """One histogram figure (see HistogramPlotter; reuse a plotter for many)."""
    return HistogramPlotter().render(hist, edges, lines)


def sensitivity_png(names: list[str], values: list[float], highlighted: list[bool],
                    label: str, reference: float | None = None) -> bytes:
    """Horizontal bars, first name on top, each labelled with its value; highlighted bars (kept
    in high precision) in red; `reference` (e.g. the all-quantized SQNR) as a dashed line.
    Infinite values (no measurable error) are drawn at the largest finite value and labelled ∞."""
    height = 44 + 15 * len(names)
    longest = max((len(name) for name in names), default=10)
    label_px = min(10 + 5.4 * longest, 420)
    width = label_px + 440
    fig = _figure(width, height)
    ax = fig.add_axes((label_px / width, 32 / height, 1 - label_px / width - 0.06,
                       1 - 40 / height))
    positions = np.arange(len(names))[::-1]
    finite = [v for v in values if math.isfinite(v)]
    cap = max([abs(v) for v in finite] + [1e-12])
    drawn = [v if math.isfinite(v) else (cap if v > 0 else 0.0) for v in values]
    colours = [KEPT_COLOUR if flag else BAR_COLOUR for flag in highlighted]
    ax.barh(positions, drawn, color=colours, height=0.7)
    for position, value, shown in zip(positions, values, drawn):
        text = "∞" if math.isinf(value) and value > 0 else ("n/a" if math.isnan(value)
                                                             else f"{value:.3g}")
        ax.text(shown, position, " " + text, va="center", fontsize=7, color="#333333")
    if reference is not None and math.isfinite(reference):
        ax.axvline(reference, color="#333333", lw=1, ls=(0, (4, 2)))
    ax.set_yticks(positions, names, fontsize=8)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlim(min(0.0, min(drawn, default=0.0)) * 1.1, cap * 1.12)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel(label, fontsize=8, labelpad=1)
    ax.axvline(0, color="#333333", lw=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _png(fig)


def scale_spread_png(lows: list[float], medians: list[float], highs: list[float],
                     flagged: list[bool]) -> bytes:
    """Per layer (x = layer number from 1), a bar from the smallest to the largest weight scale
    (log axis) with a dot at the median; layers with flagged channels in red."""
    count = len(lows)
    width = min(max(320, 60 + 9 * count), 1400)
    fig = _figure(width, 200)
    ax = fig.add_axes((60 / width, 0.17, 1 - 75 / width, 0.76))
    x = np.arange(1, count + 1)
    colours = [KEPT_COLOUR if flag else BAR_COLOUR for flag in flagged]
    ax.vlines(x, lows, highs, colors=colours, lw=3 if count < 80 else 1.5)
    ax.scatter(x, medians, s=9, color="#222222", zorder=3)
    ax.set_yscale("log")
    positive = [value for value in lows if value > 0]
    _style_log_axis(ax.yaxis, min(positive, default=1.0), max(max(highs), 1e-30))
    ax.set_xlim(0.3, count + 0.7)
    ax.set_xlabel("layer #", fontsize=8, labelpad=1)
    ax.set_ylabel("weight scale", fontsize=8, labelpad=1)
    ax.tick_params(labelsize=8, length=2, pad=1)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _png(fig)
