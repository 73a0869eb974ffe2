"""A user's own data: int8 stays as accurate as float32 whatever the features' scales, the
labels' magnitude, constant columns or several labels; models quantize or answer in one line.

Real training and real conversion throughout (TensorFlow, LiteRT). The int8 error is measured
through the input pre-stage, exactly as a board computes it (``reference.run_staged``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import ipytinyml as tm
from ipytinyml.errors import ConvertError, DataError, TinyMLError

FOUR = ["cylinders", "displacement", "horsepower", "weight"]
SEVEN = FOUR + ["acceleration", "model_year", "origin"]


def _maes(report):
    v = report["variants"]
    return v["keras"]["mae"], v["float32"]["mae"], v["int8"]["mae"]


@pytest.mark.parametrize("features", [FOUR, SEVEN], ids=["4 features", "7 features"])
def test_autompg_several_features_int8_as_accurate_as_float32(tmp_path, features):
    """Was int8 7.05 against float32 2.36 with 4 features (one input scale over raw features)."""
    tm.train(features=features, label="mpg", name="cars", root=tmp_path)
    keras_mae, float_mae, int8_mae = _maes(tm.quantize(root=tmp_path))
    assert keras_mae < 2.8
    assert abs(float_mae - keras_mae) < 1e-3
    assert abs(int8_mae - float_mae) <= 0.05
    entry = tm.quantize(root=tmp_path)["variants"]["int8"]
    assert entry["standardized"] and entry["gate"]["ok"]
    assert entry["runtimes"] == {"native": None, "tflm": None, "uno": None}


def _scaled_frame(n=400, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"small": rng.uniform(0, 1, n), "large": rng.uniform(0, 10_000, n)})
    df["y"] = 3 * np.sin(3 * df["small"]) + df["large"] / 2_000 + rng.normal(0, 0.02, n)
    return df


def test_features_ten_thousand_times_apart(tmp_path):
    """Was 0.0102 -> int8 4.845 for a in 0..99 and b in 0..1."""
    tm.train(data=_scaled_frame(), features=["small", "large"], label="y", name="scales", root=tmp_path)
    report = tm.quantize(root=tmp_path)
    _, float_mae, int8_mae = _maes(report)
    assert float_mae < 0.1
    assert report["variants"]["int8"]["gate"]["ok"], report["variants"]["int8"]["gate"]
    assert int8_mae - float_mae <= report["variants"]["int8"]["gate"]["limit"]


def test_constant_feature_contributes_nothing(tmp_path):
    df = _scaled_frame()
    df["flat"] = 7.25
    report = tm.train(data=df, features=["small", "flat", "large"], label="y", name="flat", root=tmp_path)
    assert report["data"]["constant_features"] == ["flat"]
    report = tm.quantize(root=tmp_path)
    keras_mae, float_mae, int8_mae = _maes(report)
    assert abs(float_mae - keras_mae) < 1e-3  # was float32 TFLite 0.544 against Keras 0.1425
    assert report["variants"]["int8"]["constant_features"] == ["flat"]
    assert report["variants"]["int8"]["gate"]["ok"]
    # a value the feature never had changes nothing, in Keras and through the int8 pre-stage
    from ipytinyml import artifacts, reference
    model = artifacts.load_keras(tmp_path / "flat")
    rows = np.array([[0.5, 7.25, 5000], [0.5, -300.0, 5000], [0.5, 1e6, 5000]], dtype=np.float32)
    keras_out = np.asarray(model(rows))
    assert np.ptp(keras_out) == 0
    int8_out = reference.run_staged(tm.tflite_path("flat", tmp_path).read_bytes(), _stage(report), rows)
    assert np.ptp(int8_out) == 0


def _stage(report):
    from ipytinyml.prestage import InputStage
    return InputStage.from_json(report["variants"]["int8"]["input_stage"])


@pytest.mark.parametrize("factor", [1e-3, 1e7])
def test_label_magnitude_does_not_matter(tmp_path, factor):
    """A label in the millions ended worse than predicting the mean; now it trains like the
    same label in its own units, and the saved model predicts in those units."""
    base = _scaled_frame()
    scaled = base.assign(y=base["y"] * factor)
    tm.train(data=base, features=["small", "large"], label="y", name="unit", root=tmp_path, epochs=400)
    unit = tm.quantize(root=tmp_path)
    tm.train(data=scaled, features=["small", "large"], label="y", name="big", root=tmp_path, epochs=400)
    big = tm.quantize(root=tmp_path)
    for (a, b) in zip(_maes(unit), _maes(big)):
        assert b / factor == pytest.approx(a, rel=0.1)
    assert _maes(big)[0] / factor < 0.2 * np.std(base["y"])  # far better than the mean


def test_several_labels(tmp_path):
    report = tm.train(features=FOUR, label=["mpg", "acceleration"], name="two", root=tmp_path)
    assert report["data"]["labels"] == ["mpg", "acceleration"]
    assert tm.load_split("two", tmp_path)["train_y"].shape == (314, 2)
    report = tm.quantize(root=tmp_path)
    _, float_mae, int8_mae = _maes(report)
    assert abs(int8_mae - float_mae) <= report["variants"]["int8"]["gate"]["limit"]
    assert report["variants"]["int8"]["runtimes"]["native"] is None
    # the comma form of the magic's --label
    again = tm.train(features=FOUR, label="mpg,acceleration", name="two", root=tmp_path, epochs=50)
    assert again["data"]["label"] == "mpg,acceleration"


def _user_model(*layers):
    import keras
    return keras.Sequential([keras.Input((4,)), *layers])


def _user_models():
    """name -> (model builder, whether int8 must match float32: a model whose first computing
    layer is not a Dense keeps raw inputs; the others train and run on standardized features)."""
    import keras
    L = keras.layers
    return {
        "bias-free Dense after Normalization": (lambda x: _user_model(
            _adapted(x), L.Dense(32, activation="relu", use_bias=False), L.Dense(1)), True),
        "Dropout after Normalization": (lambda x: _user_model(
            _adapted(x), L.Dropout(0.1), L.Dense(32, activation="relu"), L.Dense(1)), True),
        "BatchNormalization after the first Dense": (lambda x: _user_model(
            _adapted(x), L.Dense(32), L.BatchNormalization(), L.ReLU(), L.Dense(1)), True),
        "Dropout, raw inputs": (lambda x: _user_model(
            L.Dropout(0.1), L.Dense(32, activation="relu"), L.Dense(1)), True),
        "BatchNormalization after the first Dense, raw inputs": (lambda x: _user_model(
            L.Dense(32), L.BatchNormalization(), L.ReLU(), L.Dense(1)), True),
        "BatchNormalization first": (lambda x: _user_model(
            L.BatchNormalization(), L.Dense(32, activation="relu"), L.Dense(1)), True),
        "Rescaling first": (lambda x: _user_model(
            L.Rescaling(1 / 1000, offset=-1.0), L.Dense(32, activation="relu"), L.Dense(1)), True),
        "Flatten first": (lambda x: _user_model(L.Flatten(), L.Dense(32, activation="relu"), L.Dense(1)),
                          True),
        "Reshape to (4,) first": (lambda x: _user_model(L.Reshape((4,)), L.Dense(32, activation="relu"),
                                                        L.Dense(1)), True),
    }


def _adapted(x):
    import keras
    norm = keras.layers.Normalization()
    norm.adapt(x)
    return norm


@pytest.mark.parametrize("kind", list(_user_models()))
def test_user_models_quantize_and_stay_accurate(tmp_path, kind):
    """Each crashed quantize or lost ~3x in int8 (Dropout 2.49 -> 7.11, BatchNormalization
    2.26 -> 13.27); the first Dense now absorbs the standardization."""
    import keras

    from ipytinyml.data import load_data
    x = load_data("autompg", FOUR, "mpg").train_x
    build, trains_well = _user_models()[kind]
    keras.utils.set_random_seed(0)
    tm.train(features=FOUR, label="mpg", name="user", root=tmp_path, model=build(x), epochs=600)
    report = tm.quantize(root=tmp_path)
    entry = report["variants"]["int8"]
    assert entry["standardized"]
    assert entry["runtimes"]["native"] is None
    _, float_mae, int8_mae = _maes(report)
    gate = entry["gate"]
    assert gate["ok"] == (int8_mae - float_mae <= gate["limit"])
    assert gate["ok"] or "likely cause" in gate["message"]
    if trains_well:
        assert float_mae < 3.0
        assert gate["ok"], gate["message"]


def test_model_that_cannot_be_standardized_is_flagged_not_silent(tmp_path):
    """A model whose first layer is not one the pre-stage can stand in for (here an activation
    on the raw features) keeps raw inputs: quantize works, and the gate says why int8 fails."""
    import keras
    L = keras.layers
    keras.utils.set_random_seed(0)
    model = _user_model(L.Activation("relu"), L.Dense(32, activation="relu"), L.Dense(1))
    tm.train(features=FOUR, label="mpg", name="raw", root=tmp_path, model=model, epochs=600)
    report = tm.quantize(root=tmp_path)
    entry = report["variants"]["int8"]
    assert entry["standardized"] is False
    assert not entry["gate"]["ok"]
    assert "likely cause: the model's raw features share one int8 input scale" in entry["gate"]["message"]
    assert "RELU" in entry["runtimes"]["native"]  # a separate RELU op: the native runtime says so
    from ipytinyml.views import QuantizeResult
    shown = repr(QuantizeResult(report, ["float32", "int8"]))
    assert "⚠ int8 test MAE" in shown and "no runtime can flash it: operator 1 (RELU)" in shown


def test_gate_bounds_and_basis():
    from ipytinyml import accuracy
    assert accuracy.tolerance(2.0, 0.01) == (pytest.approx(0.1), "5% of float32")
    assert accuracy.tolerance(0.02, 0.03) == (pytest.approx(0.015), "half an int8 output step")
    ok = accuracy.gate(2.0, 2.09, 0.01)
    assert ok["ok"] and ok["message"] is None
    bad = accuracy.gate(2.0, 2.2, 0.01, cause=lambda: "the output")
    assert not bad["ok"] and bad["message"].endswith("likely cause: the output")


def test_too_large_for_the_uno_is_known_at_quantize_and_refused_before_compiling(tmp_path):
    """Dense 256 -> 128 was a compiler error ('overflow in constant expression')."""
    import keras
    L = keras.layers
    keras.utils.set_random_seed(0)
    model = _user_model(_adapted(load_x()), L.Dense(256, activation="relu"),
                        L.Dense(128, activation="relu"), L.Dense(1))
    tm.train(features=FOUR, label="mpg", name="huge", root=tmp_path, model=model, epochs=20)
    entry = tm.quantize(root=tmp_path)["variants"]["int8"]
    assert "32,768 weights" in entry["runtimes"]["uno"] and "32,767" in entry["runtimes"]["uno"]
    assert entry["runtimes"]["native"] is None and entry["runtimes"]["tflm"] is None
    with pytest.raises(TinyMLError, match="does not fit.*32,768 weights") as info:
        tm.flash(root=tmp_path, board="sim")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "huge" / "build").exists(), "refused before the compiler ran"


def load_x():
    from ipytinyml.data import load_data
    return load_data("autompg", FOUR, "mpg").train_x


def test_a_dead_layer_is_one_line_not_a_litert_failure(tmp_path):
    """Every ReLU of the hidden layer off on the training data: the converter clamps the next
    layer's bias and LiteRT then refused to prepare it ("scale_diff / output_scale")."""
    import keras
    L = keras.layers
    model = _user_model(_adapted(load_x()), L.Dense(8, activation="relu"), L.Dense(4, activation="relu"),
                        L.Dense(1))
    kernel, _ = model.layers[1].get_weights()
    model.layers[1].set_weights([np.zeros_like(kernel) + 1e-3, np.full(8, -1.0, np.float32)])
    kernel, _ = model.layers[2].get_weights()
    model.layers[2].set_weights([kernel, np.full(4, 0.5, np.float32)])
    tm.train(features=FOUR, label="mpg", name="dead", root=tmp_path, model=model, epochs=1)
    with pytest.raises(ConvertError, match="Dense layer 2 cannot be quantized") as info:
        tm.quantize(root=tmp_path)
    assert "\n" not in str(info.value)


