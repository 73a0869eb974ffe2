"""quant: TFLM's int8 arithmetic in Python, checked bit for bit against tflite-micro.

Oracles: ``tflite_micro.runtime`` (TFLM's reference kernels, what the board
computes) on the session's real converted models, and slow pure-Python
big-integer versions of the gemmlowp formulas. Some models are edited with
LiteRT's schema object API (``ModelT``) to isolate one op, batch the tensors,
insert a RESHAPE or stress the kernel with random weights; tflite-micro then
runs the edited file, so the expected values still come from TFLM itself.
"""
from __future__ import annotations

import contextlib
import math
import os
from fractions import Fraction

import flatbuffers
import numpy as np
import pytest

from ipytinyml import quant as Q
from ipytinyml.errors import ConvertError
from ipytinyml.quant import DenseLayer, ModelPlan, TensorQuant
from ipytinyml.tflite_file import read_tflite

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT8_KEYS = ["int8", "int8_pc", "int8_io", "int8_pc_io", "relu6", "two_hidden"]


# ---------------------------------------------------------------------------
# helpers: tflite-micro and model editing


@contextlib.contextmanager
def _no_stdout():
    """tflite-micro's constructor prints from C++, so silence fd 1 itself."""
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _micro(data: bytes):
    runtime = pytest.importorskip("tflite_micro", reason="tflite-micro (the bit-exact oracle) not installed").runtime
    with _no_stdout():
        return runtime.Interpreter.from_bytes(
            data, intrepreter_config=runtime.InterpreterConfig.kAllocationRecording
        )


def _run_micro(data: bytes, x: np.ndarray) -> np.ndarray:
    """Invoke once per batch row of the model's own input shape; stack the outputs."""
    it = _micro(data)
    details = it.get_input_details(0)
    shape = tuple(int(d) for d in details["shape"])
    rows = np.asarray(x, dtype=details["dtype"]).reshape(-1, *shape)
    outs = []
    for row in rows:
        it.set_input(row, 0)
        it.invoke()
        outs.append(np.array(it.get_output(0)).reshape(-1))
    return np.stack(outs)


def _schema():
    return pytest.importorskip("ai_edge_litert.schema_py_generated")


def _model_t(data: bytes):
    return _schema().ModelT.InitFromPackedBuf(data, 0)


def _pack(model_t) -> bytes:
    builder = flatbuffers.Builder(4096)
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _isolate(model_t, op_indices, batch=None):
    """Keep only some ops of subgraph 0; their first input/last output become the graph I/O.

    With ``batch``, every activation tensor the ops touch gets a leading dimension ``batch``.
    """
    sg = model_t.subgraphs[0]
    ops = [sg.operators[i] for i in op_indices]
    sg.operators = ops
    sg.inputs = np.array([ops[0].inputs[0]], dtype=np.int32)
    sg.outputs = np.array([ops[-1].outputs[0]], dtype=np.int32)
    if batch is not None:
        touched = {int(i) for op in ops for i in list(op.inputs[:1]) + list(op.outputs)}
        for i in touched:
            t = sg.tensors[i]
            t.shape = np.array([batch, *list(t.shape)[1:]], dtype=np.int32)
            if t.shapeSignature is not None:
                t.shapeSignature = np.array([batch, *list(t.shapeSignature)[1:]], dtype=np.int32)
    return model_t


