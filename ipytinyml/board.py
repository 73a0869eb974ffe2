"""A connected board: the serial link plus, for the virtual board, its simulator process.

``Board`` is what ``tm.flash`` returns. It predicts through the firmware and
keeps what the notebook needs to check the answers: the model plan (for the
host's own bit-exact prediction) and the timing of the last request.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .quant import ModelPlan, dequantize, evaluate_plan, predict_float


@dataclass(frozen=True)
class Prediction:
    """One input row through the board, next to the notebook's own int8 prediction."""

    inputs: tuple[float, ...]
    board: tuple[float, ...]  # dequantized board outputs
    notebook: tuple[float, ...]  # the same int8 model computed on the host (bit-exact reference)
    board_q: tuple[int, ...]
    notebook_q: tuple[int, ...]
    device_us: float  # on-device inference time of this row (the request's average per row)
    clamped: tuple[bool, ...] = ()  # per input: outside what the int8 input holds, so saturated

    @property
    def agree(self) -> bool:
        return self.board_q == self.notebook_q


class Board:
    """A board running an ipytinyml sketch, connected over serial.

    Use as a context manager, or call ``close()``. Closing closes the serial link; it stops
    the simulator too when the board owns it (``owns_process``). The virtual Uno of
    ``tm.flash(board="sim")`` is shared by every flash in the process and is not stopped.
    """

    def __init__(self, link, plan: ModelPlan, *, kind: str, name: str, process=None, build=None,
                 owns_process: bool = True):
        self.link = link
        self.plan = plan
        self.kind = kind  # "sim", "uno", "nano33ble" or an FQBN
        self.name = name
        self.process = process  # the simulator, for the virtual board
        self.owns_process = owns_process
        self.build = build  # flash/RAM figures of the sketch
        self.last_timing = None

    # -- predictions ------------------------------------------------------------------------
    def predict(self, values) -> np.ndarray:
        """Float inputs -> float outputs, as rows [n, n_outputs]; the board quantizes them."""
        return dequantize(self.predict_q(values), self.plan.output)

    def predict_q(self, values) -> np.ndarray:
        """Float inputs (quantized on the board) -> the board's int8 outputs, rows [n, n_outputs]."""
        rows = self._rows(values)
        return self._invoke("p", rows.reshape(-1)).reshape(len(rows), -1)

    def predict_raw(self, values) -> np.ndarray:
        """int8 inputs straight into the first layer -> int8 outputs, rows [n, n_outputs]."""
        q = np.asarray(values).reshape(-1)
        if q.size == 0 or q.size % self.plan.n_inputs:
            raise DataError(f"give a multiple of {self.plan.n_inputs} int8 values")
        return self._invoke("r", q.astype(np.int64)).reshape(-1, self.plan.n_outputs)

    def compare(self, values) -> list[Prediction]:
        """Board and notebook predictions side by side, with the device time of each row."""
        rows = self._rows(values)
        board_q = self.predict_q(rows)
        stage = self.plan.input_stage
        notebook_q = evaluate_plan(self.plan, stage.quantize(rows))
        clamped = stage.clamped(rows)
        per_row_us = (self.last_timing.device_us / len(rows)) if self.last_timing else float("nan")
        out = []
        for x, bq, nq, c in zip(rows, board_q, notebook_q, clamped):
            out.append(Prediction(
                inputs=tuple(float(v) for v in x),
                board=tuple(float(v) for v in dequantize(bq, self.plan.output)),
                notebook=tuple(float(v) for v in dequantize(nq, self.plan.output)),
                board_q=tuple(int(v) for v in bq), notebook_q=tuple(int(v) for v in nq),
                device_us=per_row_us, clamped=tuple(bool(v) for v in c)))
        return out

    def notebook_predict(self, values) -> np.ndarray:
        """The host's bit-exact prediction of what the board computes (no board involved)."""
        return predict_float(self.plan, self._rows(values))

    def info(self):
        return self.link.info()

    def cycles(self) -> int | None:
        """Simulated CPU cycles so far (virtual board only)."""
        return self.process.cycles() if self.process is not None else None

    # -- plumbing ---------------------------------------------------------------------------
    def _rows(self, values) -> np.ndarray:
        """Values as float32 rows [n, n_inputs]; a flat list is read row after row."""
        n_in = self.plan.n_inputs
        try:
            rows = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"inputs must be numbers, not {values!r}") from exc
        if rows.ndim <= 1 and rows.size % n_in == 0:
            rows = rows.reshape(-1, n_in)
        if rows.ndim != 2 or rows.shape[1] != n_in or len(rows) == 0:
            raise DataError(f"give {n_in} value(s) per prediction (got shape {rows.shape})")
        if not np.all(np.abs(rows) <= np.finfo(np.float32).max):
            raise DataError("inputs must be finite float32 numbers (no nan, inf or |x| > 3.4e38)")
        return rows.astype(np.float32)

    def _invoke(self, mode: str, flat: np.ndarray) -> np.ndarray:
        if mode == "p":
            outputs, timing = self.link.request_values("p", [float(v) for v in flat])
        else:
            outputs, timing = self.link.request_values("r", [int(v) for v in flat])
        self.last_timing = timing
        return np.asarray(outputs, dtype=np.int64)

    @property
    def port(self) -> str | None:
        return getattr(self.link, "port", None)

    def close(self) -> None:
        try:
            self.link.close()
        finally:
            if self.process is not None and self.owns_process:
                self.process.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<Board {self.kind} model={self.name} port={self.port}>"
