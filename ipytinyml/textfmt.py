"""How numbers and tables read in the notebook: number formats, plain-text and HTML tables,
key/value boxes. Shared by the result views and the progress line; imports nothing heavy."""
from __future__ import annotations

import html
import math

CSS_PREFIX = "tinyml"


def number(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def byte_count(value) -> str:
    return "—" if value is None else f"{int(value):,} B"


def signed(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:+.{digits}f}"


def two_decimals(value: float) -> str:
    """Two decimals rounded half away from zero, as the board's human line prints them, so a
    probability of exactly 0.125 reads 0.13 in the notebook and in the Serial Monitor alike
    (Python's format would print 0.12)."""
    from decimal import ROUND_HALF_UP, Decimal
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    text = str(Decimal(v).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    return text[1:] if text == "-0.00" else text


def fixed(value: float) -> str:
    """A model output readable at any magnitude (labels in thousandths or in millions), and no
    "-0.000"."""
    v = float(value)
    if abs(v) >= 1e4:
        text = f"{v:,.0f}"
    elif v != 0 and abs(v) < 0.01:
        text = f"{v:.3g}"
    else:
        text = f"{v:.3f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.,") else text


def confusion_rows(classes, matrix) -> tuple[list[str], list[list[str]]]:
    """A confusion matrix as table headers and rows: true class down, predicted across."""
    headers = ["true \\ predicted", *classes]
    return headers, [[name, *(f"{int(v):,}" for v in row)] for name, row in zip(classes, matrix)]


def micros(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:,.0f} µs" if value >= 10 else f"{value:.1f} µs"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.1f} s" if seconds < 100 else f"{seconds / 60:.1f} min"


def text_table(headers, rows, align=None) -> str:
    """A plain-text table; ``align`` is a string of 'l'/'r' per column (default: first left)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or ("l" + "r" * (len(headers) - 1))
    lines = []
    for n, row in enumerate(cells):
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def html_table(headers, rows, align=None, css: str = "") -> str:
    align = align or ("l" + "r" * (len(headers) - 1))
    style = {"l": "text-align:left", "r": "text-align:right"}
    head = "".join(f'<th style="{style[a]}">{html.escape(str(h))}</th>' for h, a in zip(headers, align))
    body = "".join(
        "<tr>" + "".join(f'<td style="{style[a]}">{html.escape(str(c))}</td>' for c, a in zip(row, align))
        + "</tr>" for row in rows)
    return (f'<table class="{CSS_PREFIX}-table {css}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def box(title: str, inner: str, css: str) -> str:
    return (f'<div class="{CSS_PREFIX}-result {css}">'
            f"<div><b>{html.escape(title)}</b></div>{inner}</div>")


def pairs_html(pairs) -> str:
    rows = "".join(f'<tr><td style="text-align:left">{html.escape(k)}</td>'
                   f'<td style="text-align:left">{html.escape(v)}</td></tr>' for k, v in pairs)
    return f'<table class="{CSS_PREFIX}-table">{rows}</table>'


def pairs_text(pairs, indent: str = "  ") -> str:
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{indent}{k.ljust(width)}  {v}" for k, v in pairs)


def as_dict(obj) -> dict:
    """A mapping view of an info/build object (dict, dataclass, namedtuple or plain object)."""
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return dict(obj)
    if hasattr(obj, "to_dict"):
        return dict(obj.to_dict())
    if hasattr(obj, "_asdict"):
        return dict(obj._asdict())
    import dataclasses
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    return {"value": obj}
