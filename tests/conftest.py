"""Shared fixtures: real TensorFlow models trained on AutoMPG and converted once per session."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TEST_EPOCHS = 300  # full-batch steps: enough for a realistic fit, fast enough for CI


@pytest.fixture(scope="session")
def autompg_split():
    """(train_x, train_y, test_x, test_y) float32 arrays: horsepower -> mpg, the TF tutorial split."""
    from ipytinyml.data import load_data

    d = load_data("autompg", ["horsepower"], "mpg", seed=0)
    return d.train_x, d.train_y, d.test_x, d.test_y


def _dense_model(train_x, hidden, activation="relu", seed=0):
    import keras
    from ipytinyml import training as train

    train.seed_everything(seed)
    normalizer = keras.layers.Normalization(axis=-1)
    normalizer.adapt(train_x)
    layers = [keras.Input((train_x.shape[1],)), normalizer]
    layers += [keras.layers.Dense(units, activation=activation) for units in hidden]
    layers.append(keras.layers.Dense(1))
    return keras.Sequential(layers)


@pytest.fixture(scope="session")
def keras_models(autompg_split):
    """Trained Keras models: ``default`` (1->64->1), ``relu6`` (1->16->1), ``two_hidden`` (1->32->16->1)."""
    from ipytinyml import training as train

    train_x, train_y, _, _ = autompg_split
    models = {
        "default": _dense_model(train_x, [64]),
        "relu6": _dense_model(train_x, [16], activation="relu6"),
        "two_hidden": _dense_model(train_x, [32, 16]),
    }
    for model in models.values():
        train.fit(model, train_x, train_y, epochs=TEST_EPOCHS)
    return models


@pytest.fixture(scope="session")
def tflite_models(keras_models, autompg_split, tmp_path_factory):
    """Path of each converted model.

    ``float32``; ``int8`` (per-tensor Dense, float I/O); ``int8_pc`` (per-channel, float I/O);
    ``int8_io`` (per-tensor, int8 I/O); ``int8_pc_io``; ``relu6`` and ``two_hidden`` (int8).
    """
    from ipytinyml.convert import convert

    train_x = autompg_split[0]
    folder = tmp_path_factory.mktemp("tflite")
    recipes = {
        "float32": ("default", "float32", {}),
        "int8": ("default", "int8", {}),
        "int8_pc": ("default", "int8", {"per_channel": True}),
        "int8_io": ("default", "int8", {"int8_io": True}),
        "int8_pc_io": ("default", "int8", {"per_channel": True, "int8_io": True}),
        "relu6": ("relu6", "int8", {}),
        "two_hidden": ("two_hidden", "int8", {}),
    }
    paths = {}
    for key, (model, variant, options) in recipes.items():
        path = folder / f"{key}.tflite"
        path.write_bytes(convert(keras_models[model], variant, train_x, **options))
        paths[key] = path
    return paths


@pytest.fixture(scope="session")
def all_int8_inputs():
    """Every int8 value, as a [256, 1] array."""
    return np.arange(-128, 128, dtype=np.int8).reshape(-1, 1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under scripts/test (IPYTINYML_REQUIRE_TOOLS, set after scripts/setup installed every
    tool) and in CI, a test skipped for a missing compiler, simulator or package means the
    setup is incomplete: fail it instead of hiding it. Only ``hardware`` tests (no board
    attached) may skip there."""
    outcome = yield
    report = outcome.get_result()
    strict = os.environ.get("CI") or os.environ.get("IPYTINYML_REQUIRE_TOOLS")
    if (report.skipped and strict and item.get_closest_marker("hardware") is None
            and not hasattr(report, "wasxfail")):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped where scripts/setup installs everything (CI, scripts/test): {reason}"
