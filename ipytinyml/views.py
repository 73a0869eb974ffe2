"""What the magics return: result objects.

Every result object has a plain-text form (``__repr__``, for terminals and
logs), an HTML form (``_repr_html_``, for notebooks), ``to_dict()`` and
``to_frame()``; the magics return them, so ``r = %tinyml_quantize`` keeps the
numbers. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import base64
import html

from .textfmt import (CSS_PREFIX, as_dict, box, byte_count, confusion_rows, duration, fixed, html_table,
                      micros, number, pairs_html, pairs_text, signed, text_table, two_decimals)

__all__ = ["TrainResult", "QuantizeResult", "FlashResult", "PredictResult", "EvaluateResult"]


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
        when = f", {duration(self.seconds)}" if self.seconds is not None else ""
        epochs = f"{self.epochs} epochs, " if self.epochs else ""
        return (f"Trained {self.name}: {', '.join(d.get('features', []))} -> {d.get('label', '?')} "
                f"on {d.get('source', '?')} with {model} ({epochs}seed {d.get('seed', 0)}{when})")

    def _pairs(self):
        d = self.data
        pairs = [("train rows", number(d.get("n_train"))), ("test rows", number(d.get("n_test")))]
        if d.get("n_dropped"):
            pairs.append(("rows left out", f"{number(d['n_dropped'])} (a missing feature value)"))
        if self.accuracy is not None:
            pairs += [("classes", ", ".join(d.get("classes", []))),
                      ("test accuracy", f"{self.accuracy:.3f}")]
        else:
            pairs.append(("test MAE", f"{fixed(self.mae)} {d.get('label', '')}".rstrip()))
        if d.get("constant_features"):
            pairs.append(("constant (ignored)", ", ".join(d["constant_features"])))
        return pairs

    def __repr__(self) -> str:
        return self._title() + "\n" + pairs_text(self._pairs())

    def _repr_html_(self) -> str:
        inner = pairs_html(self._pairs())
        if self.plot_png:
            data = base64.b64encode(self.plot_png).decode("ascii")
            inner += (f'<img class="{CSS_PREFIX}-plot" alt="test data and the model\'s fit" '
                      f'src="data:image/png;base64,{data}"/>')
        return box(self._title(), inner, self.css)

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
            rows.append((variant, byte_count(entry.get("bytes")) if "bytes" in entry else "—",
                         f"{value:.3f}", signed(delta) if delta is not None else "", detail))
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
        when = f" ({duration(self.seconds)})" if self.seconds is not None else ""
        out = [f"Quantized {self.name}{when}\n" + text_table(headers, rows, "lrrrl"), *self._notes()]
        confusion = self._confusion()
        if confusion:
            out.append("int8 confusion matrix (test set):\n" + text_table(*confusion, "l" + "r" * len(confusion[1])))
        return "\n".join(out)

    def _repr_html_(self) -> str:
        headers, rows = self._rows()
        when = f" ({duration(self.seconds)})" if self.seconds is not None else ""
        inner = html_table(headers, rows, "lrrrl")
        for note in self._notes():
            inner += f'<div class="{CSS_PREFIX}-summary">{html.escape(note)}</div>'
        confusion = self._confusion()
        if confusion:
            inner += (f'<div class="{CSS_PREFIX}-summary">int8 confusion matrix (test set)</div>'
                      + html_table(*confusion, "l" + "r" * len(confusion[1])))
        return box(f"Quantized {self.name}{when}", inner, self.css)

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
        pairs.append(("flash used", byte_count(flash) + (f" of {int(flash_max):,}" if flash_max else "")))
    if ram is not None:
        pairs.append(("RAM used", byte_count(ram) + (f" of {int(ram_max):,}" if ram_max else "")))
    for key in ("flash_over_bare", "flash_model", "ram_over_bare", "ram_model"):
        if b.get(key) is not None:
            pairs.append((key.replace("_", " "), byte_count(b[key])))
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
        when = f" in {duration(self.seconds)}" if self.seconds is not None else ""
        return f"{self.board.name} runs on {_board_description(self.board.kind)}{where}{when}"

    def _pairs(self):
        pairs = _build_pairs(self.build) + _info_pairs(self.info)
        return pairs

    def __repr__(self) -> str:
        out = self._title()
        if self.note:
            out = f"{self.note}\n{out}"
        pairs = self._pairs()
        return out + ("\n" + pairs_text(pairs) if pairs else "")

    def _repr_html_(self) -> str:
        inner = ""
        if self.note:
            inner += f'<div class="{CSS_PREFIX}-note">{html.escape(self.note)}</div>'
        inner += pairs_html(self._pairs())
        return box(self._title(), inner, self.css)

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
                            + self._class_cells(p.board) + self._class_cells(p.notebook) + [micros(p.device_us)]
                            + [f"{self.cycles_per_row:,.0f}" for _ in cycles] + ["✓" if p.agree else "✗"])
            return headers, rows
        headers = list(features) + [f"board {y}" for y in labels] + [f"notebook {y}" for y in labels] + [
            "device time (request average)" if len(self.predictions) > 1 else "device time", *cycles, "agree"]
        rows = []
        for p in self.predictions:
            clamped = p.clamped or (False,) * len(p.inputs)
            rows.append([f"{v:g}" + (" (clamped)" if c else "") for v, c in zip(p.inputs, clamped)]
                        + [fixed(v) for v in p.board]
                        + [fixed(v) for v in p.notebook] + [micros(p.device_us)]
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
        return box(title, inner, self.css)

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
            pairs.append(("test MAE", " · ".join(f"{label} {fixed(v)}" for label, v in zip(labels, per_output))))
        elif self.mae is not None:
            pairs.append(("test MAE", f"{fixed(self.mae)} {self.label or ''}".rstrip()))
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
            pairs.append(("device time", f"{micros(lat['device_us'])} per inference"
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
        when = f" ({duration(self.seconds)})" if self.seconds is not None else ""
        return f"{who}test set through the board{when}"

    def _confusion(self):
        if "confusion" not in self.result or not self.result.get("classes"):
            return None
        return confusion_rows(self.result["classes"], self.result["confusion"])

    def __repr__(self) -> str:
        text = self._title() + "\n" + pairs_text(self._pairs())
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
        inner = pairs_html(self._pairs())
        confusion = self._confusion()
        if confusion:
            inner += (f'<div class="{CSS_PREFIX}-summary">confusion matrix on the board</div>'
                      + html_table(*confusion, "l" + "r" * len(confusion[1])))
        inner += self.plot_svg()
        return box(self._title(), inner, self.css)

    def to_frame(self):
        """The measurements as one row (a pandas DataFrame): metric, parity, latency."""
        import pandas as pd
        row = {"mae": self.mae, **{f"parity_{k}": v for k, v in self.parity.items()},
               **{f"latency_{k}": v for k, v in self.latency.items()}}
        return pd.DataFrame([row], index=[self.name or "test set"])

    def to_dict(self) -> dict:
        return {"name": self.name, **self.result, "seconds": self.seconds}