def test_standardized_graph_is_the_same_function():
    """graph((x - mean) / std) == model(x) in float, with and without a Normalization."""
    import keras

    from ipytinyml.convert import standardized_graph
    from ipytinyml.data import load_data
    x = load_data("autompg", FOUR, "mpg").train_x
    L = keras.layers
    batch_norm = _user_model(L.BatchNormalization(), L.Dense(8, activation="relu"), L.Dense(1))
    batch_norm.layers[0].set_weights([np.array([0.5, 2.0, -1.0, 1.5], np.float32),  # gamma
                                      np.array([0.1, -0.2, 0.3, 0.0], np.float32),  # beta
                                      x.mean(axis=0), x.var(axis=0)])  # moving mean, variance
    rescaled = _user_model(L.Rescaling([1 / 8, 1 / 400, 1 / 200, 1 / 5000], offset=-0.5), L.Dense(8),
                           L.Dense(1))
    for model in (_user_model(_adapted(x), L.Dense(8, activation="relu"), L.Dense(1)),
                  _user_model(L.Dropout(0.5), L.Dense(8, activation="tanh", use_bias=False), L.Dense(2)),
                  batch_norm, rescaled):
        graph, mean, std, constant = standardized_graph(model, x)
        assert not constant.any()
        z = ((x - mean) / std).astype(np.float32)
        np.testing.assert_allclose(np.asarray(graph(z)), np.asarray(model(x)), rtol=1e-4, atol=1e-3)
        assert [type(layer).__name__ for layer in graph.layers][0] == "Dense"


