"""Real Keras models with sigmoid, tanh and softmax activations, trained and converted once per
process (tests/test_activations.py, test_codegen_native.py, test_native_arm.py and
benchmarks/bench_native_cycles.py use them).

The data are synthetic but learnable: 7 standardized features, a 3-class label (argmax of a
fixed linear map plus noise) and a binary label. Conversion is the project's own
``convert.convert(model, "int8", train_x)``: per-tensor Dense, float I/O unless ``int8_io``.
"""
from __future__ import annotations

import functools
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

N_FEATURES = 7
EPOCHS = 60

# name -> (hidden layers [(units, activation)], output (units, activation), label)
RECIPES = {
    # 7 -> 32 relu -> 3 softmax: FULLY_CONNECTED(RELU), FULLY_CONNECTED, SOFTMAX
    "softmax": ([(32, "relu")], (3, "softmax"), "class"),
    # 7 -> 16 relu -> 1 sigmoid: a binary classifier ending in LOGISTIC
    "sigmoid_out": ([(16, "relu")], (1, "sigmoid"), "binary"),
    # 7 -> 16 tanh -> 1: TANH as a hidden activation
    "tanh_hidden": ([(16, "tanh")], (1, None), "value"),
    # 7 -> 16 sigmoid -> 8 tanh -> 3 softmax: every op, hidden and last
    "mixed": ([(16, "sigmoid"), (8, "tanh")], (3, "softmax"), "class"),
}


def data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, N_FEATURES)).astype(np.float32)
    w = rng.normal(size=(N_FEATURES, 3))
    logits = x @ w + 0.3 * rng.normal(size=(400, 3))
    return {
        "x": x,
        "class": logits.argmax(axis=1).astype(np.int64),
        "binary": (logits[:, 0] > 0).astype(np.float32),
        "value": np.tanh(logits[:, 1]).astype(np.float32) * 3 + logits[:, 2].astype(np.float32),
    }


@functools.lru_cache(maxsize=None)
def keras_model(name: str):
    import keras
    from ipytinyml import training

    hidden, (units, activation), label = RECIPES[name]
    training.seed_everything(0)
    layers = [keras.Input((N_FEATURES,))]
    layers += [keras.layers.Dense(u, activation=a) for u, a in hidden]
    layers.append(keras.layers.Dense(units, activation=activation))
    model = keras.Sequential(layers)
    loss = {"class": "sparse_categorical_crossentropy", "binary": "binary_crossentropy", "value": "mse"}[label]
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
    d = data()
    model.fit(d["x"], d[label], epochs=EPOCHS, batch_size=400, verbose=0)
    return model


@functools.lru_cache(maxsize=None)
def tflite(name: str, int8_io: bool = False) -> bytes:
    from ipytinyml.convert import convert

    return convert(keras_model(name), "int8", data()["x"], int8_io=int8_io)


@functools.lru_cache(maxsize=None)
def op_alone(activation: str, n: int, lo: float, hi: float) -> bytes:
    """A model that is only the activation (LOGISTIC, TANH or SOFTMAX), int8 in and out, its
    input calibrated on [lo, hi]: all 256 int8 inputs reach the op."""
    import keras
    from ipytinyml.convert import convert

    layer = keras.layers.Softmax() if activation == "softmax" else keras.layers.Activation(activation)
    model = keras.Sequential([keras.Input((n,)), layer])
    x = np.random.default_rng(0).uniform(lo, hi, size=(300, n)).astype(np.float32)
    x[0], x[1] = lo, hi
    return convert(model, "int8", x, int8_io=True)


def test_rows(n_inputs: int, n_random: int = 400, seed: int = 0) -> np.ndarray:
    """int8 input rows: every value at every position (harness-style) plus random rows."""
    v = np.arange(256)[:, None]
    d = np.arange(n_inputs)[None, :]
    rows = (v + 37 * d) % 256 - 128
    rng = np.random.default_rng(seed)
    return np.concatenate([rows, rng.integers(-128, 128, size=(n_random, n_inputs))]).astype(np.int64)