def _op_index(model_t, name: str, nth: int = 0) -> int:
    codes = _schema().BuiltinOperator
    code = getattr(codes, name)
    hits = [k for k, op in enumerate(model_t.subgraphs[0].operators)
            if max(model_t.operatorCodes[op.opcodeIndex].builtinCode,
                   model_t.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == code]
    return hits[nth]


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == np.float32:
        return a.shape == b.shape and np.array_equal(a.view(np.int32), b.astype(np.float32).view(np.int32))
    return a.shape == b.shape and np.array_equal(a, b)


# ---------------------------------------------------------------------------
# slow big-integer references (gemmlowp fixedpoint.h, written out literally)


def _wrap32(v: int) -> int:
    return ((v + 2**31) % 2**32) - 2**31


def _c_div(n: int, d: int) -> int:
    q = abs(n) // abs(d)
    return q if (n >= 0) == (d > 0) else -q


def _ref_mbqm(x: int, m: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    a = _wrap32(x * 2**left)
    if a == INT32_MIN and m == INT32_MIN:
        high = INT32_MAX
    else:
        p = a * m
        high = _c_div(p + (2**30 if p >= 0 else 1 - 2**30), 2**31)
    mask = 2**right - 1
    remainder = high & mask
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if remainder > threshold else 0)


def _ref_mbqm_rational(x: int, m: int, shift: int) -> int:
    """The same map described as arithmetic (no overflow cases): x*M/2**31 rounded half up,
    then divided by 2**right rounded half away from zero."""
    left, right = max(shift, 0), max(-shift, 0)
    high = math.floor(Fraction(x * 2**left * m, 2**31) + Fraction(1, 2))
    q = Fraction(high, 2**right)
    r = math.floor(abs(q) + Fraction(1, 2))
    return r if q >= 0 else -r


def _ref_quantize_multiplier(real: float) -> tuple[int, int]:
    if real == 0:
        return 0, 0
    q, e = math.frexp(real)
    m = math.floor(Fraction(q) * 2**31 + Fraction(1, 2))
    if m == 2**31:
        m, e = 2**30, e + 1
    if e < -31:
        return 0, 0
    return m, e


# ---------------------------------------------------------------------------
# quantize_multiplier


def test_quantize_multiplier_edge_cases():
    qm = Q.quantize_multiplier
    assert qm(0.0) == (0, 0)
    assert qm(1.0) == (2**30, 1)
    assert qm(0.5) == (2**30, 0)
    assert qm(0.25) == (2**30, -1)
    assert qm(2.0**-31) == (2**30, -30)
    assert qm(2.0**-32) == (2**30, -31)  # smallest exponent kept
    assert qm(2.0**-33) == (0, 0)  # e = -32 < -31: flushed
    assert qm(1e-12) == (0, 0)
    assert qm(2.0**-40) == (0, 0)
    # mantissa rounds up to 2**31: folded to 2**30 with the exponent bumped
    assert qm(1 - 2.0**-40) == (2**30, 1)
    assert qm(0.5 * (1 - 2.0**-33)) == (2**30, 0)
    assert qm((2**31 - 0.5) / 2**32) == (2**30, 0)  # exactly half: away from zero -> 2**31
    assert qm((2**31 - 0.5 - 2**-20) / 2**32) == (2**31 - 1, -1)  # just below half
    # a tie in the 31-bit mantissa: half away from zero, not to even
    assert qm((1288490188 + 0.5) / 2**31) == (1288490189, 0)
    assert qm((1288490189 + 0.5) / 2**31) == (1288490190, 0)
    assert qm(3.0) == (3 * 2**29, 2)


def test_quantize_multiplier_matches_rational_reference():
    rng = np.random.default_rng(1)
    reals = np.concatenate([
        np.exp(rng.uniform(np.log(1e-12), np.log(4.0), 3000)),
        rng.uniform(0, 1, 1000),
        (rng.integers(2**30, 2**31, 500) + 0.5) / 2.0 ** rng.integers(20, 40, 500),  # exact ties
    ])
    for r in reals:
        assert Q.quantize_multiplier(float(r)) == _ref_quantize_multiplier(float(r)), r


def test_quantize_multiplier_rejects_non_finite():
    for v in (math.inf, math.nan):
        with pytest.raises(ValueError):
            Q.quantize_multiplier(v)


# ---------------------------------------------------------------------------
# MultiplyByQuantizedMultiplier


def test_mbqm_matches_big_integer_reference():
    rng = np.random.default_rng(2)
    n = 20000
    specials = np.array([INT32_MIN, INT32_MIN + 1, -(2**30), -1, 0, 1, 2**30, INT32_MAX - 1, INT32_MAX])
    xs = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True),
                         rng.integers(-5000, 5000, n), np.repeat(specials, 200)])
    ms = np.concatenate([rng.integers(2**30, 2**31, xs.size - 400),
                         np.full(100, 0), np.full(100, INT32_MAX), np.full(100, INT32_MIN),
                         rng.integers(INT32_MIN, 0, 100)])
    rng.shuffle(ms)
    shifts = rng.integers(-31, 32, xs.size)
    shifts[: xs.size // 2] = rng.integers(-31, 1, xs.size // 2)  # the range real layers use
    ours = Q.multiply_by_quantized_multiplier(xs, ms, shifts)
    assert ours.dtype == np.int64
    for x, m, s, o in zip(xs.tolist(), ms.tolist(), shifts.tolist(), ours.tolist()):
        assert o == _ref_mbqm(x, m, s), (x, m, s)
        assert INT32_MIN <= o <= INT32_MAX


def test_mbqm_is_the_double_rounding_described():
    """Independent description (rationals) where nothing overflows: M >= 0, shift <= 0."""
    rng = np.random.default_rng(3)
    xs = rng.integers(INT32_MIN, INT32_MAX, 5000, endpoint=True)
    ms = rng.integers(0, 2**31, 5000)
    shifts = rng.integers(-31, 1, 5000)
    ours = Q.multiply_by_quantized_multiplier(xs, ms, shifts)
    for x, m, s, o in zip(xs.tolist(), ms.tolist(), shifts.tolist(), ours.tolist()):
        assert o == _ref_mbqm_rational(x, m, s)
    # and it is not single rounding: some inputs differ by one from round(x*M*2**shift/2**31)
    single = [math.floor(Fraction(x * m, 2 ** (31 - s)) + Fraction(1, 2))
              for x, m, s in zip(xs.tolist(), ms.tolist(), shifts.tolist())]
    assert np.any(np.array(single) != ours)


def test_mbqm_negative_values_truncate_like_c():
    # p = -2**30 - 1 is -0.5000000005 * 2**31: C truncation of (p + 1 - 2**30) / 2**31 gives -1;
    # numpy floor division would give -2.
    assert Q.multiply_by_quantized_multiplier(np.array([-(2**30) - 1]), 2**31 - 1, 0)[0] == _ref_mbqm(-(2**30) - 1, 2**31 - 1, 0)
    x = np.arange(-70000, 70000)
    ours = Q.multiply_by_quantized_multiplier(x, 1518500250, -9)
    for xi, o in zip(x[::97].tolist(), ours[::97].tolist()):
        assert o == _ref_mbqm(xi, 1518500250, -9)
    assert np.all(np.diff(ours) >= 0)


def test_mbqm_broadcasts_per_channel():
    x = np.arange(-1000, 1000).reshape(-1, 1) * 12345
    m = np.array([2**30, 1518500250, 2**31 - 1])
    s = np.array([-3, -9, 0])
    out = Q.multiply_by_quantized_multiplier(x, m, s)
    assert out.shape == (2000, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, c], Q.multiply_by_quantized_multiplier(x[:, 0], m[c], s[c]))