def test_header_only_csv_and_bool_columns(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("x1,y\n")
    with pytest.raises(DataError, match="no data rows"):
        tm.train(data=str(empty), features=["x1"], label="y", root=tmp_path)
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"on": rng.integers(0, 2, 200).astype(bool), "t": rng.uniform(0, 10, 200)})
    df["y"] = 5 * df["on"] + df["t"]
    report = tm.train(data=df, features=["on", "t"], label="y", name="flags", root=tmp_path, epochs=300)
    assert report["variants"]["keras"]["mae"] < 0.5
    assert set(np.unique(tm.load_split("flags", tmp_path)["train_x"][:, 0])) == {0.0, 1.0}


def test_label_list_errors_are_one_line(tmp_path):
    for label, match in ((["mpg", "mpg"], "named twice"), (["horsepower"], "both a feature and the label"),
                         ([], "no label"), ([3], "column names")):
        with pytest.raises(DataError, match=match):
            tm.train(features=["horsepower"], label=label, root=tmp_path)


def test_wrong_output_count_says_how_many_labels(tmp_path):
    import keras
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    with pytest.raises(TinyMLError, match=r"regression on 2 labels needs a final Dense\(2\)"):
        tm.train(label=["mpg", "acceleration"], model=model, root=tmp_path)


def test_a_model_litert_cannot_load_is_a_one_line_convert_error():
    """No traceback from quantize: what LiteRT cannot load or run is a one-line ConvertError."""
    from ipytinyml.reference import run_litert
    with pytest.raises(ConvertError) as info:
        run_litert(b"not a model", np.zeros((1, 1), np.float32))
    assert "\n" not in str(info.value)


def test_quantize_view_says_why_int8_is_larger_and_what_runs_it(tmp_path):
    from ipytinyml.views import QuantizeResult
    tm.train(name="hp", root=tmp_path, epochs=50)
    report = tm.quantize(root=tmp_path)
    v = report["variants"]
    shown = repr(QuantizeResult(report, ["float32", "int8"]))
    assert v["int8"]["bytes"] > v["float32"]["bytes"]  # the tutorial's model: bookkeeping outweighs weights
    assert "int8 is larger than float32 here" in shown
    assert "flashable with --runtime native, tflm" in shown and "-0.000" not in shown
