"""What the magics show: live progress lines and result objects.

Every result object has a plain-text form (``__repr__``, for terminals and
logs), an HTML form (``_repr_html_``, for notebooks) and ``to_dict()``; the
magics return them, so ``r = %tinyml_quantize`` keeps the numbers.

``Progress`` is a one-line display updated in place with
``display(..., display_id=True)`` in a Jupyter kernel (nbclient records the
updates too); in a terminal it prints its final state once. Nothing here
imports TensorFlow except ``fit_plot_png``, which the training magic calls
after training, when TensorFlow is loaded anyway.
"""
from __future__ import annotations

import base64
import html
import io
import math
import time
from dataclasses import dataclass, field

__all__ = ["Progress", "TrainResult", "QuantizeResult", "FlashResult", "PredictResult",
           "EvaluateResult", "fit_plot_png", "text_table", "html_table"]

CSS_PREFIX = "tinyml"


# -- small formatting helpers -------------------------------------------------------------------
def _num(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _bytes(value) -> str:
    return "—" if value is None else f"{int(value):,} B"


def _signed(value, digits: int = 3) -> str:
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


def _fixed(value: float) -> str:
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


def _us(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:,.0f} µs" if value >= 10 else f"{value:.1f} µs"


def _duration(seconds: float | None) -> str:
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


def _box(title: str, inner: str, css: str) -> str:
    return (f'<div class="{CSS_PREFIX}-result {css}">'
            f"<div><b>{html.escape(title)}</b></div>{inner}</div>")


def _kv_html(pairs) -> str:
    rows = "".join(f'<tr><td style="text-align:left">{html.escape(k)}</td>'
                   f'<td style="text-align:left">{html.escape(v)}</td></tr>' for k, v in pairs)
    return f'<table class="{CSS_PREFIX}-table">{rows}</table>'


def _kv_text(pairs, indent: str = "  ") -> str:
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


# -- native output ----------------------------------------------------------------------------------
def native_stderr_quieted():
    """Divert file descriptor 2 while TensorFlow loads and trains (``quiet.fd2_diverted``).

    TensorFlow's C++ start-up logging (absl, oneDNN, CUDA probes) ignores
    ``TF_CPP_MIN_LOG_LEVEL`` and would land in the cell's output. Python-level
    ``sys.stderr`` in a kernel is not fd 2 and is unaffected.
    """
    from .quiet import fd2_diverted
    return fd2_diverted()


# -- live progress ------------------------------------------------------------------------------
def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    return getattr(shell, "kernel", None) is not None


@dataclass
class _ProgressState:
    title: str
    done: float | None = None
    total: float | None = None
    text: str = ""
    stages: list = field(default_factory=list)  # [(name, seconds or None while running)]
    finished: bool = False
    failed: bool = False

    def _stage_text(self, for_html: bool) -> str:
        parts = []
        for name, seconds in self.stages:
            if seconds is None:
                mark = "…" if not self.failed else "✗"
                parts.append(f"{name} {mark}")
            else:
                parts.append(f"{name} ✓ {seconds:.1f} s")
        return " · ".join(parts)

    def __repr__(self) -> str:
        line = f"{self.title}:"
        if self.total:
            frac = min(1.0, max(0.0, (self.done or 0) / self.total))
            bar = "#" * int(round(frac * 20))
            line += f" [{bar.ljust(20)}] {int(self.done or 0)}/{int(self.total)}"
        if self.stages:
            line += " " + self._stage_text(False)
        if self.text:
            line += f" {self.text}"
        return line

    def _repr_html_(self) -> str:
        css = f"{CSS_PREFIX}-progress" + (" done" if self.finished else "") + (" failed" if self.failed else "")
        parts = [f"<b>{html.escape(self.title)}</b>"]
        if self.total:
            parts.append(f'<progress value="{self.done or 0:g}" max="{self.total:g}" '
                         'style="width:14em;vertical-align:middle"></progress>'
                         f" {int(self.done or 0)}/{int(self.total)}")
        if self.stages:
            parts.append(html.escape(self._stage_text(True)))
        if self.text:
            parts.append(html.escape(self.text))
        return f'<div class="{css}" style="font-family:monospace">{" ".join(parts)}</div>'


class Progress:
    """A one-line progress display.

    In a Jupyter kernel it is shown once and updated in place (at most every
    ``interval`` seconds, and always at the end); in a terminal it prints only
    its final state. ``enabled=False`` shows nothing.
    """

    def __init__(self, title: str, *, enabled: bool = True, live: bool | None = None,
                 interval: float = 0.1):
        self.state = _ProgressState(title)
        self.enabled = enabled
        self.live = _in_kernel() if live is None else live
        self.interval = interval
        self._handle = None
        self._last = 0.0
        self._stage_start = None
        self.started = time.perf_counter()

    # updates
    def update(self, done=None, total=None, text: str | None = None) -> None:
        if done is not None:
            self.state.done = done
        if total is not None:
            self.state.total = total
        if text is not None:
            self.state.text = text
        self._show()

    def stage(self, name: str) -> None:
        """Start a named stage; the previous one is marked done with its duration."""
        self._close_stage()
        self.state.stages.append((str(name), None))
        self._stage_start = time.perf_counter()
        self._show(force=True)

    def _close_stage(self) -> None:
        if self.state.stages and self.state.stages[-1][1] is None and self._stage_start is not None:
            name, _ = self.state.stages[-1]
            self.state.stages[-1] = (name, time.perf_counter() - self._stage_start)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def stage_times(self) -> dict:
        return {name: seconds for name, seconds in self.state.stages}

    def finish(self, text: str | None = None, *, failed: bool = False) -> None:
        """The final state: done (shown), or failed (shown only if something was shown before;
        the error line itself says what went wrong)."""
        if failed and self._handle is None:
            self.state.failed = self.state.finished = True
            return
        if not failed:
            self._close_stage()
            if self.state.total:
                self.state.done = self.state.total
        self.state.failed = failed
        self.state.finished = True
        if text is not None:
            self.state.text = text
        self._show(force=True, final=True)

    # display
    def _show(self, force: bool = False, final: bool = False) -> None:
        if not self.enabled:
            return
        if not self.live:
            if final:
                from IPython.display import display
                display(self.state)
            return
        now = time.perf_counter()
        if not force and self._handle is not None and now - self._last < self.interval:
            return
        self._last = now
        from IPython.display import display
        snapshot = _ProgressState(**{**vars(self.state), "stages": list(self.state.stages)})
        if self._handle is None:
            self._handle = display(snapshot, display_id=True)
        else:
            self._handle.update(snapshot)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and not self.state.finished:
            self.finish(f"failed after {_duration(self.elapsed)}", failed=True)


# -- results ------------------------------------------------------------------------------------
class _Result:
    css = "result"

    def to_dict(self) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def __str__(self) -> str:
        return self.__repr__()


class TrainResult(_Result):
    """What ``%%tinyml_train`` returns: the data split, the test MAE and (one feature) a fit plot."""

    css = f"{CSS_PREFIX}-train"

    def __init__(self, report: dict, seconds: float | None = None, epochs: int | None = None,
                 custom_model: bool = False, plot_png: bytes | None = None):
        self.report = report
        self.seconds = seconds
        self.epochs = epochs
        self.custom_model = custom_model
        self.plot_png = plot_png

    @property
    def name(self) -> str:
        return self.report["name"]

    @property
    def data(self) -> dict:
        return self.report.get("data", {})

    @property
    def mae(self) -> float | None:
        """Test MAE of a regression (None for a classifier)."""
        value = self.report["variants"]["keras"].get("mae")
        return None if value is None else float(value)

    @property
    def accuracy(self) -> float | None:
        """Test accuracy of a classifier (None for a regression)."""
        value = self.report["variants"]["keras"].get("accuracy")
        return None if value is None else float(value)

    def _title(self) -> str:
        d = self.data
        model = "your model" if self.custom_model else "the default model"
        when = f", {_duration(self.seconds)}" if self.seconds is not None else ""
        epochs = f"{self.epochs} epochs, " if self.epochs else ""
        return (f"Trained {self.name}: {', '.join(d.get('features', []))} -> {d.get('label', '?')} "
                f"on {d.get('source', '?')} with {model} ({epochs}seed {d.get('seed', 0)}{when})")

    def _pairs(self):
        d = self.data
        pairs = [("train rows", _num(d.get("n_train"))), ("test rows", _num(d.get("n_test")))]
        if d.get("n_dropped"):
            pairs.append(("rows left out", f"{_num(d['n_dropped'])} (a missing feature value)"))
        if self.accuracy is not None:
            pairs += [("classes", ", ".join(d.get("classes", []))),
                      ("test accuracy", f"{self.accuracy:.3f}")]
        else:
            pairs.append(("test MAE", f"{_fixed(self.mae)} {d.get('label', '')}".rstrip()))
        if d.get("constant_features"):
            pairs.append(("constant (ignored)", ", ".join(d["constant_features"])))
        return pairs

    def __repr__(self) -> str:
        return self._title() + "\n" + _kv_text(self._pairs())

    def _repr_html_(self) -> str:
        inner = _kv_html(self._pairs())
        if self.plot_png:
            data = base64.b64encode(self.plot_png).decode("ascii")
            inner += (f'<img class="{CSS_PREFIX}-plot" alt="test data and the model\'s fit" '
                      f'src="data:image/png;base64,{data}"/>')
        return _box(self._title(), inner, self.css)

    def to_dict(self) -> dict:
        return {"name": self.name, "data": dict(self.data), "mae": self.mae, "accuracy": self.accuracy,
                "seconds": self.seconds, "epochs": self.epochs}


class QuantizeResult(_Result):
    """What ``%tinyml_quantize`` returns: size and test MAE of every variant."""

    css = f"{CSS_PREFIX}-quantize"

    def __init__(self, report: dict, variants, seconds: float | None = None):
        self.report = report
        self.variants = list(variants)
        self.seconds = seconds

    @property
    def name(self) -> str:
        return self.report["name"]

    @property
    def classifier(self) -> bool:
        return self.report.get("data", {}).get("task") == "classification"

    def score(self, variant: str) -> float | None:
        """Test accuracy (classifier) or MAE of a variant; None when it was not made."""
        entry = self.report["variants"].get(variant)
        return None if entry is None else float(entry["accuracy" if self.classifier else "mae"])

    def mae(self, variant: str) -> float | None:
        return None if self.classifier else self.score(variant)

    def size(self, variant: str) -> int | None:
        entry = self.report["variants"].get(variant)
        return None if entry is None else entry.get("bytes")

    @property
    def int8_vs_float32(self) -> float | None:
        """int8 test MAE (or accuracy) minus float32's (None unless both exist)."""
        a, b = self.score("int8"), self.score("float32")
        return None if a is None or b is None else a - b

    def _rows(self):
        label = self.report.get("data", {}).get("label", "")
        reference = self.score("float32")
        rows = []
        shown = ["keras"] + [v for v in self.variants if v != "keras"]
        for variant in shown:
            entry = self.report["variants"].get(variant)
            if entry is None:
                continue
            value = self.score(variant)
            delta = None if reference is None or variant in ("keras", "float32") else value - reference
            detail = ""
            if variant == "int8":
                detail = ("per-channel" if entry.get("per_channel") else "per-tensor") + (
                    ", int8 I/O" if entry.get("int8_io") else ", float I/O")
            elif variant == "keras":
                detail = "trained model (reference)"
            rows.append((variant, _bytes(entry.get("bytes")) if "bytes" in entry else "—",
                         f"{value:.3f}", _signed(delta) if delta is not None else "", detail))
        metric = "test accuracy" if self.classifier else (f"test MAE ({label})" if label else "test MAE")
        headers = ("variant", "size", metric, "vs float32", "")
        return headers, rows

    def _notes(self) -> list[str]:
        """The int8 verdicts: accuracy against float32, the input pre-stage, what can run it."""
        entry = self.report["variants"].get("int8") if "int8" in self.variants else None
        if entry is None:
            return []
        label = self.report.get("data", {}).get("label", "")
        notes = []
        diff = self.int8_vs_float32
        gate = entry.get("gate") or {}
        if gate.get("message"):
            notes.append(f"⚠ {gate['message']}")
        elif diff is not None:
            within = f" (within {gate['basis']})" if gate.get("basis") else ""
            what = "accuracy" if self.classifier else "MAE"
            unit = "" if self.classifier else f" {label}"
            notes.append(f"int8 vs float32: test {what} {diff:+.3f}{unit}{within}")
        float32 = self.report["variants"].get("float32") or {}
        if float32.get("bytes") and entry.get("bytes", 0) > float32["bytes"]:
            notes.append("int8 is larger than float32 here: in a model this small the file is mostly "
                         "bookkeeping (every tensor's scale and zero point, the QUANTIZE and DEQUANTIZE "
                         "ops), not weights, which int8 makes 4x smaller")
        if entry.get("standardized"):
            notes.append("int8 input: each feature standardized before quantizing (the board does the same)")
        if entry.get("constant_features"):
            notes.append(f"ignored (constant in training): {', '.join(entry['constant_features'])}")
        verdicts = entry.get("runtimes") or {}
        if verdicts:
            ok = [r for r, why in verdicts.items() if not why and r != "uno"]
            reasons = {why for why in verdicts.values() if why}
            if not ok and len(reasons) == 1:
                notes.append(f"no runtime can flash it: {reasons.pop()}")
            else:
                parts = [f"flashable with --runtime {', '.join(ok)}" if ok else "no runtime can flash it"]
                parts += [f"{r}: {why}" for r, why in verdicts.items() if why]
                notes.append("; ".join(parts))
        return notes

    def _confusion(self):
        entry = self.report["variants"].get("int8")
        if not self.classifier or entry is None or "confusion" not in entry:
            return None
        return confusion_rows(self.report["data"].get("classes", []), entry["confusion"])

    def __repr__(self) -> str:
        headers, rows = self._rows()
        when = f" ({_duration(self.seconds)})" if self.seconds is not None else ""
        out = [f"Quantized {self.name}{when}\n" + text_table(headers, rows, "lrrrl"), *self._notes()]
        confusion = self._confusion()
        if confusion:
            out.append("int8 confusion matrix (test set):\n" + text_table(*confusion, "l" + "r" * len(confusion[1])))
        return "\n".join(out)

    def _repr_html_(self) -> str:
        headers, rows = self._rows()
        when = f" ({_duration(self.seconds)})" if self.seconds is not None else ""
        inner = html_table(headers, rows, "lrrrl")
        for note in self._notes():
            inner += f'<div class="{CSS_PREFIX}-summary">{html.escape(note)}</div>'
        confusion = self._confusion()
        if confusion:
            inner += (f'<div class="{CSS_PREFIX}-summary">int8 confusion matrix (test set)</div>'
                      + html_table(*confusion, "l" + "r" * len(confusion[1])))
        return _box(f"Quantized {self.name}{when}", inner, self.css)

    def to_frame(self):
        """One row per variant: size, test metric, difference to float32 (a pandas DataFrame)."""
        import pandas as pd
        metric = "accuracy" if self.classifier else "mae"
        reference = self.score("float32")
        rows = {}
        for variant in ["keras", *[v for v in self.variants if v != "keras"]]:
            entry = self.report["variants"].get(variant)
            if entry is None:
                continue
            value = self.score(variant)
            rows[variant] = {"bytes": entry.get("bytes"), metric: value,
                             "vs_float32": None if reference is None or variant in ("keras", "float32")
                             else value - reference}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("variant")

    def to_dict(self) -> dict:
        return {"name": self.name,
                "variants": {v: dict(self.report["variants"][v]) for v in self.report["variants"]},
                "int8_vs_float32": self.int8_vs_float32, "seconds": self.seconds}


_BOARD_NAMES = {"sim": "the virtual Arduino Uno (simavr)", "uno": "an Arduino Uno",
                "nano33ble": "an Arduino Nano 33 BLE Sense"}


def _board_description(kind: str) -> str:
    return _BOARD_NAMES.get(kind, f"board {kind}")


def _build_pairs(build) -> list:
    b = as_dict(build)
    if not b:
        return []
    pairs = []

    def pick(*keys):
        for k in keys:
            if b.get(k) is not None:
                return b[k]
        return None

    flash, flash_max = pick("flash", "flash_bytes", "program_bytes"), pick("flash_max", "flash_total", "program_max")
    ram, ram_max = pick("ram", "ram_bytes", "data_bytes"), pick("ram_max", "ram_total", "data_max")
    if flash is not None:
        pairs.append(("flash used", _bytes(flash) + (f" of {int(flash_max):,}" if flash_max else "")))
    if ram is not None:
        pairs.append(("RAM used", _bytes(ram) + (f" of {int(ram_max):,}" if ram_max else "")))
    for key in ("flash_over_bare", "flash_model", "ram_over_bare", "ram_model"):
        if b.get(key) is not None:
            pairs.append((key.replace("_", " "), _bytes(b[key])))
    if b.get("fqbn"):
        pairs.append(("built for", str(b["fqbn"])))
    if b.get("cached") is not None:
        pairs.append(("build", "cached (model unchanged)" if b["cached"] else "compiled"))
    return pairs


_INFO_KEYS = ("proto", "runtime", "board", "model", "n_in", "n_out", "arena", "free", "max")


def _info_pairs(info) -> list:
    """What the board reports about itself (the protocol's info answer), as table rows."""
    d = as_dict(info)
    if not d:
        return []
    if not all(k in d for k in ("runtime", "model")):
        return [("board says", " ".join(f"{k}={v}" for k, v in d.items()
                                        if not isinstance(v, (dict, list))))]
    pairs = [("board says", f"runtime {d['runtime']} · board {d.get('board', '?')} · model "
                            f"{d['model']} · protocol {d.get('proto', '?')}")]
    ram = []
    if d.get("arena") is not None:
        ram.append(f"{int(d['arena']):,} B for activations")
    if d.get("free"):
        ram.append(f"{int(d['free']):,} B free")
    if ram:
        pairs.append(("RAM at run time", ", ".join(ram)))
    return pairs


class FlashResult(_Result):
    """What ``%tinyml_flash`` returns: the connected board, what was built, what it says."""

    css = f"{CSS_PREFIX}-flash"

    def __init__(self, board, *, requested: str = "auto", note: str | None = None,
                 stages: dict | None = None, seconds: float | None = None, info=None):
        self.board = board
        self.requested = requested
        self.note = note
        self.stages = dict(stages or {})
        self.seconds = seconds
        self.info = info

    @property
    def build(self):
        return getattr(self.board, "build", None)

    def _title(self) -> str:
        where = f" on {self.board.port}" if getattr(self.board, "port", None) else ""
        when = f" in {_duration(self.seconds)}" if self.seconds is not None else ""
        return f"{self.board.name} runs on {_board_description(self.board.kind)}{where}{when}"

    def _pairs(self):
        pairs = _build_pairs(self.build) + _info_pairs(self.info)
        return pairs

    def __repr__(self) -> str:
        out = self._title()
        if self.note:
            out = f"{self.note}\n{out}"
        pairs = self._pairs()
        return out + ("\n" + _kv_text(pairs) if pairs else "")

    def _repr_html_(self) -> str:
        inner = ""
        if self.note:
            inner += f'<div class="{CSS_PREFIX}-note">{html.escape(self.note)}</div>'
        inner += _kv_html(self._pairs())
        return _box(self._title(), inner, self.css)

    def to_dict(self) -> dict:
        return {"name": self.board.name, "board": self.board.kind, "port": self.board.port,
                "requested": self.requested, "note": self.note, "build": as_dict(self.build),
                "info": as_dict(self.info), "stages": self.stages, "seconds": self.seconds}


class PredictResult(_Result):
    """What ``%tinyml_predict VALUES`` returns: one row per input, board next to notebook."""

    css = f"{CSS_PREFIX}-predict"

    def __init__(self, predictions, features=None, labels=None, name: str | None = None,
                 cycles_per_row: float | None = None, classes=None):
        self.predictions = list(predictions)
        self.features = list(features or [])
        self.labels = list(labels or [])
        self.classes = list(classes) if classes else None  # a classifier's class names
        self.name = name
        self.cycles_per_row = cycles_per_row  # CPU cycles per inference (AVR boards)

    @property
    def all_agree(self) -> bool:
        return all(p.agree for p in self.predictions)

    def __len__(self) -> int:
        return len(self.predictions)

    def __getitem__(self, i):
        return self.predictions[i]

    def _headers(self):
        n_in = len(self.predictions[0].inputs) if self.predictions else 1
        n_out = len(self.predictions[0].board) if self.predictions else 1
        features = self.features if len(self.features) == n_in else [f"x{i}" for i in range(n_in)]
        labels = self.labels if len(self.labels) == n_out else [f"y{i}" for i in range(n_out)]
        return features, labels

    def _class_cells(self, scores) -> list[str]:
        from .metrics import top_class
        k, p = top_class(scores)
        name = self.classes[k] if k < len(self.classes) else str(k)
        return [name, two_decimals(p)]

    def _rows(self):
        features, labels = self._headers()
        cycles = [] if not self.cycles_per_row else ["cycles"]
        if self.classes:
            label = self.labels[0] if self.labels else "class"
            headers = list(features) + [f"board {label}", "p", f"notebook {label}", "p",
                                        "device time (request average)" if len(self.predictions) > 1
                                        else "device time", *cycles, "agree"]
            rows = []
            for p in self.predictions:
                clamped = p.clamped or (False,) * len(p.inputs)
                rows.append([f"{v:g}" + (" (clamped)" if c else "") for v, c in zip(p.inputs, clamped)]
                            + self._class_cells(p.board) + self._class_cells(p.notebook) + [_us(p.device_us)]
                            + [f"{self.cycles_per_row:,.0f}" for _ in cycles] + ["✓" if p.agree else "✗"])
            return headers, rows
        headers = list(features) + [f"board {y}" for y in labels] + [f"notebook {y}" for y in labels] + [
            "device time (request average)" if len(self.predictions) > 1 else "device time", *cycles, "agree"]
        rows = []
        for p in self.predictions:
            clamped = p.clamped or (False,) * len(p.inputs)
            rows.append([f"{v:g}" + (" (clamped)" if c else "") for v, c in zip(p.inputs, clamped)]
                        + [_fixed(v) for v in p.board]
                        + [_fixed(v) for v in p.notebook] + [_us(p.device_us)]
                        + [f"{self.cycles_per_row:,.0f}" for _ in cycles] + ["✓" if p.agree else "✗"])
        return headers, rows

    @property
    def any_clamped(self) -> bool:
        return any(any(p.clamped) for p in self.predictions)

    def _footnote(self) -> str:
        if not self.any_clamped:
            return ""
        return ("clamped: outside the range the int8 input holds (the training data's range, "
                "about); the model saw the nearest value it can hold")

    def __repr__(self) -> str:
        headers, rows = self._rows()
        out = text_table(headers, rows, "r" * (len(headers) - 1) + "l")
        return out + (f"\n{self._footnote()}" if self.any_clamped else "")

    def _repr_html_(self) -> str:
        headers, rows = self._rows()
        verdict = ("board and notebook agree bit for bit" if self.all_agree
                   else "board and notebook DISAGREE")
        title = f"{self.name} on the board: {verdict}" if self.name else verdict
        inner = html_table(headers, rows, "r" * (len(headers) - 1) + "l")
        if self.any_clamped:
            inner += f'<div class="{CSS_PREFIX}-note">{html.escape(self._footnote())}</div>'
        return _box(title, inner, self.css)

    def to_frame(self):
        """One row per prediction: the inputs, board and notebook outputs, agreement (a DataFrame)."""
        import pandas as pd
        features, labels = self._headers()
        rows = []
        for p in self.predictions:
            row = dict(zip(features, p.inputs))
            row.update({f"board {y}": v for y, v in zip(labels, p.board)})
            row.update({f"notebook {y}": v for y, v in zip(labels, p.notebook)})
            row.update(agree=p.agree, clamped=any(p.clamped), device_us=p.device_us)
            rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        return {"name": self.name, "all_agree": self.all_agree, "cycles_per_row": self.cycles_per_row,
                "predictions": [
            {"inputs": list(p.inputs), "board": list(p.board), "notebook": list(p.notebook),
             "board_q": list(p.board_q), "notebook_q": list(p.notebook_q), "device_us": p.device_us,
             "clamped": list(p.clamped), "agree": p.agree} for p in self.predictions]}


class EvaluateResult(_Result):
    """What ``%tinyml_predict --test`` returns: MAE, parity and latency over the whole test set."""

    css = f"{CSS_PREFIX}-evaluate"

    def __init__(self, result: dict, name: str | None = None, label: str | None = None,
                 seconds: float | None = None):
        self.result = dict(result)
        self.rows = self.result.pop("test_rows", None) or {}  # {"board": rows, "actual": rows}
        self.name = name
        self.label = label
        self.seconds = seconds

    @property
    def mae(self) -> float | None:
        return self.result.get("mae")

    @property
    def parity(self) -> dict:
        return self.result.get("parity") or {}

    @property
    def latency(self) -> dict:
        return self.result.get("latency") or {}

    @property
    def matched(self) -> int | None:
        return self.parity.get("matched")

    @property
    def total(self) -> int | None:
        return self.parity.get("total")

    def _pairs(self):
        pairs = []
        per_output = self.result.get("mae_per_output") or []
        labels = (self.label or "").split(",")
        if self.result.get("accuracy") is not None:
            pairs.append(("test accuracy", f"{self.result['accuracy']:.3f} on the board"))
        elif len(per_output) > 1 and len(labels) == len(per_output):
            pairs.append(("test MAE", " · ".join(f"{label} {_fixed(v)}" for label, v in zip(labels, per_output))))
        elif self.mae is not None:
            pairs.append(("test MAE", f"{_fixed(self.mae)} {self.label or ''}".rstrip()))
        if self.result.get("clamped_inputs"):
            pairs.append(("clamped", f"{self.result['clamped_inputs']} test value(s) outside what the "
                                     "int8 input holds (saturated)"))
        if self.total:
            pct = 100.0 * (self.matched or 0) / self.total
            oracle = self.parity.get("oracle") or "the notebook's int8 model"
            runtime = self.parity.get("runtime")
            pairs.append(("parity", f"{self.matched}/{self.total} test rows ({pct:.0f} %) bit-exact "
                                    f"with {oracle}" + (f" ({runtime} runtime)" if runtime else "")))
            raw_total = self.parity.get("raw_total")
            if raw_total:
                pairs.append(("every int8 input", f"{self.parity.get('raw_matched')}/{raw_total} "
                                                  "bit-exact"))
        lat = self.latency
        if lat.get("device_us") is not None:
            cyc = lat.get("device_cycles")
            pairs.append(("device time", f"{_us(lat['device_us'])} per inference"
                          + (f" ({cyc:,.0f} cycles)" if cyc else "")))
        if lat.get("host_roundtrip_ms") is not None:
            pairs.append(("round trip", f"{lat['host_roundtrip_ms']:.2f} ms per request"))
        if lat.get("predictions_per_s") is not None:
            bound = lat.get("wire_bound_per_s")
            share = f" ({100.0 * lat['predictions_per_s'] / bound:.0f} % of the {bound:,.0f}/s wire bound)" \
                if bound else ""
            pairs.append(("throughput", f"{lat['predictions_per_s']:,.0f} predictions/s{share}"))
        return pairs

    def _title(self) -> str:
        who = f"{self.name}: " if self.name else ""
        when = f" ({_duration(self.seconds)})" if self.seconds is not None else ""
        return f"{who}test set through the board{when}"

    def _confusion(self):
        if "confusion" not in self.result or not self.result.get("classes"):
            return None
        return confusion_rows(self.result["classes"], self.result["confusion"])

    def __repr__(self) -> str:
        text = self._title() + "\n" + _kv_text(self._pairs())
        confusion = self._confusion()
        if confusion:
            text += "\nconfusion matrix on the board:\n" + text_table(*confusion, "l" + "r" * len(confusion[1]))
        return text

    def plot_svg(self) -> str:
        """A regression's predicted-vs-actual plot (one per label): the board's int8 prediction
        of every test row against its true value, and the y = x line; "" for a classifier."""
        board, actual = self.rows.get("board"), self.rows.get("actual")
        if self.result.get("accuracy") is not None or not board or not actual:
            return ""
        from .plots import predicted_vs_actual_svg
        n_out = len(board[0])
        labels = (self.label or "").split(",")
        labels = labels if len(labels) == n_out else [f"y{i}" for i in range(n_out)]
        plots = "".join(predicted_vs_actual_svg([r[i] for r in actual], [r[i] for r in board], label=label)
                        for i, label in enumerate(labels))
        return (f'<div class="{CSS_PREFIX}-pred-vs-actual">'
                f'<div class="{CSS_PREFIX}-summary">the board\'s int8 prediction of each test row '
                f"against its true value (dashed: y = x, a perfect model)</div>{plots}</div>")

    def _repr_html_(self) -> str:
        inner = _kv_html(self._pairs())
        confusion = self._confusion()
        if confusion:
            inner += (f'<div class="{CSS_PREFIX}-summary">confusion matrix on the board</div>'
                      + html_table(*confusion, "l" + "r" * len(confusion[1])))
        inner += self.plot_svg()
        return _box(self._title(), inner, self.css)

    def to_frame(self):
        """The measurements as one row (a pandas DataFrame): metric, parity, latency."""
        import pandas as pd
        row = {"mae": self.mae, **{f"parity_{k}": v for k, v in self.parity.items()},
               **{f"latency_{k}": v for k, v in self.latency.items()}}
        return pd.DataFrame([row], index=[self.name or "test set"])

    def to_dict(self) -> dict:
        return {"name": self.name, **self.result, "seconds": self.seconds}


# -- the training plot ----------------------------------------------------------------------------
def fit_plot_png(x_test, y_test, x_line, y_line, *, xlabel: str, ylabel: str,
                 title: str | None = None) -> bytes | None:
    """Test points and a fit line as PNG bytes (matplotlib's Agg canvas; no pyplot state).

    Returns None when matplotlib is not installed (the plot is optional).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(5.0, 3.2), dpi=96)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(x_test, y_test, s=12, alpha=0.6, label="test data")
    ax.plot(x_line, y_line, color="C3", linewidth=2, label="model")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def trained_fit_png(name: str, root) -> bytes | None:
    """The saved Keras model's fit line over its saved test data (one-feature models only)."""
    import numpy as np

    from . import api, artifacts
    from . import training as train_mod

    folder = artifacts.model_dir(root, name)
    report = artifacts.read_report(folder)
    data = report.get("data", {})
    if len(data.get("features", [])) != 1:
        return None
    split = api.load_split(name, root)
    model = artifacts.load_keras(folder)
    xs = np.concatenate([split["train_x"][:, 0], split["test_x"][:, 0]])
    grid = np.linspace(float(xs.min()), float(xs.max()), 200, dtype=np.float32).reshape(-1, 1)
    line = train_mod.predict(model, grid)[:, 0]
    return fit_plot_png(split["test_x"][:, 0], split["test_y"][:, 0], grid[:, 0], line,
                        xlabel=data["features"][0], ylabel=data.get("label", ""),
                        title=f"{name}: test data and fit")


def model_classes(name: str, root) -> list | None:
    """A classifier's class names saved with a model; None for a regression or when unknown."""
    from . import artifacts
    from .errors import TinyMLError
    try:
        return artifacts.read_report(artifacts.model_dir(root, name)).get("data", {}).get("classes")
    except TinyMLError:
        return None


def model_columns(name: str, root) -> tuple[list, list]:
    """(feature names, label names) saved with a model; empty lists when unknown."""
    from . import artifacts
    from .errors import TinyMLError
    try:
        data = artifacts.read_report(artifacts.model_dir(root, name)).get("data", {})
    except TinyMLError:
        return [], []
    labels = data.get("labels") or ([data["label"]] if data.get("label") else [])
    return list(data.get("features", [])), list(labels)