# ---------------------------------------------------------------------------
# activation range, QUANTIZE, DEQUANTIZE


def test_activation_range():
    assert Q.activation_range("NONE", 0.1, 3) == (-128, 127)
    assert Q.activation_range(None, 0.1, 3) == (-128, 127)
    assert Q.activation_range("RELU", 0.1, -5) == (-5, 127)
    assert Q.activation_range("RELU6", 0.05, -128) == (-128, -8)  # 6 / 0.05f rounds to 120
    assert Q.activation_range("RELU6", 0.01, -128) == (-128, 127)
    assert Q.activation_range("RELU_N1_TO_1", 1 / 64, 0) == (-64, 64)
    assert Q.activation_range("RELU_N1_TO_1", 1 / 256, 0) == (-128, 127)
    # the bound is quantized in float32: 6 / float32(6/115.5) is exactly 115.5 in float32
    s = float(np.float32(6 / 115.5))
    expected = -128 + int(np.floor(float(np.float32(6) / np.float32(s)) + 0.5))
    assert Q.activation_range("RELU6", s, -128) == (-128, min(127, expected))
    with pytest.raises(ConvertError, match="TANH"):
        Q.activation_range("TANH", 0.1, 0)


def test_quantize_rounding_and_clamping():
    tq = TensorQuant(scale=0.5, zero_point=0)
    x = np.array([0.25, -0.25, 0.75, -0.75, 0.2499999, 0, -0.0, 63.75, 64.0, 1e9, -1e9, np.inf, -np.inf],
                 dtype=np.float32)
    np.testing.assert_array_equal(Q.quantize(x, tq), [1, -1, 2, -2, 0, 0, 0, 127, 127, 127, -128, 127, -128])
    assert Q.quantize(np.float32(1.0), TensorQuant(0.5, -128)) == -126
    with pytest.raises(ValueError):
        Q.quantize(np.array([np.nan]), tq)


def test_dequantize_in_double():
    tq = TensorQuant(scale=float(np.float32(0.1)), zero_point=-3)
    q = np.arange(-128, 128)
    expected = np.array([np.float32(float(np.float32(0.1)) * (v + 3)) for v in q], dtype=np.float32)
    assert _same_bits(Q.dequantize(q, tq), expected)


def _quantize_sweep(scale: float, zero_point: int, test_x: np.ndarray) -> np.ndarray:
    """Floats that probe QUANTIZE's rounding: every tie (k + 1/2)*s and its float32 neighbours,
    the test set, out-of-range and signed zeros."""
    s = np.float32(scale)
    k = np.arange(-300, 300)
    ties = ((k + 0.5 - zero_point) * np.float64(s)).astype(np.float32)
    x = np.concatenate([
        ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
        (k * np.float64(s)).astype(np.float32), test_x.ravel().astype(np.float32),
        np.array([0.0, -0.0, 1e6, -1e6, 1e9, -1e9], dtype=np.float32),
    ])
    # Beyond |x / s| >= 2**31 TFLM's float->int32 cast is undefined behaviour (x86 gives
    # INT32_MIN, Cortex-M saturates, then the zero point wraps); those inputs are not compared.
    return x


def test_quantize_and_dequantize_match_tflm_ops(tflite_models, autompg_split):
    """QUANTIZE and DEQUANTIZE isolated from the float-I/O model, batched, run by tflite-micro."""
    data = tflite_models["int8"].read_bytes()
    plan = Q.plan_from_model(read_tflite(data))
    x = _quantize_sweep(plan.input.scale, plan.input.zero_point, autompg_split[2])

    # the sweep does separate float32 from float64 division
    with np.errstate(over="ignore"):
        t32 = (x / np.float32(plan.input.scale)).astype(np.float64)
    t64 = x.astype(np.float64) / plan.input.scale
    away = lambda t: np.sign(t) * np.floor(np.abs(t) + 0.5)  # noqa: E731
    assert np.any(away(t32) != away(t64))

    mt = _model_t(data)
    q_model = _pack(_isolate(mt, [_op_index(mt, "QUANTIZE")], batch=x.size))
    tflm_q = _run_micro(q_model, x.reshape(-1, 1)).ravel()
    assert _same_bits(Q.quantize(x, plan.input), tflm_q)

    mt = _model_t(data)
    all_q = np.arange(-128, 128, dtype=np.int8)
    d_model = _pack(_isolate(mt, [_op_index(mt, "DEQUANTIZE")], batch=256))
    tflm_d = _run_micro(d_model, all_q.reshape(-1, 1)).ravel()
    assert _same_bits(Q.dequantize(all_q, plan.output), tflm_d)


# ---------------------------------------------------------------------------
# whole models: all 256 int8 inputs and the whole test set, exact


