"""Classification end to end: real training (cross-entropy), real int8 conversion with a
SOFTMAX or LOGISTIC output, the native sketch on the virtual Uno computing it, parity with the
boards' TFLM arithmetic, accuracy and confusion matrices in report.json and the views."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import ipytinyml as tm
from ipytinyml.errors import DataError, TinyMLError

SEVEN = ["mpg", "cylinders", "displacement", "horsepower", "weight", "acceleration", "model_year"]


def _origin_frame():
    from ipytinyml.data import load_autompg
    df = load_autompg().dropna()
    return df.assign(origin=df["origin"].map({1: "USA", 2: "Europe", 3: "Japan"}),
                     american=df["origin"] == 1)


def _human_lines_agree(board, root, name: str, label: str) -> int:
    """Every test row typed as a human line: the board names the class the notebook picks
    (metrics.top_class on the same int8 model) with its probability, exactly rounded."""
    import time
    from fractions import Fraction

    from fake_model.ref import two_decimals
    from ipytinyml import artifacts
    from ipytinyml.codegen.classes import board_names
    from ipytinyml.link import format_float32
    from ipytinyml.metrics import top_class

    rows = artifacts.load_split(artifacts.model_dir(root, name))["test_x"]
    classes = artifacts.read_report(artifacts.model_dir(root, name))["data"]["classes"]
    shown = board_names(classes)
    answer = re.compile(rf" -> {label}: (\S+) \((\d\.\d\d)\) \(\d+ us\)$")
    for row, scores in zip(rows, board.notebook_predict(rows)):
        typed = " ".join(format_float32(float(v)) for v in row)
        board.link._write(typed.encode() + b"\n", "typing a human line")
        line = board.link._line(time.monotonic() + 10)
        got = answer.search(line or "")
        assert got and f" {typed} -> " in line, line
        k, p = top_class(scores)
        assert got.groups() == (shown[k], two_decimals(Fraction(p))), (typed, line, k, p)
    return len(rows)


def test_text_label_is_a_classifier_and_runs_on_the_virtual_uno(tmp_path):
    report = tm.train(data=_origin_frame(), features=SEVEN, label="origin", name="origin", root=tmp_path)
    assert report["data"]["task"] == "classification"
    assert report["data"]["classes"] == ["Europe", "Japan", "USA"]  # in order of their index
    keras_entry = report["variants"]["keras"]
    assert "mae" not in keras_entry and np.sum(keras_entry["confusion"]) == report["data"]["n_test"]
    report = tm.quantize(root=tmp_path)
    v = report["variants"]
    from ipytinyml.tflite_file import read_tflite
    ops = read_tflite(tm.tflite_path("origin", tmp_path)).op_names
    assert ops == ("QUANTIZE", "FULLY_CONNECTED", "FULLY_CONNECTED", "SOFTMAX", "DEQUANTIZE")
    assert v["int8"]["runtimes"] == {"native": None, "tflm": None, "uno": None}
    assert v["int8"]["accuracy"] >= 0.70
    assert abs(v["int8"]["accuracy"] - v["float32"]["accuracy"]) <= 0.04
    with tm.flash(root=tmp_path, board="sim") as board:
        result = tm.evaluate_on_board(root=tmp_path, board=board)
        assert result["parity"]["matched"] == result["parity"]["total"] == report["data"]["n_test"]
        assert result["parity"]["raw_matched"] == result["parity"]["raw_total"] == 256
        assert result["accuracy"] == pytest.approx(v["int8"]["accuracy"])
        assert result["confusion"] == v["int8"]["confusion"] and result["classes"] == ["Europe", "Japan", "USA"]
        assert _human_lines_agree(board, tmp_path, "origin", "origin") == report["data"]["n_test"]
        scores = board.predict([18, 8, 307, 130, 3504, 12, 70])  # a 1970 V8: American
        assert scores.shape == (1, 3) and abs(float(scores.sum()) - 1) < 0.05
        from ipytinyml.views import EvaluateResult, PredictResult
        shown = repr(PredictResult(board.compare([[18, 8, 307, 130, 3504, 12, 70]]), features=SEVEN,
                                   labels=["origin"], classes=result["classes"]))
        assert "USA" in shown and "✓" in shown
        assert "confusion matrix on the board" in repr(EvaluateResult(result, name="origin"))
        from ipytinyml.widgets import BoardSlider
        slider = BoardSlider(board, tmp_path, plot=False)
        try:
            slider.set(18, 8, 307, 130, 3504, 12, 70)
            assert slider.wait_idle(10)
            page = slider.result.value
            bars = re.findall(r'data-class="(\w+)" data-p="([0-9.e-]+)"', page)
            assert [name for name, _ in bars] == ["Europe", "Japan", "USA"]
            probs = [float(p) for _, p in bars]
            assert probs == pytest.approx(list(slider.last.board)) and max(probs) == probs[2]
            assert page.count('class="tinyml-bar"') == 3 and "✓ agree" in page
        finally:
            slider.close()


def test_bool_label_is_a_binary_sigmoid_classifier(tmp_path):
    report = tm.train(data=_origin_frame(), features=SEVEN, label="american", name="usa", root=tmp_path)
    assert report["data"]["classes"] == ["False", "True"]
    report = tm.quantize(root=tmp_path)
    from ipytinyml.tflite_file import read_tflite
    assert "LOGISTIC" in read_tflite(tm.tflite_path("usa", tmp_path)).op_names
    v = report["variants"]
    assert v["int8"]["accuracy"] >= 0.8 and abs(v["int8"]["accuracy"] - v["float32"]["accuracy"]) <= 0.04
    with tm.flash(root=tmp_path, board="sim") as board:
        result = tm.evaluate_on_board(root=tmp_path, board=board)
        assert result["parity"]["matched"] == result["parity"]["total"]
        assert result["accuracy"] == pytest.approx(v["int8"]["accuracy"])
        assert _human_lines_agree(board, tmp_path, "usa", "american") == report["data"]["n_test"]


def test_classification_errors_are_one_line(tmp_path):
    with pytest.raises(DataError, match="one label column"):
        tm.train(features=["horsepower"], label=["origin", "cylinders"], task="classification", root=tmp_path)
    with pytest.raises(DataError, match="unknown task"):
        tm.train(features=["horsepower"], label="origin", task="clustering", root=tmp_path)
    with pytest.raises(DataError, match="at most 64 are supported"):
        tm.train(features=["horsepower"], label="weight", task="classification", root=tmp_path)
    frame = pd.DataFrame({"x": np.arange(20.0), "y": ["same"] * 20})
    with pytest.raises(DataError, match="only one class"):
        tm.train(data=frame, features=["x"], label="y", root=tmp_path)
    import keras
    regression_head = keras.Sequential([keras.Input((1,)), keras.layers.Dense(3)])
    with pytest.raises(TinyMLError, match="must end in Dense"):
        tm.train(features=["horsepower"], label="origin", task="classification", model=regression_head,
                 root=tmp_path)
