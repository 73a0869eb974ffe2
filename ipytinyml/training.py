"""Build and fit Keras models.

The default recipe trains the tutorial's one-hidden-layer network with
full-batch Adam and a cosine-decaying learning rate, every step of a chunk
inside one compiled TensorFlow function. On AutoMPG horsepower that reaches a
lower test MAE than the tutorial's 100-epoch ``fit(validation_split=0.2)``
in a small fraction of the time (see BENCHMARKS.md). A model the user already
compiled is trained with its own ``fit`` settings instead.

Progress goes to an injected callback; this module never prints.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import TinyMLError

# Progress callback: (epoch_done, epochs_total, loss) -> None
Progress = Callable[[int, int, float], None]

DEFAULT_EPOCHS = 1000  # full-batch steps: one step is one pass over the training set
DEFAULT_LEARNING_RATE = 0.05
HIDDEN_UNITS = 64
CLASSIFIER_UNITS = 32
_PROGRESS_CHUNKS = 20
LABEL_CENTRE_BEYOND = 10  # spreads: a label mean farther than this from 0 is subtracted


def _quiet_tensorflow():
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    return tf


def default_model(train_x: np.ndarray, n_outputs: int = 1, n_classes: int | None = None):
    """``Normalization`` (the training features' mean and variance) -> ``Dense(64, relu)`` -> ``Dense(n)``;
    a classifier (``n_classes``) ends in ``Dense(n_classes, softmax)``, or ``Dense(1, sigmoid)``
    for two classes, after ``Dense(32, relu)``.

    A constant feature gets variance 1, so it standardizes to 0 on its training value
    instead of dividing by ~0 (see ``ignore_constant_features``).
    """
    import keras

    from .convert import constant_features
    x = np.asarray(train_x, dtype=np.float64)
    variance = np.where(constant_features(x), 1.0, x.var(axis=0))
    normalizer = keras.layers.Normalization(axis=-1, mean=x.mean(axis=0), variance=variance,
                                            name="normalization")
    if n_classes:
        head = [keras.layers.Dense(CLASSIFIER_UNITS, activation="relu", name="hidden"),
                keras.layers.Dense(1, activation="sigmoid", name="output") if n_classes == 2 else
                keras.layers.Dense(n_classes, activation="softmax", name="output")]
    else:
        head = [keras.layers.Dense(HIDDEN_UNITS, activation="relu", name="hidden"),
                keras.layers.Dense(n_outputs, name="output")]
    return keras.Sequential([keras.Input((train_x.shape[1],), name="features"), normalizer, *head],
                            name="tinyml_classifier" if n_classes else "tinyml_dense")


def check_model(model, n_features: int, n_outputs: int, n_classes: int | None = None) -> None:
    """A user model must be a keras.Model mapping [batch, n_features] to [batch, n_outputs]
    (a classifier: one column per class, or one for two classes)."""
    import keras
    if not isinstance(model, keras.Model):
        raise TinyMLError(f"model must be a keras.Model, not {type(model).__name__}; "
                          "build one with keras.Sequential([...])")
    try:
        in_shape = tuple(model.input_shape)
        out_shape = tuple(model.output_shape)
    except (AttributeError, ValueError) as exc:
        raise TinyMLError("the model has no fixed input shape; start it with "
                          f"keras.Input(({n_features},))") from exc
    if len(in_shape) != 2 or in_shape[1] != n_features:
        raise TinyMLError(f"the model takes input shape {in_shape} but the data has {n_features} "
                          f"feature(s); start it with keras.Input(({n_features},))")
    if n_classes:
        if len(out_shape) != 2 or out_shape[1] not in (n_classes, 1 if n_classes == 2 else n_classes):
            binary = " (or Dense(1, activation='sigmoid'))" if n_classes == 2 else ""
            raise TinyMLError(f"the model outputs shape {out_shape}; a classifier of {n_classes} classes "
                              f"needs a final Dense({n_classes}, activation='softmax'){binary}")
        return
    if len(out_shape) != 2 or out_shape[1] != n_outputs:
        what = "one label" if n_outputs == 1 else f"{n_outputs} labels"
        raise TinyMLError(f"the model outputs shape {out_shape}; a regression on {what} needs "
                          f"a final Dense({n_outputs})")


def fit(model, train_x: np.ndarray, train_y: np.ndarray, *, epochs: int | None = None,
        seed: int = 0, progress: Progress | None = None, task: str = "regression") -> None:
    """Train ``model`` in place.

    An uncompiled model gets the fast full-batch recipe (Adam with cosine decay; MAE loss,
    or cross-entropy for a ``task="classification"`` whose ``train_y`` holds class indices).
    A compiled model keeps its optimizer and loss and is trained with
    ``model.fit(..., validation_split=0.2)`` for ``epochs`` (default 100).
    """
    tf = _quiet_tensorflow()
    import keras
    report = progress or (lambda done, total, loss: None)
    if getattr(model, "optimizer", None) is not None and getattr(model, "loss", None) is not None:
        total = epochs or 100

        class _Report(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                report(epoch + 1, total, float((logs or {}).get("loss", float("nan"))))

        model.fit(train_x, train_y, epochs=total, validation_split=0.2, verbose=0,
                  callbacks=[_Report()])
        return

    total = epochs or DEFAULT_EPOCHS
    if total < 1:
        raise TinyMLError(f"epochs must be at least 1, not {total}")
    keras.utils.set_random_seed(seed)
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(DEFAULT_LEARNING_RATE, total))
    # Labels are trained standardized, so a label in millions or thousandths trains like one
    # near 1, and the scaling is folded into the last Dense afterwards.
    loss_of = _loss_for(model) if task == "classification" else None
    if task == "classification" and loss_of is None:
        raise TinyMLError("a classifier must end in Dense(classes, activation='softmax') or "
                          "Dense(1, activation='sigmoid') for two classes")
    scaler = _label_scaler(model, train_y) if loss_of is None else None
    y_mean, y_std = scaler if scaler is not None else (0.0, 1.0)
    loss_unit = float(np.mean(y_std))
    # Features likewise: a model with no Normalization of its own trains on standardized
    # features, and its first Dense then absorbs the standardization.
    features = _feature_scaler(model, train_x)
    if features is not None:
        seen, _ = features
        train_x = ((np.asarray(train_x, np.float64) - seen.offset) / seen.divisor).astype(np.float32)
    x = tf.constant(train_x)
    y = tf.constant(((np.asarray(train_y, np.float64) - y_mean) / y_std).astype(np.float32))
    variables = model.trainable_variables

    @tf.function
    def run(steps):
        loss = tf.constant(0.0)
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                loss = tf.reduce_mean(tf.abs(out - y)) if loss_of is None else loss_of(y, out)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    done = 0
    chunk = max(1, -(-total // _PROGRESS_CHUNKS))
    while done < total:
        steps = min(chunk, total - done)
        loss = float(run(tf.constant(steps)))
        done += steps
        report(done, total, loss * loss_unit)
    if scaler is not None:
        _unscale_labels(model, y_mean, y_std)
    if features is not None:
        _unscale_features(model, features)


def ignore_constant_features(model, constant) -> None:
    """Zero the first Dense's weights of features that were constant in training (the default
    model standardizes them to 0, so training never moved those weights): a value they never
    had then contributes nothing instead of a random weight's worth."""
    import keras
    constant = np.asarray(constant, dtype=bool)
    if not constant.any():
        return
    dense = next((layer for layer in model.layers if isinstance(layer, keras.layers.Dense)), None)
    if dense is None:
        return
    weights = dense.get_weights()
    weights[0][constant, :] = 0.0
    dense.set_weights(weights)


