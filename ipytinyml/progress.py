"""The magics' live progress line.

``Progress`` is a one-line display updated in place with
``display(..., display_id=True)`` in a Jupyter kernel (nbclient records the
updates too); in a terminal it prints its final state once.
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass, field

from .textfmt import CSS_PREFIX, duration


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
            self.finish(f"failed after {duration(self.elapsed)}", failed=True)
