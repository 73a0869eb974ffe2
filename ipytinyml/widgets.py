"""ipywidgets views over a connected board: a slider per feature, wired to the board.

``BoardSlider(board)`` (what ``%tinyml_predict --widget`` returns) shows one
slider per input feature, ranged over the model's saved data. Every change is
debounced (only the latest value is sent, once the slider has been quiet for
``debounce`` seconds, or at the latest ``max_wait`` seconds after the first
unsent change) and sent to the board from a worker thread; the result line
shows the board's prediction, the notebook's own prediction of the same int8
model, the on-device time and whether they agree bit for bit. A small SVG plot
(``plots.XYPlot``) shows the prediction along the feature last moved, the other
features held at their sliders, as a line from the notebook's int8 model, with
the board's answer as a live marker (a classifier: one line per class's
probability; a regression: the test data behind it). The sliders share one
label width, so their tracks line up. If the board goes away, the status line
says so; a callback never raises into the notebook.

ipywidgets is imported when a view is built, not when this module is imported;
nothing here imports TensorFlow.

Stable hooks for browser tests and styling: the sliders carry the CSS class
``tinyml-slider`` (description = the feature name), the result line
``tinyml-result`` (its inner ``span.tinyml-reading`` has ``data-board``,
``data-notebook``, ``data-agree``, ``data-input`` attributes), the status line
``tinyml-status`` and the plot ``tinyml-plot`` (a ``.tinyml-plot-caption`` above an
``svg.tinyml-svg``, see ``plots``). The text/html fallback is ``.tinyml-widget-snapshot``.
"""
from __future__ import annotations

import html
import math
import threading
import time
import weakref

__all__ = ["BoardSlider", "Debouncer", "board_lock"]

_locks: "weakref.WeakKeyDictionary[object, threading.RLock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def board_lock(board) -> threading.RLock:
    """The lock serializing requests to one board (widgets' worker threads and the magics)."""
    with _locks_guard:
        lock = _locks.get(board)
        if lock is None:
            lock = _locks[board] = threading.RLock()
        return lock


_NOTHING = object()


