"""Small self-contained SVG plots for the widget and the result views.

Hand-written SVG rather than matplotlib: the widget redraws on every board
answer (a string is cheap, and matplotlib would cost an import and a PNG per
move), the result shows in exported HTML and in GitHub's viewer without a
kernel, and tests can read the marks from the markup. Nothing here imports
numpy at module level, TensorFlow, ipywidgets or another ipytinyml module:
widgets.py and views.py depend on this module, never the other way.

Stable hooks: every plot is an ``svg.tinyml-svg``; the live marker is
``.tinyml-marker``, test points are ``g.tinyml-points circle``, curves are
``polyline.tinyml-line`` (``data-series`` = the series name) and the y = x
line of a predicted-vs-actual plot is ``line.tinyml-diagonal``.
"""
from __future__ import annotations

import html
import math

__all__ = ["XYPlot", "predicted_vs_actual_svg", "COLORS"]

COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _tick(value: float, span: float) -> str:
    """An axis end label with as many digits as the axis span needs (5 mpg, 0.25 kPa)."""
    if span >= 20 or value == 0:
        return f"{value:.0f}"
    digits = max(0, min(4, 1 - math.floor(math.log10(max(span, 1e-12)))))
    return f"{value:.{digits}f}"


class XYPlot:
    """Points, curves and an optional live marker on shared axes, as an SVG string.

    ``series`` is a list of ``(name, xs, ys)`` curves; ``points`` is ``(xs, ys)`` (drawn
    faint, behind the curves); the axes cover all of them and ``x_range``/``y_range`` when
    given, with 5 % to spare vertically unless ``y_pad=False`` (probabilities end at 0 and
    1). ``legend`` names the curves in a right margin (for more than one curve).
    """

    W, H, PAD_L, PAD_R, PAD_T, PAD_B = 380, 210, 44, 10, 10, 34

    def __init__(self, *, xlabel: str, ylabel: str, series=(), points=None, x_range=None,
                 y_range=None, diagonal: bool = False, legend: bool = False, width: int | None = None,
                 y_pad: bool = True):
        if width:
            self.W = width
        if legend and len(series) > 1:  # a right margin for the names, clear of the curves
            self.PAD_R = 14 + 6 * max(len(str(name)) for name, _, _ in series)
            self.W += self.PAD_R - XYPlot.PAD_R
        xs = [*(v for _, x, _ in series for v in _finite(x)), *(_finite(points[0]) if points else [])]
        ys = [*(v for _, _, y in series for v in _finite(y)), *(_finite(points[1]) if points else [])]
        xs += list(x_range or ())
        ys += list(y_range or ())
        if diagonal:  # both axes the same range, so y = x is the 45° line
            xs = ys = xs + ys
        xs, ys = xs or [0.0, 1.0], ys or [0.0, 1.0]
        self.x0, self.x1 = min(xs), max(xs)
        pad = 0.05 * max(max(ys) - min(ys), 1e-9) if y_pad else 0.0
        self.y0, self.y1 = min(ys) - pad, max(ys) + pad
        if diagonal:
            self.x0, self.x1 = self.y0, self.y1
        parts = [self._axes(xlabel, ylabel)]
        if diagonal:
            parts.append(f'<line class="tinyml-diagonal" x1="{self._x(self.x0):.1f}" y1="{self._y(self.x0):.1f}" '
                         f'x2="{self._x(self.x1):.1f}" y2="{self._y(self.x1):.1f}" stroke="#888" '
                         f'stroke-dasharray="4,3"/>')
        if points:
            circles = "".join(f'<circle cx="{self._x(x):.1f}" cy="{self._y(y):.1f}" r="2.2"/>'
                              for x, y in zip(*points)
                              if math.isfinite(float(x)) and math.isfinite(float(y)))
            parts.append(f'<g class="tinyml-points" fill="#1f77b4" fill-opacity="0.45">{circles}</g>')
        for k, (name, x, y) in enumerate(series):
            line = " ".join(f"{self._x(a):.1f},{self._clip_y(b):.1f}" for a, b in zip(x, y)
                            if math.isfinite(float(b)))
            parts.append(f'<polyline class="tinyml-line" data-series="{html.escape(str(name))}" '
                         f'points="{line}" fill="none" stroke="{COLORS[k % len(COLORS)]}" stroke-width="2"/>')
        if legend and len(series) > 1:
            for k, (name, _, _) in enumerate(series):
                y = self.PAD_T + 10 + 13 * k
                x = self.W - self.PAD_R + 6
                parts.append(f'<text x="{x}" y="{y}" font-size="10" '
                             f'fill="{COLORS[k % len(COLORS)]}">{html.escape(str(name))}</text>')
        self.static = "".join(parts)

    def _axes(self, xlabel: str, ylabel: str) -> str:
        l, r, t, b = self.PAD_L, self.W - self.PAD_R, self.PAD_T, self.H - self.PAD_B
        xspan, yspan = self.x1 - self.x0, self.y1 - self.y0
        return (f'<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/>'
                f'<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="#888"/>'
                f'<text x="{l}" y="{b + 14}" font-size="10">{_tick(self.x0, xspan)}</text>'
                f'<text x="{r}" y="{b + 14}" font-size="10" text-anchor="end">{_tick(self.x1, xspan)}</text>'
                f'<text x="{(l + r) / 2}" y="{b + 28}" font-size="11" text-anchor="middle">'
                f"{html.escape(xlabel)}</text>"
                f'<text x="{l - 4}" y="{b}" font-size="10" text-anchor="end">{_tick(self.y0, yspan)}</text>'
                f'<text x="{l - 4}" y="{t + 9}" font-size="10" text-anchor="end">{_tick(self.y1, yspan)}</text>'
                f'<text x="12" y="{(t + b) / 2}" font-size="11" text-anchor="middle" '
                f'transform="rotate(-90 12 {(t + b) / 2})">{html.escape(ylabel)}</text>')

    def _x(self, x: float) -> float:
        return self.PAD_L + (float(x) - self.x0) / max(self.x1 - self.x0, 1e-9) * (
            self.W - self.PAD_L - self.PAD_R)

    def _y(self, y: float) -> float:
        return self.H - self.PAD_B - (float(y) - self.y0) / max(self.y1 - self.y0, 1e-9) * (
            self.H - self.PAD_T - self.PAD_B)

    def _clip_y(self, y: float) -> float:
        return min(max(self._y(y), self.PAD_T), self.H - self.PAD_B)

    def render(self, x: float | None = None, ys=None) -> str:
        """The SVG, with a marker at ``x`` for each value of ``ys`` (a number or a list; one
        marker per series, in the series' colours when there are several)."""
        marker = ""
        if ys is not None and not isinstance(ys, (list, tuple)):
            ys = [ys]
        if x is not None and ys and math.isfinite(float(x)):
            cx = self._x(min(max(float(x), self.x0), self.x1))
            marker = (f'<line x1="{cx:.1f}" y1="{self.PAD_T}" x2="{cx:.1f}" y2="{self.H - self.PAD_B}" '
                      f'stroke="#444" stroke-dasharray="3,3"/>')
            for k, y in enumerate(ys):
                if y is None or not math.isfinite(float(y)):
                    continue
                fill = "#ff7f0e" if len(ys) == 1 else COLORS[k % len(COLORS)]
                marker += (f'<circle class="tinyml-marker" cx="{cx:.1f}" cy="{self._clip_y(y):.1f}" '
                           f'r="{6 if len(ys) == 1 else 5}" fill="{fill}" stroke="black"/>')
        return (f'<svg class="tinyml-svg" xmlns="http://www.w3.org/2000/svg" width="{self.W}" '
                f'height="{self.H}" viewBox="0 0 {self.W} {self.H}" style="font-family:sans-serif">'
                f"{self.static}{marker}</svg>")


def predicted_vs_actual_svg(actual, predicted, *, label: str, who: str = "board") -> str:
    """Each test row as a point (true label across, the prediction up) and the y = x line a
    perfect model would sit on."""
    plot = XYPlot(xlabel=f"true {label}", ylabel=f"{who}'s {label}", points=(list(actual), list(predicted)),
                  diagonal=True, width=260)  # about square, so y = x is at 45°
    return plot.render()
