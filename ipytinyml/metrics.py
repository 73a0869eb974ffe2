"""Test-set metrics of a model's predictions, for regression and classification alike.

Regression: ``mae`` and ``mae_per_output`` (one per label). Classification:
``accuracy`` and the ``confusion`` matrix (rows: true class, columns: predicted), from
class probabilities (softmax, one column per class) or one sigmoid column (binary).
"""
from __future__ import annotations

import numpy as np


def predicted_classes(outputs) -> np.ndarray:
    """Class indices from softmax scores ``[n, k]`` (argmax) or one sigmoid column (> 0.5)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0.5).astype(np.int64)
    return np.argmax(outputs, axis=1).astype(np.int64)


def top_class(scores) -> tuple[int, float]:
    """``(class index, its probability)`` of one row of softmax scores or one sigmoid output."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.size == 1:
        p = float(scores[0])
        return (1, p) if p > 0.5 else (0, 1.0 - p)
    k = int(np.argmax(scores))
    return k, float(scores[k])


def class_probabilities(scores) -> np.ndarray:
    """Each class's probability, rows of softmax scores as they are, one sigmoid output p as
    (1 - p, p); for one row or many (the last axis holds the scores)."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores if scores.shape[-1] > 1 else np.concatenate([1.0 - scores, scores], axis=-1)


def metrics(task: str, outputs, y, n_classes: int | None = None) -> dict:
    """The report entry's metrics for ``outputs`` against labels ``y`` ([n, labels])."""
    y = np.asarray(y, dtype=np.float64)
    if task == "classification":
        truth = y.reshape(-1).astype(np.int64)
        guess = predicted_classes(outputs)
        k = n_classes or int(max(truth.max(), guess.max()) + 1)
        confusion = np.zeros((k, k), dtype=np.int64)
        np.add.at(confusion, (truth, guess), 1)
        return {"accuracy": float(np.mean(truth == guess)), "confusion": confusion.tolist()}
    errors = np.abs(np.asarray(outputs, dtype=np.float64).reshape(y.shape) - y)
    return {"mae": float(np.mean(errors)),
            "mae_per_output": [float(v) for v in errors.reshape(len(errors), -1).mean(axis=0)]}


def score(entry: dict) -> tuple[str, float]:
    """``("accuracy", a)`` or ``("mae", m)``: the headline number of a report entry."""
    if "accuracy" in entry:
        return "accuracy", float(entry["accuracy"])
    return "mae", float(entry["mae"])