class Debouncer:
    """Call ``fn(value)`` in a worker thread with only the latest submitted value.

    A value is sent once no new value arrived for ``quiet`` seconds, or
    ``max_wait`` seconds after the oldest unsent change (so a long drag still
    updates). Calls never overlap; ``fn`` must handle its own errors (any that
    escape are passed to ``on_error``).
    """

    def __init__(self, fn, quiet: float = 0.15, max_wait: float = 0.6, on_error=None):
        self.fn = fn
        self.quiet = quiet
        self.max_wait = max(max_wait, quiet)
        self.on_error = on_error
        self._cond = threading.Condition()
        self._pending = _NOTHING
        self._first = self._last = 0.0
        self._busy = False
        self._closed = False
        self._thread = None
        self.sent = 0  # how many values were handed to fn

    def submit(self, value) -> None:
        with self._cond:
            if self._closed:
                return
            now = time.monotonic()
            if self._pending is _NOTHING:
                self._first = now
            self._pending, self._last = value, now
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tinyml-debounce", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _next(self):
        """Wait for the next value that is due; None (as a tuple) when closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._pending is _NOTHING:
                    self._cond.wait()
                    continue
                due = min(self._last + self.quiet, self._first + self.max_wait)
                delay = due - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                value, self._pending = self._pending, _NOTHING
                self._busy = True
                return (value,)

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            try:
                self.sent += 1
                self.fn(item[0])
            except Exception as exc:  # noqa: BLE001 - a worker thread must never die silently
                if self.on_error is not None:
                    try:
                        self.on_error(exc)
                    except Exception:  # noqa: BLE001
                        pass
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until nothing is pending or running (for tests and scripts)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending is not _NOTHING or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending = _NOTHING
            self._cond.notify_all()


def _nice_step(lo: float, hi: float, integers: bool) -> float:
    if integers and hi - lo >= 20:
        return 1.0
    span = max(hi - lo, 1e-9)
    return 10 ** math.floor(math.log10(span / 100))


class BoardSlider:
    """Sliders wired to a connected board (``%tinyml_predict --widget``).

    Parameters
    ----------
    board : a connected ``Board`` (from ``tm.flash``)
    root : the artifacts folder holding the model's saved data split
    debounce : seconds of quiet before the latest slider value is sent
    max_wait : send at the latest this long after the first unsent change
    plot : draw the plot along the last-moved feature with a live marker

    Attributes
    ----------
    widget : the ipywidgets ``VBox`` (displayed when this object is displayed)
    last : the last ``Prediction`` received from the board (None before)
    errors : how many requests failed
    """

    def __init__(self, board, root="tinyml", *, debounce: float = 0.15, max_wait: float = 0.6,
                 plot: bool = True):
        import ipywidgets as w
        import numpy as np

        from . import api
        from .artifacts import model_classes, model_columns

        self.board = board
        self.last = None
        self.errors = 0
        self.requests = 0
        split = api.load_split(board.name, root)
        features, labels = model_columns(board.name, root)
        n_in = board.plan.n_inputs
        self.features = features if len(features) == n_in else [f"x{i}" for i in range(n_in)]
        n_out = board.plan.n_outputs
        classes = model_classes(board.name, root) or []
        self.classes = classes if len(classes) == n_out > 1 or (len(classes) == 2 and n_out == 1) else []
        if len(classes) == n_out > 1:  # a softmax classifier: one probability per class
            labels = [f"p({name})" for name in classes]
        self.labels = labels if len(labels) == n_out else [f"y{i}" for i in range(n_out)]
        self.label = self.labels[0]
        xs = np.concatenate([split["train_x"], split["test_x"]]).astype(np.float64)

        # One description width for every slider, so the tracks start at the same x whatever
        # the feature names' lengths (about 7 px a character at the widget label's font).
        label_px = min(260, 12 + 7 * max(len(f) for f in self.features))
        self.sliders = []
        for i, feature in enumerate(self.features):
            column = xs[:, i]
            lo, hi = float(column.min()), float(column.max())
            integers = bool(np.all(column == np.round(column)))
            step = _nice_step(lo, hi, integers)
            start = float(np.round(np.median(split["train_x"][:, i]) / step) * step)
            slider = w.FloatSlider(value=min(max(start, lo), hi), min=lo, max=hi, step=step,
                                   description=feature, continuous_update=True,
                                   readout_format=".0f" if step >= 1 else ".3g",
                                   style={"description_width": f"{label_px}px"},
                                   layout=w.Layout(width=f"{label_px + 340}px"))
            slider.add_class("tinyml-slider")
            slider.observe(self._changed, names="value")
            self.sliders.append(slider)

        self.result = w.HTML(value="").add_class("tinyml-result")
        self.status = w.HTML(value="").add_class("tinyml-status")
        children = [*self.sliders, self.result]
        self._moved = 0  # the feature the plot runs along: the last slider a user touched
        self._test = (split["test_x"].astype(np.float64), split["test_y"].astype(np.float64))
        self._label_range = (float(np.min(np.concatenate([split["train_y"][:, 0], split["test_y"][:, 0]]))),
                             float(np.max(np.concatenate([split["train_y"][:, 0], split["test_y"][:, 0]]))))
        self._plot_key = self._plot_cache = None
        self.plot = None
        if plot:
            self.plot = w.HTML(value="").add_class("tinyml-plot")
            children.append(self.plot)
        children.append(self.status)
        self.widget = w.VBox(children).add_class("tinyml-widget")
        self._debouncer = Debouncer(self._send, quiet=debounce, max_wait=max_wait,
                                    on_error=self._failed)
        self._send(self.values())  # the first reading, synchronously

    # -- behaviour ------------------------------------------------------------------------------
    def values(self) -> list[float]:
        return [float(s.value) for s in self.sliders]

    def _changed(self, change) -> None:
        owner = change["owner"] if "owner" in change else None
        if owner in self.sliders:
            self._moved = self.sliders.index(owner)
        self._debouncer.submit(self.values())

    def _send(self, values) -> None:
        try:
            with board_lock(self.board):
                prediction = self.board.compare(values)[0]
        except Exception as exc:  # noqa: BLE001 - the board may be gone; say so, never raise
            self._failed(exc)
            return
        self.requests += 1
        self.last = prediction
        self.result.value = self._reading_html(prediction)
        if self.plot is not None:
            self.plot.value = self._plot_html(prediction)
        kind = {"sim": "virtual Uno (simavr)"}.get(self.board.kind, str(self.board.kind))
        port = getattr(self.board, "port", None)
        parts = [self.board.name, kind] + ([str(port)] if port else []) + [
            f"{self.requests} request{'s' if self.requests != 1 else ''}"]
        self.status.value = (f'<span class="tinyml-status-ok" style="color:#666">'
                             f"{html.escape(' · '.join(parts))}</span>")

    def _plot_html(self, p) -> str:
        """The prediction along the feature last moved, the others held where their sliders are:
        a line from the notebook's int8 model (the boards' arithmetic, ``ipytinyml.quant``; it
        costs no board requests), the board's own answer as the marker."""
        import numpy as np

        from .metrics import class_probabilities
        from .plots import XYPlot

        k = min(self._moved, len(self.features) - 1)
        held = [v for i, v in enumerate(p.inputs) if i != k]
        key = (k, tuple(held))
        if key != self._plot_key:
            slider = self.sliders[k]
            grid = np.linspace(slider.min, slider.max, 160)
            rows = np.tile(np.asarray(p.inputs, dtype=np.float64), (len(grid), 1))
            rows[:, k] = grid
            out = np.asarray(self.board.notebook_predict(rows.astype(np.float32)), dtype=np.float64)
            feature = self.features[k]
            if self.classes:
                probs = class_probabilities(out)
                series = [(name, grid, probs[:, c]) for c, name in enumerate(self.classes)]
                plot = XYPlot(xlabel=feature, ylabel="probability", series=series, y_range=(0.0, 1.0),
                              x_range=(slider.min, slider.max), legend=True, y_pad=False)
                what = "each class's probability"
            else:
                test_x, test_y = self._test
                plot = XYPlot(xlabel=feature, ylabel=self.label, series=[(self.label, grid, out[:, 0])],
                              points=(test_x[:, k], test_y[:, 0]), x_range=(slider.min, slider.max),
                              y_range=self._label_range)
                what = self.label
            self._plot_key, self._plot_cache = key, (plot, what)
        plot, what = self._plot_cache
        if self.classes:
            svg = plot.render(p.inputs[k], [float(v) for v in class_probabilities(p.board)])
        else:
            svg = plot.render(p.inputs[k], p.board[0])
        others = [f"{name} {v:g}" for i, (name, v) in enumerate(zip(self.features, p.inputs)) if i != k]
        caption = f"{what} along {self.features[k]}"
        if others:
            caption += f" ({', '.join(others)} held; move a slider to plot along it)"
        caption += (f". {'Lines' if self.classes else 'Line'}: the notebook's int8 model "
                    f"(ipytinyml.quant); {'dots' if self.classes else 'dot'}: the board's answer")
        if not self.classes:
            caption += "; points: test data" + (" (other features vary)" if others else "")
        return (f'<div class="tinyml-plot-caption" style="font-size:11px;line-height:1.35;color:#555;'
                f'max-width:520px;margin:2px 0">'
                f"{html.escape(caption)}.</div>{svg}")

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        message = " ".join(str(exc).split()) or type(exc).__name__
        self.status.value = (f'<span class="tinyml-status-error" style="color:#b00">'
                             f"board not answering ({html.escape(type(exc).__name__)}: "
                             f"{html.escape(message[:160])}); run %tinyml_flash again</span>")

    def _reading_html(self, p) -> str:
        clamped = p.clamped or (False,) * len(p.inputs)
        inputs = ", ".join(f"{name} {v:g}" + (" (clamped)" if c else "")
                           for name, v, c in zip(self.features, p.inputs, clamped))
        from .textfmt import two_decimals as d2
        board_y, notebook_y = p.board[0], p.notebook[0]
        mark = ('<span style="color:#080">✓ agree</span>' if p.agree
                else '<span style="color:#b00">✗ differ</span>')
        device = "—" if not math.isfinite(p.device_us) else f"{p.device_us:,.0f} µs"
        outputs = f"board <b class=\"tinyml-board\">{d2(board_y)}</b> {html.escape(self.label)} · " \
                  f"notebook <b class=\"tinyml-notebook\">{d2(notebook_y)}</b>"
        for label, b, n in zip(self.labels[1:], p.board[1:], p.notebook[1:]):
            outputs += f"; board <b>{d2(b)}</b> {html.escape(label)} · notebook <b>{d2(n)}</b>"
        if self.classes:
            outputs = self._class_bars(p)
        return (f'<span class="tinyml-reading" data-input="{p.inputs[0]!r}" '
                f'data-board="{board_y!r}" data-notebook="{notebook_y!r}" '
                f'data-agree="{int(p.agree)}" style="font-family:monospace">'
                f"{html.escape(inputs)} → {outputs} · "
                f"{device} on the device · {mark}</span>")

    def _class_bars(self, p) -> str:
        """A classifier's reading: one bar per class, the board's probability (the notebook's
        is the same int8 model; a differing one shows in the mark), the winner in bold."""
        from .metrics import class_probabilities, top_class
        from .plots import COLORS
        from .textfmt import two_decimals
        board = [float(v) for v in class_probabilities(p.board)]
        winner, _ = top_class(p.board)
        bars = []
        for k, (name, prob) in enumerate(zip(self.classes, board)):
            weight = "bold" if k == winner else "normal"
            bars.append(f'<div class="tinyml-class" data-class="{html.escape(name)}" data-p="{prob!r}" '
                        f'style="display:flex;align-items:center;gap:6px;font-weight:{weight}">'
                        f'<span style="width:90px;text-align:right">{html.escape(name)}</span>'
                        f'<span class="tinyml-bar" style="display:inline-block;height:12px;width:'
                        f'{200 * max(0.0, min(1.0, prob)):.0f}px;background:{COLORS[k % len(COLORS)]};'
                        f'opacity:{1.0 if k == winner else 0.5}"></span><span>{two_decimals(prob)}</span></div>')
        return "<div>" + "".join(bars) + "</div>"

    def set(self, *values) -> None:
        """Move the sliders (as a user would); the board is asked after the debounce delay."""
        for slider, value in zip(self.sliders, values):
            slider.value = value

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until the latest slider value has been answered (for tests and scripts)."""
        return self._debouncer.wait_idle(timeout)

    def close(self) -> None:
        self._debouncer.close()
        self.widget.close()
        for child in [*self.sliders, self.result, self.status] + ([self.plot] if self.plot is not None else []):
            child.close()

    # -- display --------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        """The live widget, plus what a page without a widget manager shows instead: the reading
        when the cell ran (text/plain, and text/html with the class bars or the plot). nbconvert
        uses the text/html when the notebook was saved without widget state, JupyterLab's
        default; with saved state it embeds the widget itself."""
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        bundle["text/plain"] = repr(self)
        bundle["text/html"] = self.snapshot_html()
        return bundle

    def snapshot_html(self) -> str:
        """The current reading and plot as static HTML (no widgets, no script)."""
        plot = self.plot.value if self.plot is not None else ""
        return (f'<div class="tinyml-widget-snapshot">'
                f'<div style="font-size:11px;color:#555">{html.escape(self._where())}: the reading when '
                f"this cell ran (the sliders need a running kernel)</div>"
                f"{self.result.value}{plot}</div>")

    def _where(self) -> str:
        kind = {"sim": "virtual Uno (simavr)"}.get(self.board.kind, str(self.board.kind))
        return f"{self.board.name} on the {kind}" if self.board.kind == "sim" else f"{self.board.name} on {kind}"

    def __repr__(self) -> str:
        p = self.last
        if p is None:
            return f"{self._where()}: sliders for {', '.join(self.features)} (no reading yet)"
        inputs = ", ".join(f"{name} {v:g}" for name, v in zip(self.features, p.inputs))
        from .textfmt import two_decimals as d2
        if self.classes:
            from .metrics import top_class
            k, prob = top_class(p.board)
            answer = f"board {self.classes[k]} ({d2(prob)})"
            k2, prob2 = top_class(p.notebook)
            answer += f", notebook {self.classes[k2]} ({d2(prob2)})"
        else:
            answer = "; ".join(f"board {d2(b)} {label}, notebook {d2(n)}"
                               for label, b, n in zip(self.labels, p.board, p.notebook))
        mark = "✓ agree" if p.agree else "✗ differ"
        return f"{self._where()}: {inputs} → {answer} · {mark}"