def _loss_for(model):
    """Cross-entropy for a classifier (a final softmax, or one sigmoid unit), else None (MAE)."""
    import keras
    last = model.layers[-1] if getattr(model, "layers", None) else None
    activation = last.get_config().get("activation") if isinstance(last, keras.layers.Dense) else None
    if activation == "softmax":
        return keras.losses.SparseCategoricalCrossentropy()
    if activation == "sigmoid" and last.units == 1:
        return keras.losses.BinaryCrossentropy()
    return None


def _label_scaler(model, train_y: np.ndarray):
    """``(mean, std)`` per label when the model ends in a linear Dense that can absorb them."""
    import keras
    last = model.layers[-1] if getattr(model, "layers", None) else None
    if (not isinstance(last, keras.layers.Dense) or not last.use_bias
            or last.get_config().get("activation") != "linear"):
        return None
    y = np.asarray(train_y, dtype=np.float64)
    std = y.std(axis=0)
    std = np.where(std > 0, std, np.maximum(np.abs(y).max(axis=0), 1.0))
    mean = y.mean(axis=0)
    # Divided by its spread a label trains like the tutorial's MPG (mean about 3 spreads), whose
    # recipe this is; one far from 0 for its spread (a large offset) is centred as well.
    return np.where(np.abs(mean) > LABEL_CENTRE_BEYOND * std, mean, 0.0), std


def _feature_scaler(model, train_x: np.ndarray):
    """How the fast recipe feeds a model without preprocessing of its own: ``(FirstDense seeing
    standardized features, constant-feature mask)``, or None to train on raw features."""
    from .convert import FirstDense, first_dense, standardization
    found = first_dense(model, np.asarray(train_x).shape[1])
    if found is None or found.preprocessing or not model.layers[found.index].use_bias:
        return None
    mean, std, constant = standardization(train_x)
    return FirstDense(index=found.index, offset=mean, divisor=std, preprocessing=False), constant


def _unscale_features(model, scaler) -> None:
    """Give the first Dense raw features again: it was trained on ``(x - mean) / std``."""
    from .convert import absorbed
    seen, constant = scaler
    dense = model.layers[seen.index]
    kernel, bias = dense.get_weights()
    n = len(constant)
    kernel, bias = absorbed(kernel, bias, seen, np.zeros(n), np.ones(n), constant)
    dense.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])


def _unscale_labels(model, mean: np.ndarray, std: np.ndarray) -> None:
    """Fold the label standardization into the last Dense: it then predicts in label units."""
    last = model.layers[-1]
    weights = [np.asarray(w, dtype=np.float64) for w in last.get_weights()]
    weights[0] = weights[0] * std
    if len(weights) > 1:
        weights[1] = weights[1] * std + mean
    last.set_weights([w.astype(np.float32) for w in weights])


def seed_everything(seed: int) -> None:
    _quiet_tensorflow()
    import keras
    keras.utils.set_random_seed(seed)


def predict(model, x: np.ndarray) -> np.ndarray:
    """Float32 predictions without Keras' per-call progress machinery."""
    return np.asarray(model(x, training=False), dtype=np.float32)


def mae(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - np.asarray(y, np.float64))))
