"""A user's own data on the virtual Uno: the board computes the pre-stage and the int8 graph
bit for bit as the notebook does, for several features of any scale, a constant column, large
labels and several labels (real training, conversion, avr-gcc build and simavr)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import ipytinyml as tm

FOUR = ["cylinders", "displacement", "horsepower", "weight"]
SEVEN = FOUR + ["acceleration", "model_year", "origin"]


def _synthetic(factor=1.0, constant=False):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"small": rng.uniform(0, 1, 300), "large": rng.uniform(0, 10_000, 300)})
    if constant:
        df["flat"] = 7.25
    df["y"] = (3 * np.sin(3 * df["small"]) + df["large"] / 2_000) * factor
    return df


CASES = {
    "AutoMPG 4 features": ("autompg", FOUR, "mpg"),
    "AutoMPG 7 features": ("autompg", SEVEN, "mpg"),
    "features 10^4 apart": (_synthetic(), ["small", "large"], "y"),
    "a constant column": (_synthetic(constant=True), ["small", "flat", "large"], "y"),
    "label x 1e7": (_synthetic(factor=1e7), ["small", "large"], "y"),
    "two labels": ("autompg", FOUR, ["mpg", "acceleration"]),
}


def _edge_rows(stage, train_x):
    """Per feature, with the others at their means: the training range's ends, far outside it,
    values on and next to the rounding boundaries of the int8 grid, zero and negative zero."""
    base = np.asarray(stage.mean, dtype=np.float64)
    rows = []
    for i, (mean, div) in enumerate(zip(stage.mean, stage.div)):
        values = [train_x[:, i].min(), train_x[:, i].max(), 1e30, -1e30, 3.0e38, 0.0, -0.0]
        for k in (-128, -60, -1, 0, 1, 77, 126, 127):
            edge = np.float32(mean + (k - stage.zero_point + 0.5) * div)
            values += [edge, np.nextafter(edge, np.float32(np.inf)), np.nextafter(edge, np.float32(-np.inf))]
        for v in values:
            row = base.copy()
            row[i] = v
            rows.append(row)
    return np.asarray(rows, dtype=np.float32)


@pytest.mark.parametrize("case", list(CASES))
def test_board_and_notebook_agree_bit_for_bit(tmp_path, case):
    data, features, label = CASES[case]
    tm.train(data=data, features=features, label=label, name="own", root=tmp_path, epochs=300)
    report = tm.quantize(root=tmp_path)
    assert report["variants"]["int8"]["gate"]["ok"], report["variants"]["int8"]["gate"]["message"]
    with tm.flash(root=tmp_path, board="sim") as board:
        result = tm.evaluate_on_board(root=tmp_path, board=board)
        parity = result["parity"]
        assert parity["matched"] == parity["total"] == report["data"]["n_test"]
        assert parity["raw_matched"] == parity["raw_total"] == 256
        n_out = len(report["data"]["labels"])
        assert len(result["mae_per_output"]) == n_out
        assert result["mae"] == pytest.approx(report["variants"]["int8"]["mae"], rel=1e-6)

        stage = board.plan.input_stage
        info = board.info()
        assert len(stage.mean) == len(features)
        train_x = tm.load_split("own", tmp_path)["train_x"]
        rows = _edge_rows(stage, train_x)
        compared = board.compare(rows)
        assert all(p.agree for p in compared), [p for p in compared if not p.agree][:3]
        # the board's int8 input is the notebook's: the 'p' answers equal the 'r' answers for
        # the int8 the host pre-stage computed
        np.testing.assert_array_equal(board.predict_q(rows), board.predict_raw(stage.quantize(rows)))
        assert info.n_in == len(features) and info.n_out == n_out