@pytest.mark.parametrize("key", INT8_KEYS)
def test_plan_matches_tflite_micro(tflite_models, autompg_split, key):
    data = tflite_models[key].read_bytes()
    plan = Q.plan_from_model(read_tflite(data))
    all_q = np.arange(-128, 128, dtype=np.int8).reshape(-1, 1)
    test_x = autompg_split[2].astype(np.float32).reshape(-1, 1)

    if plan.float_input:
        # every int8 input, fed as its exact dequantized float (QUANTIZE maps it back to itself)
        x = Q.dequantize(all_q, plan.input)
        assert np.array_equal(Q.quantize(x, plan.input), all_q)
        assert _same_bits(Q.predict_float(plan, x), _run_micro(data, x))
        # the whole test set, and QUANTIZE's rounding boundaries, through the float path
        assert _same_bits(Q.predict_float(plan, test_x), _run_micro(data, test_x))
        sweep = _quantize_sweep(plan.input.scale, plan.input.zero_point, test_x)[:1800:3]
        assert _same_bits(Q.predict_float(plan, sweep), _run_micro(data, sweep))
    else:
        assert _same_bits(Q.evaluate_plan(plan, all_q), _run_micro(data, all_q))
        q_test = Q.quantize(test_x, plan.input)
        tflm = _run_micro(data, q_test)
        assert _same_bits(Q.evaluate_plan(plan, q_test), tflm)
        assert _same_bits(Q.predict_float(plan, test_x), Q.dequantize(tflm, plan.output))


def test_plan_fields(tflite_models):
    m = read_tflite(tflite_models["int8_pc"])
    plan = Q.plan_from_model(m)
    assert isinstance(plan, ModelPlan) and plan.float_input and plan.float_output
    assert (plan.n_inputs, plan.n_outputs) == (1, 1)
    assert [layer.activation for layer in plan.layers] == ["RELU", "NONE"]
    first, last = plan.layers
    fc = m.operators[1]
    np.testing.assert_array_equal(first.weights, m.tensors[fc.inputs[1]].data)
    np.testing.assert_array_equal(first.bias, m.tensors[fc.inputs[2]].data)
    x_q = m.tensors[fc.inputs[0]].quantization
    assert first.input_offset == -int(x_q.zero_points[0]) and plan.input.zero_point == int(x_q.zero_points[0])
    assert plan.input.scale == float(x_q.scales[0])
    assert first.per_channel and not last.per_channel  # a 1-unit layer has one scale
    assert first.output_multiplier.dtype == np.int32 and first.output_shift.dtype == np.int32
    assert first.weights.dtype == np.int8 and first.bias.dtype == np.int32
    assert len(set(first.output_multiplier.tolist())) > 1
    # per-channel multipliers are computed in double (brief 1.3)
    w_q = m.tensors[fc.inputs[1]].quantization
    s_out = float(m.tensors[fc.outputs[0]].quantization.scales[0])
    for c in range(first.n_out):
        real = float(x_q.scales[0]) * float(w_q.scales[c]) / s_out
        assert (int(first.output_multiplier[c]), int(first.output_shift[c])) == Q.quantize_multiplier(real)

    pt = Q.plan_from_model(tflite_models["int8"])  # a path works too
    assert not any(layer.per_channel for layer in pt.layers)
    layer = pt.layers[0]
    assert len(set(layer.output_multiplier.tolist())) == 1
    # per-tensor: s_in * s_w in float32 by default (the boards' TFLM), double on request (the wheel)
    m8 = read_tflite(tflite_models["int8"])
    fc = m8.operators[1]
    s_in = m8.tensors[fc.inputs[0]].quantization.scales[0]
    s_w = m8.tensors[fc.inputs[1]].quantization.scales[0]
    s_o = m8.tensors[fc.outputs[0]].quantization.scales[0]
    real64 = float(s_in) * float(s_w) / float(s_o)
    layer64 = Q.plan_from_model(m8, per_tensor_product="float64").layers[0]
    assert (int(layer64.output_multiplier[0]), int(layer64.output_shift[0])) == Q.quantize_multiplier(real64)
    layer32 = layer
    real32 = float(np.float32(s_in) * np.float32(s_w)) / float(s_o)
    assert (int(layer32.output_multiplier[0]), int(layer32.output_shift[0])) == Q.quantize_multiplier(real32)


def test_float_and_int8_io_variants_share_the_plan(tflite_models):
    a = Q.plan_from_model(tflite_models["int8"])
    b = Q.plan_from_model(tflite_models["int8_io"])
    assert (a.float_input, a.float_output, b.float_input, b.float_output) == (True, True, False, False)
    assert a.input == b.input and a.output == b.output
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(la.weights, lb.weights)
        np.testing.assert_array_equal(la.output_multiplier, lb.output_multiplier)


def test_batched_model(tflite_models):
    """A model whose tensors have batch 256: one TFLM invoke, one evaluate_plan call."""
    mt = _model_t(tflite_models["int8_io"].read_bytes())
    data = _pack(_isolate(mt, range(len(mt.subgraphs[0].operators)), batch=256))
    plan = Q.plan_from_model(read_tflite(data))
    x = np.arange(-128, 128, dtype=np.int8).reshape(256, 1)
    tflm = _run_micro(data, x).reshape(256, 1)
    assert _same_bits(Q.evaluate_plan(plan, x), tflm)


