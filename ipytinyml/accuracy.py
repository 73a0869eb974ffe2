"""The int8 accuracy gate: is the int8 model about as good as float32 on the user's data?

Parity only proves the board computes what the notebook computes. This checks
what they compute: an int8 test error more than 5 % above float32's (or more
than half an int8 output step, where that is larger: the step is the floor of
what int8 can do) is flagged with one line naming the likely cause.
"""
from __future__ import annotations

import numpy as np

RELATIVE_TOLERANCE = 0.05
CLAMPED_SHARE = 0.01  # more test inputs than this outside the int8 input range: a likely cause
SMALL_WEIGHTS_SHARE = 0.5  # more int8 weights than this in -1..1: an outlier set the layer's scale


def tolerance(float_mae: float, output_scale: float) -> tuple[float, str]:
    """How far int8 may trail float32, and which bound that is."""
    relative = RELATIVE_TOLERANCE * float_mae
    step = 0.5 * float(output_scale)
    if step > relative:
        return step, "half an int8 output step"
    return relative, f"{RELATIVE_TOLERANCE:.0%} of float32"


def likely_cause(*, features, stage, standardized: bool, plan, test_x) -> str:
    """One phrase for why int8 trails float32, from what can be seen without retraining."""
    if not standardized and len(features) > 1:
        return ("the model's raw features share one int8 input scale (ipytinyml standardizes the "
                "input when the model starts with a Dense, optionally after a Normalization, "
                "Rescaling or BatchNormalization)")
    clamped = stage.clamped(test_x)
    if clamped.mean() > CLAMPED_SHARE:
        worst = int(np.argmax(clamped.mean(axis=0)))
        return (f"input range: {clamped.mean():.0%} of test values fall outside what the int8 input "
                f"holds (most in {features[worst]!r}); the test data reaches beyond the training range")
    if plan is not None:
        for i, layer in enumerate(plan.layers):
            small = float(np.mean(np.abs(layer.weights.astype(np.int16)) <= 1))
            if small > SMALL_WEIGHTS_SHARE:
                return (f"a weight outlier: {small:.0%} of layer {i + 1}'s int8 weights are -1, 0 or 1 "
                        "because a few large weights set its scale; try weight decay or per-channel weights")
        if len(plan.layers) > 1:
            return ("an activation: a hidden layer's int8 range is too coarse for the values it carries; "
                    "try relu6 or fewer units")
    return "the output: its int8 step is coarse for the error float32 reaches"


def gate(float_mae: float, int8_mae: float, output_scale: float, cause=None) -> dict:
    """``{"ok", "limit", "basis", "message"}`` for report.json; ``cause`` is called when it fails."""
    limit, basis = tolerance(float_mae, output_scale)
    ok = bool(int8_mae - float_mae <= limit)
    message = None
    if not ok:
        reason = cause() if cause else "unknown"
        message = (f"int8 test MAE {int8_mae:.4g} trails float32's {float_mae:.4g} by more than "
                   f"{basis} ({limit:.3g}); likely cause: {reason}")
    return {"ok": ok, "limit": float(limit), "basis": basis, "message": message}


CLASS_TOLERANCE = 0.04  # accuracy a classifier may lose in int8 (DESIGN.md's minimum; at least one row)


def class_gate(float_accuracy: float, int8_accuracy: float, n_test: int, cause=None) -> dict:
    """The gate for a classifier: int8 accuracy within 0.04 (or one test row) of float32."""
    limit = max(CLASS_TOLERANCE, 1.0 / max(1, n_test))
    basis = "one test row" if limit > CLASS_TOLERANCE else f"{CLASS_TOLERANCE:.2f} accuracy"
    ok = bool(float_accuracy - int8_accuracy <= limit + 1e-12)
    message = None
    if not ok:
        reason = cause() if cause else ("rows whose top class probabilities are close flip on int8's "
                                        "1/256 output step")
        message = (f"int8 test accuracy {int8_accuracy:.3f} trails float32's {float_accuracy:.3f} by more "
                   f"than {basis}; likely cause: {reason}")
    return {"ok": ok, "limit": float(limit), "basis": basis, "message": message}
