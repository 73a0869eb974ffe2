"""int8 LOGISTIC, TANH and SOFTMAX in ``quant``: checked bit for bit against tflite-micro.

What the boards run (read in Chirale_TensorFlowLite 2.0.0 @ 46da2f9 and tflite-micro @ 90b983c):

* LOGISTIC and TANH: the reference integer kernels in both (``reference_integer_ops::Logistic``
  / ``Tanh``, gemmlowp fixed point: the input rescaled to Q4.27 by ``frexp(s_in * 2**27)``,
  saturation beyond ``CalculateInputRadius(4, shift)``). Chirale's copies differ from upstream
  only by a debug check on the int16 path. No LUT on the int8 path in either.
* SOFTMAX: upstream (and so the tflite-micro wheel) runs ``reference_ops::Softmax``; Chirale
  (the Nano 33 BLE) registers CMSIS-NN's ``arm_softmax_s8``. They are the same arithmetic
  step for step (exp_on_negative_values with 5 integer bits, sum of ``exp >> 12`` rounded,
  ``one_over_one_plus_x_for_x_in_0_1`` of the normalized sum, output shift ``12 - clz + 23``).
  A one-off run of Chirale's ``arm_softmax_s8.c`` compiled on this host agreed with
  ``quant.SoftmaxLayer`` on 300,225 of 300,225 outputs (2, 3, 10 classes, the input scales
  below); so no wheel/board difference was found for these ops, and the wheel is the oracle.

Converter facts (TF 2.21): sigmoid -> FULLY_CONNECTED(NONE) + LOGISTIC (output 1/256, -128),
tanh -> + TANH (1/128, 0), softmax -> + SOFTMAX (1/256, -128) before DEQUANTIZE.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ipytinyml import quant as Q
from ipytinyml.errors import ConvertError
from ipytinyml.tflite_file import read_tflite

sys.path.insert(0, str(Path(__file__).resolve().parent))
import activation_models as AM  # noqa: E402
from test_quant import _model_t, _pack, _run_micro  # noqa: E402

RANGES = [(-1, 1), (-4, 4), (-8, 8), (-20, 20), (0, 10), (-3, 12), (-0.1, 0.1), (-60, 60)]
SOFTMAX_RANGES = [(-1, 1), (-4, 4), (-10, 10), (-40, 40), (-0.05, 0.05)]


def _op_layer(data: bytes):
    model = read_tflite(data)
    (op,) = model.operators
    tq = Q._per_tensor_quant(model.tensors[op.inputs[0]], "input")
    if op.opcode == "SOFTMAX":
        return Q.SoftmaxLayer.from_input(op.options["beta"], tq)
    return Q.ActivationLayer.from_input(op.opcode, tq)


def _softmax_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    edge = [np.full(n, v) for v in (-128, -1, 0, 127)]  # all equal
    edge += [np.where(np.arange(n) == i, 127, -128) for i in range(n)]  # one max, the rest saturated low
    edge += [np.where(np.arange(n) == i, -128, 127) for i in range(n)]  # one min
    edge += [np.where(np.arange(n) == 0, v, v - 1) for v in (-127, 0, 127)]  # near ties
    near = rng.integers(-120, 120, size=(200, 1)) + rng.integers(-4, 5, size=(200, n))
    return np.concatenate([rng.integers(-128, 128, size=(600, n)), near, np.array(edge)]).clip(-128, 127)


# ---------------------------------------------------------------------------
# converter facts


@pytest.mark.parametrize("name, ops", [
    ("softmax", ["QUANTIZE", "FULLY_CONNECTED", "FULLY_CONNECTED", "SOFTMAX", "DEQUANTIZE"]),
    ("sigmoid_out", ["QUANTIZE", "FULLY_CONNECTED", "FULLY_CONNECTED", "LOGISTIC", "DEQUANTIZE"]),
    ("tanh_hidden", ["QUANTIZE", "FULLY_CONNECTED", "TANH", "FULLY_CONNECTED", "DEQUANTIZE"]),
])
def test_converter_emits_the_activation_ops_with_their_fixed_quantization(name, ops):
    model = read_tflite(AM.tflite(name))
    assert [op.opcode for op in model.operators] == ops
    fixed = {"LOGISTIC": (1 / 256, -128), "TANH": (1 / 128, 0), "SOFTMAX": (1 / 256, -128)}
    for op in model.operators:
        if op.opcode in fixed:
            prev = model.operators[op.index - 1]
            assert prev.opcode == "FULLY_CONNECTED" and prev.fused_activation == "NONE"
            q = model.tensors[op.outputs[0]].quantization
            assert (float(q.scales[0]), int(q.zero_points[0])) == fixed[op.opcode]
    plan = Q.plan_from_model(AM.tflite(name))
    posts = [type(layer.post).__name__ if layer.post else None for layer in plan.layers]
    assert posts == {"softmax": [None, "SoftmaxLayer"], "sigmoid_out": [None, "ActivationLayer"],
                     "tanh_hidden": ["ActivationLayer", None]}[name]


# ---------------------------------------------------------------------------
# each op alone, every int8 input


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
@pytest.mark.parametrize("lo, hi", RANGES)
def test_logistic_and_tanh_every_int8_input_match_tflite_micro(activation, lo, hi):
    data = AM.op_alone(activation, 1, lo, hi)
    layer = _op_layer(data)
    assert layer.op == {"sigmoid": "LOGISTIC", "tanh": "TANH"}[activation]
    x = np.arange(-128, 128).reshape(-1, 1)
    want = _run_micro(data, x).ravel().astype(np.int64)
    assert np.array_equal(layer(x).ravel().astype(np.int64), want)
    assert np.array_equal(layer.table().astype(np.int64), want)
    assert len(np.unique(want)) >= 9  # the op is exercised, not saturated everywhere


@pytest.mark.parametrize("n", [2, 3, 10])
@pytest.mark.parametrize("lo, hi", SOFTMAX_RANGES)
def test_softmax_matches_tflite_micro(n, lo, hi):
    data = AM.op_alone("softmax", n, lo, hi)
    layer = _op_layer(data)
    x = _softmax_rows(n, seed=n)
    want = _run_micro(data, x).astype(np.int64)
    assert np.array_equal(layer(x).astype(np.int64), want)
    if lo == -40:  # a coarse input scale: diff_min cuts in, those classes give exactly -128
        assert layer.diff_min > -255 and (want == -128).any()


def test_fixed_point_helpers_against_floats():
    """Sanity of the gemmlowp helpers themselves (the exact checks are the oracle tests)."""
    a = np.arange(-(1 << 31), 0, 1 << 20, dtype=np.int64)  # Q5.26 down to -32
    e = Q.fixed_exp_on_negative_values(a, 5) / 2**31
    assert np.allclose(e, np.exp(a / 2**26), atol=2e-7)
    x = np.arange(0, 2**31, 1 << 22, dtype=np.int64)
    assert np.allclose(Q.fixed_one_over_one_plus_x(x) / 2**31, 1 / (1 + x / 2**31), atol=1e-8)
    q4 = np.arange(-(1 << 31), 1 << 31, 1 << 22, dtype=np.int64)
    assert np.allclose(Q.fixed_logistic(q4) / 2**31, 1 / (1 + np.exp(-q4 / 2**27)), atol=1e-8)
    assert np.allclose(Q.fixed_tanh(q4) / 2**31, np.tanh(q4 / 2**27), atol=1e-8)


# ---------------------------------------------------------------------------
# real models: the whole plan


@pytest.mark.parametrize("name", list(AM.RECIPES))
@pytest.mark.parametrize("int8_io", [False, True])
def test_real_models_match_tflite_micro(name, int8_io):
    data = AM.tflite(name, int8_io)
    wheel = Q.plan_from_model(data, per_tensor_product="float64")  # the wheel's FC scale product
    boards = Q.plan_from_model(data)
    if int8_io:
        x = AM.test_rows(AM.N_FEATURES)
        want = _run_micro(data, x)
        got, board = Q.evaluate_plan(wheel, x), Q.evaluate_plan(boards, x)
    else:
        x = np.concatenate([AM.data()["x"], AM.data(seed=1)["x"] * 3])
        want = _run_micro(data, x)
        got, board = Q.predict_float(wheel, x), Q.predict_float(boards, x)
    assert np.array_equal(got, want)
    # the boards' float32 FC product: equal here too (it differs on rare accumulators only)
    assert np.array_equal(board, want)
    assert len(np.unique(want)) > 20


def test_a_wrong_parameter_is_caught():
    """Negative control: each op with one parameter bent differs from tflite-micro."""
    x = np.arange(-128, 128).reshape(-1, 1)
    for activation in ("sigmoid", "tanh"):
        data = AM.op_alone(activation, 1, -4, 4)
        layer = _op_layer(data)
        want = _run_micro(data, x).ravel()
        assert (replace(layer, input_multiplier=layer.input_multiplier + (1 << 24)).table() != want).sum() > 0
        assert (replace(layer, input_range_radius=layer.input_range_radius // 4).table() != want).sum() > 0
    data = AM.op_alone("softmax", 3, -4, 4)
    layer = _op_layer(data)
    rows = _softmax_rows(3, seed=3)
    want = _run_micro(data, rows)
    assert (replace(layer, input_multiplier=layer.input_multiplier - (1 << 25))(rows) != want).sum() > 0
    assert (replace(layer, diff_min=-20)(rows) != want).sum() > 0


# ---------------------------------------------------------------------------
# what the plan refuses, in one line


def test_an_activation_that_does_not_follow_a_dense_is_refused():
    with pytest.raises(ConvertError, match=r"operator 0 \(LOGISTIC\) does not follow a FULLY_CONNECTED") as e:
        Q.plan_from_model(AM.op_alone("sigmoid", 1, -4, 4))
    assert "\n" not in str(e.value)


def test_a_hidden_softmax_is_refused():
    import keras
    from ipytinyml.convert import convert

    model = keras.Sequential([keras.Input((AM.N_FEATURES,)), keras.layers.Dense(4, activation="softmax"),
                              keras.layers.Dense(1)])
    data = convert(model, "int8", AM.data()["x"])
    with pytest.raises(ConvertError, match=r"\(FULLY_CONNECTED\) follows operator 2 \(SOFTMAX\); SOFTMAX must be"):
        Q.plan_from_model(data)


def test_an_unusual_activation_output_quantization_is_refused():
    mt = _model_t(AM.tflite("sigmoid_out", True))
    sg = mt.subgraphs[0]
    op = sg.operators[-1]
    sg.tensors[op.outputs[0]].quantization.zeroPoint = np.array([-127], dtype=np.int64)
    with pytest.raises(ConvertError, match=r"operator 2 \(LOGISTIC\) output has scale 0.00390625 and "
                                           r"zero point -127; int8 LOGISTIC needs .* zero point -128"):
        Q.plan_from_model(_pack(mt))