def test_noop_reshape_is_accepted_and_exact(tflite_models):
    schema = _schema()
    mt = _model_t(tflite_models["int8_io"].read_bytes())
    sg = mt.subgraphs[0]
    fc1 = sg.operators[0]
    hidden = int(fc1.outputs[0])
    new = schema.TensorT()
    old = sg.tensors[hidden]
    new.name, new.type, new.buffer, new.quantization = b"pre_reshape", old.type, old.buffer, old.quantization
    new.shape = np.array(old.shape, dtype=np.int32)
    sg.tensors.append(new)
    old.shape = np.array([1, 1, int(old.shape[-1])], dtype=np.int32)
    old.shapeSignature = None
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.RESHAPE
    code.version = 1
    mt.operatorCodes.append(code)
    reshape = schema.OperatorT()
    reshape.opcodeIndex = len(mt.operatorCodes) - 1
    reshape.inputs = np.array([len(sg.tensors) - 1], dtype=np.int32)
    reshape.outputs = np.array([hidden], dtype=np.int32)
    fc1.outputs = np.array([len(sg.tensors) - 1], dtype=np.int32)
    sg.operators.insert(1, reshape)
    data = _pack(mt)

    model = read_tflite(data)
    assert model.op_names == ("FULLY_CONNECTED", "RESHAPE", "FULLY_CONNECTED")
    plan = Q.plan_from_model(model)
    assert len(plan.layers) == 2
    x = np.arange(-128, 128, dtype=np.int8).reshape(-1, 1)
    assert _same_bits(Q.evaluate_plan(plan, x), _run_micro(data, x))

    # the same RESHAPE changing the quantization is not a no-op
    old.quantization = schema.QuantizationParametersT()
    old.quantization.scale = [float(new.quantization.scale[0]) * 2]
    old.quantization.zeroPoint = [int(new.quantization.zeroPoint[0])]
    with pytest.raises(ConvertError, match="RESHAPE"):
        Q.plan_from_model(_pack(mt))


_ACTIVATION_CODES = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("activation", list(_ACTIVATION_CODES))
def test_random_dense_layer_matches_tflite_micro(tflite_models, per_channel, activation):
    """The 32->16 layer of ``two_hidden`` with random weights, bias, scales and zero points:
    wide accumulators, many shifts and every activation clamp, on 512 random input rows."""
    seed = 100 + 10 * per_channel + _ACTIVATION_CODES[activation]
    rng = np.random.default_rng(seed)
    schema = _schema()
    mt = _model_t(tflite_models["two_hidden"].read_bytes())
    k = _op_index(mt, "FULLY_CONNECTED", 1)
    sg = mt.subgraphs[0]
    op = sg.operators[k]
    x_t, w_t, b_t, y_t = (sg.tensors[int(i)] for i in (op.inputs[0], op.inputs[1], op.inputs[2], op.outputs[0]))
    n_out, n_in = (int(d) for d in w_t.shape)

    def qparams(scales, zps):
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint, q.quantizedDimension = [float(s) for s in scales], [int(z) for z in zps], 0
        return q

    # integers first, then scales chosen so the real outputs span about +-R: the clamps of
    # every activation are hit on some rows and not on others
    zp_in, zp_out = int(rng.integers(-128, 128)), int(rng.integers(-30, 31))
    x = rng.integers(-128, 128, (512, n_in)).astype(np.int8)
    x[0], x[1] = -128, 127
    weights = rng.integers(-127, 128, (n_out, n_in)).astype(np.int8)
    bias = rng.integers(-(2**18), 2**18, n_out).astype("<i4")
    acc = (x.astype(np.int64) - zp_in) @ weights.astype(np.int64).T + bias
    span = np.abs(acc).max(axis=0).astype(np.float64)  # per channel
    R = {"NONE": 1.0, "RELU": 1.0, "RELU6": 8.0, "RELU_N1_TO_1": 1.5}[activation]
    s_in = np.float32(np.exp(rng.uniform(np.log(1e-3), np.log(1.0))))
    if per_channel:
        s_w = (R / (float(s_in) * span) * rng.uniform(0.7, 1.3, n_out)).astype(np.float32)
    else:
        s_w = np.array([R / (float(s_in) * span.max())], dtype=np.float32)
    s_out = np.float32(2 * R / 255 * rng.uniform(0.5, 1.0))
    n_scales = s_w.size
    x_t.quantization = qparams([s_in], [zp_in])
    y_t.quantization = qparams([s_out], [zp_out])
    w_t.quantization = qparams(s_w, [0] * n_scales)
    b_scales = (np.float64(s_in) * s_w.astype(np.float64)).astype(np.float32)
    b_t.quantization = qparams(b_scales, [0] * n_scales)
    mt.buffers[w_t.buffer].data = weights.view(np.uint8).ravel()
    mt.buffers[b_t.buffer].data = bias.view(np.uint8).ravel()
    op.builtinOptions.fusedActivationFunction = _ACTIVATION_CODES[activation]
    data = _pack(_isolate(mt, [k]))

    plan = Q.plan_from_model(read_tflite(data))
    (layer,) = plan.layers
    assert layer.per_channel == per_channel and layer.activation == activation
    tflm = _run_micro(data, x)
    ours = Q.evaluate_plan(plan, x)
    assert _same_bits(ours, tflm)
    assert ours.min() >= layer.activation_min and ours.max() <= layer.activation_max
    clamped = np.mean((ours == layer.activation_min) | (ours == layer.activation_max))
    assert 0.0 < clamped < 0.8 and len(np.unique(ours)) > 20  # the test is not all saturation
    np.testing.assert_array_equal(Q.accumulators(layer, x), acc)
    # the clamp thresholds give the same outputs
    acc = Q.accumulators(layer, x)
    lo, hi = Q.requant_thresholds(layer)
    inside = Q.multiply_by_quantized_multiplier(acc, layer.output_multiplier, layer.output_shift) + layer.output_offset
    inside = np.clip(inside, layer.activation_min, layer.activation_max)
    fast = np.where(acc < lo, layer.activation_min, np.where(acc > hi, layer.activation_max, inside))
    np.testing.assert_array_equal(fast, ours)


def _crafted_per_tensor_layer(tflite_models):
    """A per-tensor 1->64 layer whose ``s_in * s_w`` rounds to a different multiplier in float32
    than in double, with biases placed where the two multipliers give different outputs for
    input 0: ``(data, m32, sh32, m64, sh64)``. Weights are all 1 and the input zero point 0,
    so the accumulator of unit ``c`` for input ``x`` is ``bias[c] + x``."""
    rng = np.random.default_rng(11)
    while True:
        s_in = np.float32(rng.uniform(0.01, 1.0))
        s_w = np.float32(rng.uniform(1e-4, 1e-3))
        s_out = np.float32(float(s_in) * float(s_w) * 2.0**19 * rng.uniform(0.5, 1.0))
        m32, sh32 = Q.quantize_multiplier(float(s_in * s_w) / float(s_out))
        m64, sh64 = Q.quantize_multiplier(float(s_in) * float(s_w) / float(s_out))
        if sh32 == sh64 and abs(m32 - m64) > 8:
            break
    # accumulators near output rounding boundaries where the two multipliers disagree
    found = []
    for k in range(-100, 100):
        a0 = round((k + 0.5) * 2.0 ** (31 - sh32) / m32)
        cand = np.arange(a0 - 200, a0 + 200)
        differ = (Q.multiply_by_quantized_multiplier(cand, m32, sh32)
                  != Q.multiply_by_quantized_multiplier(cand, m64, sh64))
        found.extend(cand[differ][:1].tolist())
        if len(found) == 64:
            break
    assert len(found) == 64

    schema = _schema()
    mt = _model_t(tflite_models["int8_io"].read_bytes())
    sg = mt.subgraphs[0]
    op = sg.operators[0]
    x_t, w_t, b_t, y_t = (sg.tensors[int(i)] for i in (op.inputs[0], op.inputs[1], op.inputs[2], op.outputs[0]))
    assert tuple(w_t.shape) == (64, 1)

    def qparams(scale, zp):
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint, q.quantizedDimension = [float(scale)], [int(zp)], 0
        return q

    x_t.quantization, w_t.quantization, y_t.quantization = qparams(s_in, 0), qparams(s_w, 0), qparams(s_out, 0)
    b_t.quantization = qparams(np.float32(float(s_in) * float(s_w)), 0)
    mt.buffers[w_t.buffer].data = np.ones(64, np.int8).view(np.uint8)
    mt.buffers[b_t.buffer].data = np.array(found, dtype="<i4").view(np.uint8)
    op.builtinOptions.fusedActivationFunction = 0
    return _pack(_isolate(mt, [0])), m32, sh32, m64, sh64


def test_per_tensor_multiplier_matches_the_oracle(tflite_models):
    """Per-tensor FC: the tflite-micro wheel takes ``s_in * s_w`` in double (its binary does
    cvtss2sd + mulsd), and ``per_tensor_product="float64"`` reproduces it bit for bit on a
    layer built so that every unit's accumulator for input 0 sits where the float32 and
    double multipliers round differently. So the wheel is a sharp oracle for that variant."""
    data, m32, _, m64, _ = _crafted_per_tensor_layer(tflite_models)
    zero = np.zeros((1, 1), np.int8)
    tflm = _run_micro(data, zero)
    plan64 = Q.plan_from_model(read_tflite(data), per_tensor_product="float64")
    assert int(plan64.layers[0].output_multiplier[0]) == m64
    assert _same_bits(Q.evaluate_plan(plan64, zero), tflm)
    with pytest.raises(ValueError):
        Q.plan_from_model(read_tflite(data), per_tensor_product="float16")


def test_boards_per_tensor_product_differs_from_the_wheel_where_predicted(tflite_models, all_int8_inputs):
    """The boards' TFLM (every compiled build: upstream reference kernels, Chirale_TensorFlowLite
    2.0.0, tflite-micro-arduino-examples; x86-64 and Cortex-M4) takes a per-tensor layer's
    ``s_in * s_w`` in float32 (``GetQuantizedConvolutionMultipler``, kernel_util.cc), and so does
    ``plan_from_model`` by default. On the crafted layer, for all 256 inputs, the default plan
    equals the wheel wherever the float32 and double multipliers requantize the accumulator
    alike, and differs (by exactly 1 LSB) exactly where they do not: the known difference,
    measured against real TFLM builds as 68 of 16,384 outputs (rows of inputs 0 and 1)."""
    data, m32, sh32, m64, sh64 = _crafted_per_tensor_layer(tflite_models)
    plan = Q.plan_from_model(read_tflite(data))  # the default: the boards' arithmetic
    layer = plan.layers[0]
    assert (int(layer.output_multiplier[0]), int(layer.output_shift[0])) == (m32, sh32)
    x = all_int8_inputs
    wheel = _run_micro(data, x).astype(np.int64)  # [256, 64]
    ours = Q.evaluate_plan(plan, x).astype(np.int64)

    # prediction, independent of both runs: requantize every accumulator with both multipliers
    acc = Q.accumulators(layer, x)
    predicted = (np.clip(Q.multiply_by_quantized_multiplier(acc, m32, sh32), -128, 127)
                 != np.clip(Q.multiply_by_quantized_multiplier(acc, m64, sh64), -128, 127))
    differ = ours != wheel
    np.testing.assert_array_equal(differ, predicted)
    assert np.all(np.abs(ours - wheel)[differ] == 1)
    assert int(differ.sum()) == 68 and differ.size == 16384
    assert sorted(set(np.nonzero(differ)[0].tolist())) == [128, 129]  # inputs 0 and 1
    # the wheel itself is reproduced exactly by the double product
    plan64 = Q.plan_from_model(read_tflite(data), per_tensor_product="float64")
    assert np.array_equal(Q.evaluate_plan(plan64, x).astype(np.int64), wheel)


# ---------------------------------------------------------------------------
# plan_from_model rejections


def _fc_indices(mt):
    return [k for k in range(len(mt.subgraphs[0].operators))
            if mt.operatorCodes[mt.subgraphs[0].operators[k].opcodeIndex].builtinCode == 9]


def test_float_model_rejected(tflite_models):
    with pytest.raises(ConvertError, match=r"FULLY_CONNECTED.*float") as e:
        Q.plan_from_model(tflite_models["float32"])
    assert "\n" not in str(e.value) and "int8" in str(e.value)


def test_unsupported_op_named(tflite_models):
    mt = _model_t(tflite_models["int8"].read_bytes())
    k = _op_index(mt, "DEQUANTIZE")
    # (LOGISTIC, the op this test used before it was supported, is now checked in test_activations.py)
    mt.operatorCodes[mt.subgraphs[0].operators[k].opcodeIndex].builtinCode = 117  # HARD_SWISH
    mt.operatorCodes[mt.subgraphs[0].operators[k].opcodeIndex].deprecatedBuiltinCode = 117
    with pytest.raises(ConvertError, match=r"operator 3 \(HARD_SWISH\) is not supported.*FULLY_CONNECTED"):
        Q.plan_from_model(_pack(mt))


def test_multiple_subgraphs_rejected(tflite_models):
    mt = _model_t(tflite_models["int8"].read_bytes())
    mt.subgraphs.append(mt.subgraphs[0])
    with pytest.raises(ConvertError, match="2 subgraphs"):
        Q.plan_from_model(_pack(mt))


def test_two_inputs_rejected(tflite_models):
    mt = _model_t(tflite_models["int8_io"].read_bytes())
    sg = mt.subgraphs[0]
    sg.inputs = np.array([sg.inputs[0], sg.operators[1].inputs[0]], dtype=np.int32)
    with pytest.raises(ConvertError, match="2 inputs"):
        Q.plan_from_model(_pack(mt))


def test_weight_zero_point_rejected(tflite_models):
    mt = _model_t(tflite_models["int8_io"].read_bytes())
    sg = mt.subgraphs[0]
    w = sg.tensors[int(sg.operators[0].inputs[1])]
    w.quantization.zeroPoint = np.array([3], dtype=np.int64)
    with pytest.raises(ConvertError, match="zero point"):
        Q.plan_from_model(_pack(mt))


def test_per_channel_on_wrong_dimension_rejected(tflite_models):
    mt = _model_t(tflite_models["int8_pc_io"].read_bytes())
    sg = mt.subgraphs[0]
    w = sg.tensors[int(sg.operators[0].inputs[1])]
    w.quantization.quantizedDimension = 1
    with pytest.raises(ConvertError, match="dimension 1"):
        Q.plan_from_model(_pack(mt))


def test_float_weights_rejected(tflite_models):
    mt = _model_t(tflite_models["int8_io"].read_bytes())
    sg = mt.subgraphs[0]
    w = sg.tensors[int(sg.operators[1].inputs[1])]
    w.type = 0  # FLOAT32
    mt.buffers[w.buffer].data = np.zeros(int(np.prod(w.shape)), np.float32).view(np.uint8)
    with pytest.raises(ConvertError, match=r"weights .* float32"):
        Q.plan_from_model(_pack(mt))


def test_unsupported_activation_rejected(tflite_models):
    mt = _model_t(tflite_models["int8_io"].read_bytes())
    mt.subgraphs[0].operators[0].builtinOptions.fusedActivationFunction = 4  # TANH
    with pytest.raises(ConvertError, match="TANH"):
        Q.plan_from_model(_pack(mt))


def test_mismatched_bias_scale_rejected_like_tflm(tflite_models):
    mt = _model_t(tflite_models["int8_io"].read_bytes())
    sg = mt.subgraphs[0]
    b = sg.tensors[int(sg.operators[1].inputs[2])]
    b.quantization.scale = np.array([float(b.quantization.scale[0]) * 1e4], dtype=np.float32)
    data = _pack(mt)
    with pytest.raises(ConvertError, match="bias scale"):
        Q.plan_from_model(data)


# ---------------------------------------------------------------------------
# requant thresholds


def _layer(m, shift, offset, amin=-128, amax=127, n_in=1):
    m = np.atleast_1d(np.asarray(m, dtype=np.int32))
    shift = np.broadcast_to(np.asarray(shift, dtype=np.int32), m.shape).copy()
    return DenseLayer(
        weights=np.ones((m.size, n_in), np.int8), bias=np.zeros(m.size, np.int32),
        input_offset=0, output_offset=offset, output_multiplier=m, output_shift=shift,
        activation_min=amin, activation_max=amax, activation="NONE", per_channel=m.size > 1,
    )


def _check_thresholds(layer: DenseLayer, window: int = 3000) -> None:
    lo, hi = Q.requant_thresholds(layer)
    assert lo.dtype == np.int64 and hi.dtype == np.int64
    rng = np.random.default_rng(5)
    for c in range(layer.n_out):
        m, s = int(layer.output_multiplier[c]), int(layer.output_shift[c])
        amin, amax, off = layer.activation_min, layer.activation_max, layer.output_offset

        def g(acc):
            return Q.multiply_by_quantized_multiplier(acc, m, s) + off

        probes = [np.arange(max(INT32_MIN, b - window), min(INT32_MAX, b + window) + 1)
                  for b in (int(lo[c]), int(hi[c]), 0, INT32_MIN, INT32_MAX)]
        probes.append(rng.integers(INT32_MIN, INT32_MAX, 20000, endpoint=True))
        acc = np.concatenate(probes)
        exact = np.clip(_wrap_np(g(acc)), amin, amax)
        fast = np.where(acc < lo[c], amin, np.where(acc > hi[c], amax, exact))
        np.testing.assert_array_equal(fast, exact)
        if s <= 0 and m >= 0 and (lo[c], hi[c]) != (INT32_MIN, INT32_MAX):
            # exact channel: no clamp needed between the thresholds
            middle = (acc >= lo[c]) & (acc <= hi[c])
            assert np.all((g(acc[middle]) > amin) & (g(acc[middle]) < amax))
            # tight: the bounds are the first/last values where requantizing matters
            if INT32_MIN < lo[c] <= INT32_MAX:
                assert g(int(lo[c])) > amin >= g(int(lo[c]) - 1)
            if INT32_MIN <= hi[c] < INT32_MAX:
                assert g(int(hi[c])) < amax <= g(int(hi[c]) + 1)


def _wrap_np(v):
    v = np.asarray(v, np.int64)
    return ((v + 2**31) % 2**32) - 2**31


@pytest.mark.parametrize("key", INT8_KEYS)
def test_requant_thresholds_on_fixture_layers(tflite_models, key):
    for layer in Q.plan_from_model(tflite_models[key]).layers:
        _check_thresholds(layer, window=500)


def test_requant_thresholds_synthetic():
    rng = np.random.default_rng(6)
    cases = [
        _layer(rng.integers(2**30, 2**31, 8), rng.integers(-31, 1, 8), -128),
        _layer(rng.integers(2**30, 2**31, 8), rng.integers(-12, 1, 8), 17, amin=-20, amax=40),  # RELU6-like
        _layer([2**31 - 1, 2**30, 1518500250], [0, 0, -1], 127),  # multiplier ~1: offset could overflow
        _layer([2**31 - 1], [0], -128),
        _layer([0], [0], 5),  # constant 5
        _layer([0], [0], -128, amin=-128, amax=127),  # constant at the bound
        _layer([0], [0], 127, amin=127, amax=127),
        _layer([2**30, 2**30], [1, 4], 0),  # shift > 0: acc * 2**shift may wrap -> never skip
        _layer([2**30], [-31], 0),
    ]
    for layer in cases:
        _check_thresholds(layer)
    lo, hi = Q.requant_thresholds(cases[4])
    assert (int(lo[0]), int(hi[0])) == (INT32_MIN, INT32_MAX)
    lo, hi = Q.requant_thresholds(cases[5])
    assert int(lo[0]) == 2**31  # nothing ever exceeds the minimum
    lo, hi = Q.requant_thresholds(cases[7])
    assert (lo == INT32_MIN).all() and (hi == INT32_MAX).all()


def test_requant_monotone_for_nonnegative_multiplier():
    """The property the thresholds rest on: MBQM is non-decreasing in acc for M >= 0, shift <= 0."""
    rng = np.random.default_rng(8)
    acc = np.sort(np.concatenate([rng.integers(INT32_MIN, INT32_MAX, 20000, endpoint=True),
                                  np.arange(-3000, 3000), [INT32_MIN, INT32_MAX]]))
    for m, s in zip(rng.integers(0, 2**31, 40), rng.integers(-31, 1, 40)):
        assert np.all(np.diff(Q.multiply_by_quantized_multiplier(acc, m, s)) >= 0)


# ---------------------------------------------------------------------------
# input handling


def test_evaluate_plan_input_shapes(tflite_models):
    plan = Q.plan_from_model(tflite_models["int8_io"])
    x = np.arange(-128, 128, dtype=np.int8)
    a = Q.evaluate_plan(plan, x)
    assert a.shape == (256, 1) and a.dtype == np.int8
    np.testing.assert_array_equal(a, Q.evaluate_plan(plan, x.reshape(-1, 1)))
    with pytest.raises(ValueError):
        Q.evaluate_plan(plan, np.array([200]))
    with pytest.raises(ValueError):
        Q.evaluate_plan(plan, np.array([0.5]))
    y = Q.predict_float(plan, [90.0, 130.0])
    assert y.shape == (2, 1) and y.dtype == np.float32
