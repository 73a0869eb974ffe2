"""TFLM's int8 arithmetic, reimplemented exactly in Python (brief section 1).

This module is the contract between the model reader and the C generator:
``plan_from_model`` turns a parsed int8 ``.tflite`` into a ``ModelPlan`` whose
integer tables are exactly what TFLM's Prepare step computes, and
``evaluate_plan`` runs it bit-exactly as TFLM's reference kernels do. The C
generator emits the same tables, and its output is checked against both this
module and tflite-micro.

What "exactly" means here (each rule is tested against tflite-micro):

* ``quantize_multiplier``: ``frexp``, mantissa rounded half away from zero to
  31 bits, ``M == 2**31`` folds to ``2**30`` with ``shift + 1``, exponents below
  -31 give ``(0, 0)`` (``QuantizeMultiplier`` in ``quantization_util.cc``).
* ``multiply_by_quantized_multiplier``: TFLM's default double rounding
  (``TFLITE_SINGLE_ROUNDING`` is not defined): gemmlowp's
  ``SaturatingRoundingDoublingHighMul`` then ``RoundingDivideByPOT``, with C's
  truncating 64-bit division. numpy's ``//`` floors, so it is never used on
  values that can be negative.
* FULLY_CONNECTED: int32 accumulation that wraps like the C kernel, bias added,
  requantized, output zero point added, clamped to the fused activation range.
  The effective scale is ``s_in * s_w[c] / s_out`` in double for per-channel
  layers; per-tensor layers take ``s_in * s_w`` in float32 first, as every
  compiled TFLM does (boards and host builds alike; the tflite-micro wheel
  differs, see ``plan_from_model(per_tensor_product=...)``).
* QUANTIZE: float32 division, round half away from zero, clamp to int8.
  DEQUANTIZE: computed in double, then rounded to float32.
* LOGISTIC, TANH (int8): ``reference_integer_ops::Logistic``/``Tanh``, the
  input rescaled to Q4.27 with ``frexp(s_in * 2**27)`` and gemmlowp's
  fixed-point ``logistic``/``tanh``; SOFTMAX (int8): ``reference_ops::Softmax``
  (upstream) = CMSIS-NN ``arm_softmax_s8`` (Chirale_TensorFlowLite, the Nano 33
  BLE), gemmlowp's ``exp_on_negative_values`` and ``one_over_one_plus_x``.
  They follow a FULLY_CONNECTED as its ``post`` op (``ActivationLayer``,
  ``SoftmaxLayer``); checked against tflite-micro in tests/test_activations.py.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .errors import ConvertError
from .prestage import InputStage

if TYPE_CHECKING:  # pragma: no cover
    from .tflite_file import Tensor, TFLiteModel

__all__ = [
    "TensorQuant",
    "DenseLayer",
    "ActivationLayer",
    "SoftmaxLayer",
    "POST_OPS",
    "ModelPlan",
    "INT32_MIN",
    "INT32_MAX",
    "SUPPORTED_ACTIVATIONS",
    "quantize_multiplier",
    "multiply_by_quantized_multiplier",
    "activation_range",
    "quantize",
    "dequantize",
    "accumulators",
    "fully_connected",
    "evaluate_plan",
    "predict_float",
    "plan_from_model",
    "requant_thresholds",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT8_MIN = -128
INT8_MAX = 127
SUPPORTED_ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")

_SUPPORTED = (
    "ipytinyml runs chains of Dense layers: [QUANTIZE] (FULLY_CONNECTED [LOGISTIC|TANH])+ [SOFTMAX] "
    "[DEQUANTIZE] with int8 activations, int8 weights, int32 bias and a fused "
    "NONE/RELU/RELU6/RELU_N1_TO_1 activation"
)


@dataclass(frozen=True)
class TensorQuant:
    """Affine int8 quantization of one tensor: real = scale * (q - zero_point)."""

    scale: float  # exactly the float32 value stored in the model
    zero_point: int


@dataclass(frozen=True)
class DenseLayer:
    """One FULLY_CONNECTED op after TFLM's Prepare: integers only.

    Field names follow TFLM (``input_offset`` is the negated input zero point,
    ``output_offset`` the output zero point, ``output_shift`` > 0 shifts left).
    """

    weights: np.ndarray  # int8 [out, in], zero point 0
    bias: np.ndarray  # int32 [out]; zeros when the op has no bias
    input_offset: int
    output_offset: int
    output_multiplier: np.ndarray  # int32 [out]; all equal when per-tensor
    output_shift: np.ndarray  # int32 [out]
    activation_min: int
    activation_max: int
    activation: str  # "NONE" | "RELU" | "RELU6" | "RELU_N1_TO_1"
    per_channel: bool
    # The LOGISTIC, TANH or SOFTMAX op that follows this FULLY_CONNECTED in the
    # model (its input is this layer's output tensor), or None.
    post: "ActivationLayer | SoftmaxLayer | None" = None

    @property
    def result_zero_point(self) -> int:
        """Zero point of what the layer hands on: its own output, or its post op's."""
        return int(self.post.output.zero_point if self.post is not None else self.output_offset)

    @property
    def n_in(self) -> int:
        return int(self.weights.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weights.shape[0])


@dataclass(frozen=True)
class ModelPlan:
    """A chain of Dense layers (each with its optional LOGISTIC/TANH/SOFTMAX ``post`` op)
    with the quantization of its two ends."""

    layers: tuple[DenseLayer, ...]
    input: TensorQuant  # the int8 tensor fed to the first layer
    output: TensorQuant  # the int8 tensor produced by the last layer
    float_input: bool  # the model starts with QUANTIZE (float32 input)
    float_output: bool  # the model ends with DEQUANTIZE (float32 output)
    stage: InputStage | None = None  # typed values -> int8 input; None: plain QUANTIZE

    @property
    def input_stage(self) -> InputStage:
        """The pre-stage a board applies to typed values (see ``prestage``)."""
        if self.stage is not None:
            return self.stage
        return InputStage.identity(self.input.scale, self.input.zero_point, self.n_inputs)

    @property
    def n_inputs(self) -> int:
        return self.layers[0].n_in

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_out


# --------------------------------------------------------------------------
# scalar helpers


def _wrap32(a) -> np.ndarray:
    """Reduce int64 values modulo 2**32 into int32 range (two's complement wrap)."""
    a = np.asarray(a, dtype=np.int64)
    low = a & 0xFFFFFFFF
    return np.where(low >= 2**31, low - 2**32, low)


def _round_half_away(v: float) -> int:
    """``std::round`` of an exactly representable value (no double rounding)."""
    r = math.floor(abs(v) + 0.5)
    return int(-r if v < 0 else r)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLM ``QuantizeMultiplier``: ``real ~= M * 2**(shift - 31)``.

    Returns ``(M, shift)`` with ``M`` an int32 in ``[2**30, 2**31)`` (or 0) and
    ``shift`` the base-2 exponent (negative means shift right). The rounding of
    the 31-bit mantissa is exact (integer arithmetic on the double's value),
    half away from zero like ``std::round``.
    """
    real = float(real)
    if not math.isfinite(real):
        raise ValueError(f"quantize_multiplier needs a finite value, got {real}")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)  # real = q * 2**shift, 0.5 <= |q| < 1
    num, den = abs(q).as_integer_ratio()  # exact; den is a power of two
    m = (num * 2**32 + den) // (2 * den)  # floor(|q| * 2**31 + 1/2)
    if q < 0:
        m = -m
    if m == 2**31:  # the mantissa rounded up to 1.0
        m //= 2
        shift += 1
    if shift < -31:  # too small to represent: TFLM flushes to zero
        return 0, 0
    return int(m), int(shift)


def multiply_by_quantized_multiplier(acc, multiplier, shift) -> np.ndarray:
    """TFLM's ``MultiplyByQuantizedMultiplier`` (default double rounding), vectorized.

    ``acc`` holds int32 values (any integer array; values are wrapped to int32
    as the C argument conversion would), ``multiplier`` an int32 ``M`` and
    ``shift`` an exponent in ``[-31, 31]``; all three broadcast against each
    other. Returns int64 values in int32 range.

    Steps (gemmlowp ``fixedpoint.h``): ``a = acc * 2**max(shift, 0)`` in int32
    (wrapping, as compiled C does), ``h = SaturatingRoundingDoublingHighMul(a,
    M)`` = ``(a*M + (a*M >= 0 ? 2**30 : 1 - 2**30)) / 2**31`` with C's
    truncating division, then ``RoundingDivideByPOT(h, max(-shift, 0))``.
    """
    x = _wrap32(acc)
    m = np.asarray(multiplier, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    if np.any(m < INT32_MIN) or np.any(m > INT32_MAX):
        raise ValueError("multiplier must be an int32")
    if np.any(s < -31) or np.any(s > 31):
        raise ValueError("shift must be in [-31, 31]")
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    a = _wrap32((x.astype(np.uint64) << left.astype(np.uint64)).astype(np.int64))
    # SaturatingRoundingDoublingHighMul
    p = a * m  # |p| <= 2**62: exact in int64
    v = p + np.where(p >= 0, 1 << 30, 1 - (1 << 30))
    h = np.where(v >= 0, v >> 31, -((-v) >> 31))  # C division truncates toward 0
    h = np.where((a == INT32_MIN) & (m == INT32_MIN), INT32_MAX, h)
    # RoundingDivideByPOT
    mask = (np.int64(1) << right) - 1
    remainder = h & mask
    threshold = (mask >> 1) + (h < 0)
    return (h >> right) + (remainder > threshold)


def _quantize_constant(f: float, scale: float, zero_point: int, what: str) -> int:
    """TFLM kernel_util ``Quantize``: ``zp + (int32)roundf(f / scale)`` in float32."""
    with np.errstate(all="ignore"):
        t = float(np.float32(f) / np.float32(scale))
    if not math.isfinite(t) or not (-(2.0**31) <= t < 2.0**31):
        raise ConvertError(
            f"{what}: the activation bound {f} does not fit int32 at output scale {scale}",
            hint="the output tensor's scale is degenerate; retrain or re-convert the model",
        )
    return int(zero_point) + _round_half_away(t)


def activation_range(activation: str | None, scale: float, zero_point: int) -> tuple[int, int]:
    """``CalculateActivationRangeQuantized`` for an int8 output: ``(act_min, act_max)``.

    NONE (or None) gives [-128, 127]; RELU raises the minimum to the quantized 0;
    RELU6 and RELU_N1_TO_1 also lower the maximum to the quantized 6 / 1. The
    bounds are quantized with float32 division and round half away from zero.
    """
    act = "NONE" if activation is None else str(activation)
    what = f"{act} activation"
    if act == "NONE":
        return INT8_MIN, INT8_MAX
    if act == "RELU":
        return max(INT8_MIN, _quantize_constant(0.0, scale, zero_point, what)), INT8_MAX
    if act == "RELU6":
        lo = _quantize_constant(0.0, scale, zero_point, what)
        hi = _quantize_constant(6.0, scale, zero_point, what)
        return max(INT8_MIN, lo), min(INT8_MAX, hi)
    if act == "RELU_N1_TO_1":
        lo = _quantize_constant(-1.0, scale, zero_point, what)
        hi = _quantize_constant(1.0, scale, zero_point, what)
        return max(INT8_MIN, lo), min(INT8_MAX, hi)
    raise ConvertError(
        f"fused activation {act} is not supported",
        hint=f"use one of {', '.join(SUPPORTED_ACTIVATIONS)} (or a separate op ipytinyml doesn't run)",
    )


# --------------------------------------------------------------------------
# QUANTIZE / DEQUANTIZE / FULLY_CONNECTED


def quantize(x, q: TensorQuant) -> np.ndarray:
    """TFLM QUANTIZE float32 -> int8: ``clamp(round(x / scale) + zp, -128, 127)``.

    ``x`` is converted to float32 first (what writing it into a float32 input
    tensor does); the division is float32, the rounding half away from zero.
    Exact for ``|x / scale| < 2**31``. Beyond that TFLM's float -> int32 cast
    is undefined behaviour (the x86 host build gives INT32_MIN and the zero
    point then wraps, so -1e30 quantizes to +127 there; Cortex-M saturates);
    here such values saturate to -128 / 127. NaN raises ``ValueError``.
    """
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(all="ignore"):
        t = (x / np.float32(q.scale)).astype(np.float64)  # float32 quotient, exact in float64
    if np.isnan(t).any():
        raise ValueError("cannot quantize NaN")
    r = np.floor(np.abs(t) + 0.5)  # exact for float32 values
    r = np.where(t < 0, -r, r) + int(q.zero_point)
    return np.clip(r, INT8_MIN, INT8_MAX).astype(np.int8)


def dequantize(q_values, q: TensorQuant) -> np.ndarray:
    """TFLM DEQUANTIZE int8 -> float32: ``(float)((double)scale * (q - zp))``."""
    v = np.asarray(q_values, dtype=np.int64) - int(q.zero_point)
    return (float(q.scale) * v.astype(np.float64)).astype(np.float32)


def _as_int8_rows(x, n_in: int) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise ValueError(f"int8 inputs expected, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < INT8_MIN or a.max() > INT8_MAX):
        raise ValueError("int8 inputs must lie in [-128, 127]")
    if a.size % n_in:
        raise ValueError(f"{a.size} values cannot be split into rows of {n_in} inputs")
    return a.reshape(-1, n_in)


def _requantize(layer: DenseLayer, acc: np.ndarray) -> np.ndarray:
    """int32 accumulators [batch, out] -> int8 outputs, as the TFLM kernel does."""
    y = multiply_by_quantized_multiplier(acc, layer.output_multiplier, layer.output_shift)
    y = _wrap32(y + int(layer.output_offset))
    return np.clip(y, layer.activation_min, layer.activation_max).astype(np.int8)


def accumulators(layer: DenseLayer, x_int8) -> np.ndarray:
    """The int32 accumulators (bias included) of a layer: int64 [batch, out] in int32 range."""
    x = _as_int8_rows(x_int8, layer.n_in)
    acc = (x + int(layer.input_offset)) @ layer.weights.astype(np.int64).T
    return _wrap32(acc + layer.bias.astype(np.int64))  # int32 arithmetic wraps: reduce once


def fully_connected(layer: DenseLayer, x_int8) -> np.ndarray:
    """TFLM int8 FULLY_CONNECTED (per-tensor or per-channel): int8 [batch, out].

    ``x_int8`` is reshaped to ``[-1, layer.n_in]`` like TFLM's FlatSize /
    accum_depth batching.
    """
    return _requantize(layer, accumulators(layer, x_int8))


def evaluate_plan(plan: ModelPlan, x_int8) -> np.ndarray:
    """Run the int8 chain: int8 [batch, n_inputs] -> int8 [batch, n_outputs]."""
    y = _as_int8_rows(x_int8, plan.n_inputs).astype(np.int8)
    for layer in plan.layers:
        y = apply_post(layer.post, fully_connected(layer, y))
    return y


def predict_float(plan: ModelPlan, x_float32) -> np.ndarray:
    """Input pre-stage -> layers -> DEQUANTIZE: float32 [batch, n_outputs], what a board answers.

    Without a pre-stage this is QUANTIZE -> layers -> DEQUANTIZE, bit-identical to the
    float-I/O model on TFLM.
    """
    return dequantize(evaluate_plan(plan, plan.input_stage.quantize(x_float32)), plan.output)


# --------------------------------------------------------------------------
# gemmlowp fixed point (LOGISTIC, TANH, SOFTMAX)
#
# TFLM's int8 LOGISTIC, TANH and SOFTMAX kernels compute in gemmlowp's int32
# fixed point (third_party/gemmlowp/fixedpoint/fixedpoint.h; the copy in
# Chirale_TensorFlowLite 2.0.0 and the one upstream tflite-micro builds with are
# the same arithmetic). Every helper below takes and returns int64 arrays
# holding int32 values; raw additions wrap like the compiled C does.

_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))  # exp(-2^k) in Q0.31


def _srdhm(a, b) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    p = a * b  # |p| <= 2**62
    v = p + np.where(p >= 0, 1 << 30, 1 - (1 << 30))
    h = np.where(v >= 0, v >> 31, -((-v) >> 31))  # C division truncates toward 0
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, h)


def _rdbpot(x, exponent: int) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: arithmetic shift, ties away from zero."""
    x = np.asarray(x, dtype=np.int64)
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def _sat_shl(x, exponent: int) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingMultiplyByPOT<exponent>`` for exponent > 0."""
    x = np.asarray(x, dtype=np.int64)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def _exp_quarter(a) -> np.ndarray:
    """``exp_on_interval_between_negative_one_quarter_and_0_excl``: Q0.31 -> Q0.31."""
    c = 1895147668  # exp(-1/8)
    x = _wrap32(np.asarray(a, dtype=np.int64) + (1 << 28))
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = _rdbpot(x4, 2)
    poly = _rdbpot(_wrap32(_srdhm(_wrap32(x4_over_4 + x3), 715827883) + x2), 1)
    return _wrap32(c + _srdhm(c, _wrap32(x + poly)))


def fixed_exp_on_negative_values(a, integer_bits: int) -> np.ndarray:
    """gemmlowp ``exp_on_negative_values``: a Q(integer_bits) value <= 0 -> exp(a) in Q0.31.

    Only ``integer_bits`` <= 5 (what TFLM uses: 4, 5); beyond that gemmlowp adds a clamp.
    """
    if not 0 <= integer_bits <= 5:
        raise ValueError("integer_bits must be 0..5")
    a = np.asarray(a, dtype=np.int64)
    frac = 31 - integer_bits
    quarter = 1 << (frac - 2)
    a_mod = (a & (quarter - 1)) - quarter
    result = _exp_quarter(_sat_shl(a_mod, integer_bits) if integer_bits else a_mod)
    remainder = _wrap32(a_mod - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = (remainder >> (frac + exponent)) & 1
            result = np.where(bit != 0, _srdhm(result, multiplier), result)
    return np.where(a == 0, INT32_MAX, result)


def _newton_reciprocal(a) -> np.ndarray:
    """The Newton-Raphson part shared by ``one_over_one_plus_x_for_x_in_0_1`` and
    ``one_minus_x_over_one_plus_x_for_x_in_0_1``: about 1 / (1 + a) in Q2.29."""
    a = np.asarray(a, dtype=np.int64)
    s = a + INT32_MAX
    half_denominator = np.where(s >= 0, (s + 1) // 2, -((-(s - 1)) // 2))  # (s + sign) / 2, truncating
    x = _wrap32(1515870810 + _srdhm(half_denominator, -1010580540))  # 48/17 - 32/17 * d in Q2.29
    for _ in range(3):
        t = _wrap32((1 << 29) - _srdhm(half_denominator, x))
        x = _wrap32(x + _sat_shl(_srdhm(x, t), 2))
    return x


def fixed_one_over_one_plus_x(a) -> np.ndarray:
    """gemmlowp ``one_over_one_plus_x_for_x_in_0_1``: Q0.31 -> Q0.31."""
    return _sat_shl(_newton_reciprocal(a), 1)


def fixed_logistic(a, integer_bits: int = 4) -> np.ndarray:
    """gemmlowp ``logistic``: Q(integer_bits) -> Q0.31."""
    a = np.asarray(a, dtype=np.int64)
    positive = a > 0
    minus_abs = _wrap32(np.where(positive, -a, a))
    if_positive = fixed_one_over_one_plus_x(fixed_exp_on_negative_values(minus_abs, integer_bits))
    if_negative = _wrap32(INT32_MAX - if_positive)
    return np.where(a == 0, 1 << 30, np.where(positive, if_positive, if_negative))


def fixed_tanh(a, integer_bits: int = 4) -> np.ndarray:
    """gemmlowp ``tanh``: Q(integer_bits) -> Q0.31 (exp runs on Q(integer_bits + 1))."""
    a = np.asarray(a, dtype=np.int64)
    negative = a < 0
    n = _wrap32(np.where(negative, a, -a))
    e = fixed_exp_on_negative_values(n, integer_bits + 1)  # ExactMulByPot<1>: same raw value
    t = _sat_shl(_wrap32(_newton_reciprocal(e) - (1 << 29)), 2)
    return np.where(a == 0, 0, np.where(negative, _wrap32(-t), t))


def count_leading_zeros32(x) -> np.ndarray:
    """``CountLeadingZeros`` of uint32 values (32 for 0)."""
    x = np.asarray(x, dtype=np.int64) & 0xFFFFFFFF
    n = np.full(x.shape, 32, dtype=np.int64)
    for bits in range(32):
        n = np.where((x >> bits) != 0, 31 - bits, n)
    return n


# --------------------------------------------------------------------------
# LOGISTIC / TANH / SOFTMAX after a FULLY_CONNECTED

LOGISTIC_OUTPUT = TensorQuant(scale=1.0 / 256, zero_point=-128)  # fixed by TFLite for int8
TANH_OUTPUT = TensorQuant(scale=1.0 / 128, zero_point=0)
SOFTMAX_OUTPUT = TensorQuant(scale=1.0 / 256, zero_point=-128)
POST_OPS = ("LOGISTIC", "TANH", "SOFTMAX")


def calculate_input_radius(input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31) -> int:
    """TFLM ``CalculateInputRadius`` (double arithmetic, exact at these magnitudes, then floor)."""
    num = ((1 << input_integer_bits) - 1) << (total_signed_bits - input_integer_bits)
    if input_left_shift >= 0:
        return num >> input_left_shift
    return num << -input_left_shift


@dataclass(frozen=True)
class ActivationLayer:
    """An int8 LOGISTIC or TANH op after TFLM's Prepare (``logistic_common.cc``, ``tanh.cc``).

    ``input_multiplier``/``input_left_shift`` rescale ``x - input_zero_point`` to Q4.27:
    ``frexp(s_in * 2**27)``, the mantissa rounded to 31 bits (``TfLiteRound``, no
    fold of 2**31). Inputs at or beyond ``input_range_radius`` saturate. The output
    quantization is fixed (``output``): the kernel never reads it.
    """

    op: str  # "LOGISTIC" | "TANH"
    input_zero_point: int
    input_multiplier: int
    input_left_shift: int
    input_range_radius: int
    output: TensorQuant

    @classmethod
    def from_input(cls, op: str, tq_in: TensorQuant, where: str = "") -> "ActivationLayer":
        if op not in ("LOGISTIC", "TANH"):
            raise ValueError(f"op must be LOGISTIC or TANH, not {op!r}")
        real = float(np.float32(tq_in.scale)) * float(1 << 27)
        q, shift = math.frexp(real)
        num, den = q.as_integer_ratio()
        m = (num * 2**32 + den) // (2 * den)  # TfLiteRound(q * 2**31), q > 0
        if m >= 2**31 or not -31 <= shift <= 31:
            raise _fail(f"{where}the {op} input scale {tq_in.scale:g} is out of the range TFLM handles",
                        hint="re-convert the model with a representative dataset")
        radius = calculate_input_radius(4, shift, 31)
        out = LOGISTIC_OUTPUT if op == "LOGISTIC" else TANH_OUTPUT
        return cls(op=op, input_zero_point=int(tq_in.zero_point), input_multiplier=int(m),
                   input_left_shift=int(shift), input_range_radius=int(radius), output=out)

    def __call__(self, x_int8) -> np.ndarray:
        """The op on int8 values (any shape): int8, as TFLM's reference kernel."""
        x = np.asarray(x_int8, dtype=np.int64)
        d = x - int(self.input_zero_point)
        inside = (d > -self.input_range_radius) & (d < self.input_range_radius)
        q4 = multiply_by_quantized_multiplier(np.where(inside, d, 0), self.input_multiplier,
                                              self.input_left_shift)
        if self.op == "LOGISTIC":
            y = _rdbpot(fixed_logistic(q4, 4), 23) - 128
        else:
            y = _rdbpot(fixed_tanh(q4, 4), 24)
        y = np.clip(y, INT8_MIN, INT8_MAX)
        y = np.where(d <= -self.input_range_radius, INT8_MIN, np.where(d >= self.input_range_radius, INT8_MAX, y))
        return y.astype(np.int8)

    def table(self) -> np.ndarray:
        """The op for every int8 input: int8 [256], entry ``x + 128``."""
        return self(np.arange(-128, 128))


@dataclass(frozen=True)
class SoftmaxLayer:
    """An int8 SOFTMAX op over the last dimension after TFLM's Prepare (``softmax_common.cc``).

    ``input_multiplier``/``input_left_shift`` come from ``PreprocessSoftmaxScaling(beta,
    s_in, 5)`` (``min(beta * s_in * 2**26, 2**31 - 1)`` in double, then
    ``QuantizeMultiplierGreaterThanOne``); ``diff_min = -CalculateInputRadius(5, shift)``.
    Output: scale 1/256, zero point -128 (Prepare requires it).
    """

    beta: float
    input_multiplier: int
    input_left_shift: int
    diff_min: int
    output: TensorQuant = SOFTMAX_OUTPUT

    @classmethod
    def from_input(cls, beta: float, tq_in: TensorQuant, where: str = "") -> "SoftmaxLayer":
        real = min(float(np.float32(beta)) * float(np.float32(tq_in.scale)) * float(1 << 26), 2.0**31 - 1.0)
        if not (math.isfinite(real) and real > 0):
            raise _fail(f"{where}SOFTMAX has beta {beta:g}; it must be positive",
                        hint="use a plain softmax activation")
        m, shift = quantize_multiplier(real)
        if shift < 0 or m <= 0:  # TFLM's QuantizeMultiplierGreaterThanOne checks shift >= 0
            raise _fail(f"{where}SOFTMAX input scale {tq_in.scale:g} x beta {beta:g} is below what TFLM accepts",
                        hint="re-convert the model with a representative dataset")
        return cls(beta=float(beta), input_multiplier=int(m), input_left_shift=int(shift),
                   diff_min=-calculate_input_radius(5, shift, 31))

    def exp_of_diff(self, diff) -> np.ndarray:
        """exp(beta * s_in * diff) in Q0.31 for int32 diffs <= 0 (as the kernel computes it)."""
        d = np.asarray(diff, dtype=np.int64)
        scaled = _srdhm(_wrap32(d << self.input_left_shift), self.input_multiplier)
        return fixed_exp_on_negative_values(scaled, 5)

    def __call__(self, x_int8) -> np.ndarray:
        """Softmax of each row (last dimension) of int8 values: int8, as TFLM computes it."""
        x = np.asarray(x_int8, dtype=np.int64)
        diff = x - x.max(axis=-1, keepdims=True)
        used = diff >= self.diff_min
        e = self.exp_of_diff(np.where(used, diff, 0))
        total = _wrap32(np.where(used, _rdbpot(e, 12), 0).sum(axis=-1, keepdims=True))
        headroom = count_leading_zeros32(total)
        shifted = _wrap32(((total & 0xFFFFFFFF) << headroom) - (1 << 31))
        scale = fixed_one_over_one_plus_x(shifted)
        exponent = (12 - headroom) + 31 - 8
        if np.any(exponent < 0) or np.any(exponent > 31):  # TFLITE_CHECK in the kernel
            raise ValueError("softmax row too long for TFLM's int8 kernel")
        out = np.empty(np.broadcast(e, exponent).shape, dtype=np.int64)
        prod = _srdhm(scale, e)
        for k in np.unique(exponent):
            sel = np.broadcast_to(exponent == k, prod.shape)
            out[sel] = _rdbpot(prod[sel], int(k))
        y = np.clip(out - 128, INT8_MIN, INT8_MAX)
        return np.where(used, y, INT8_MIN).astype(np.int8)


def apply_post(post, y_int8) -> np.ndarray:
    """Run a Dense layer's following op (``DenseLayer.post``) on its int8 outputs."""
    return y_int8 if post is None else post(y_int8)


# --------------------------------------------------------------------------
# clamp thresholds for the C kernel


def requant_thresholds(layer: DenseLayer) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel, the accumulator range where requantizing matters.

    For channel ``c`` let ``g(acc) = MBQM(acc, M_c, shift_c) + output_offset``.
    Returns int64 arrays ``(lo, hi)``:

    * ``lo[c]`` is the smallest int32 ``acc`` with ``g(acc) > activation_min``
      (``2**31`` if there is none),
    * ``hi[c]`` is the largest int32 ``acc`` with ``g(acc) < activation_max``
      (``-2**31 - 1`` if there is none).

    So a kernel can write ``acc < lo ? act_min : acc > hi ? act_max :
    clamp(g(acc))`` and skip the 32x32 multiply for every clamped output. For
    an exact channel (below) the value inside ``[lo, hi]`` is strictly between
    the bounds, so the clamp there never fires; keep it anyway, it is what makes
    the conservative channels exact. When ``act_min < act_max``, ``lo <= hi +
    1``; when they are equal every input gives that value. ``lo``/``hi`` may be
    one past the int32 range (``2**31``, ``-2**31 - 1``): compare in int64, or
    treat those as "always".

    Exactness rests on monotonicity: for ``M >= 0`` and ``shift <= 0``, ``g`` is
    non-decreasing over all of int32 (the high multiply is ``acc*M / 2**31``
    rounded half up, ``acc*M`` is non-decreasing in ``acc``, and the rounding
    shift is non-decreasing too), so the thresholds are found by bisection. For
    a channel with ``shift > 0`` (``acc * 2**shift`` can wrap in int32),
    ``M < 0``, or where adding the output zero point could overflow int32,
    ``g`` is not monotone over int32; there the thresholds are the
    conservative ``(INT32_MIN, INT32_MAX)`` (never skip), which stays exact.
    """
    m = np.asarray(layer.output_multiplier, dtype=np.int64)
    s = np.asarray(layer.output_shift, dtype=np.int64)
    off = int(layer.output_offset)
    amin, amax = int(layer.activation_min), int(layer.activation_max)

    def g(acc: np.ndarray) -> np.ndarray:
        return multiply_by_quantized_multiplier(acc, m, s) + off  # int64, no wrap

    lo_end = np.full(m.shape, INT32_MIN, dtype=np.int64)
    hi_end = np.full(m.shape, INT32_MAX, dtype=np.int64)
    g_min, g_max = g(lo_end), g(hi_end)
    exact = (s <= 0) & (m >= 0) & (g_min >= INT32_MIN) & (g_max <= INT32_MAX)

    # lo: first acc with g > amin.  Bisection keeps g(a) <= amin < g(b).
    a, b = lo_end.copy(), hi_end.copy()
    for _ in range(33):
        mid = (a + b) >> 1
        above = g(mid) > amin
        b = np.where(above, mid, b)
        a = np.where(above, a, mid)
    lo = np.where(g_min > amin, INT32_MIN, np.where(g_max <= amin, INT32_MAX + 1, b))

    # hi: last acc with g < amax.  Bisection keeps g(a) < amax <= g(b).
    a, b = lo_end.copy(), hi_end.copy()
    for _ in range(33):
        mid = (a + b) >> 1
        below = g(mid) < amax
        a = np.where(below, mid, a)
        b = np.where(below, b, mid)
    hi = np.where(g_max < amax, INT32_MAX, np.where(g_min >= amax, INT32_MIN - 1, a))

    lo = np.where(exact, lo, INT32_MIN).astype(np.int64)
    hi = np.where(exact, hi, INT32_MAX).astype(np.int64)
    return lo, hi


# --------------------------------------------------------------------------
# .tflite -> ModelPlan


def _fail(message: str, hint: str = _SUPPORTED) -> ConvertError:
    return ConvertError(message, hint=hint)


def _tensor_label(t: Tensor) -> str:
    return f"tensor {t.index} '{t.name}'"


def _per_tensor_quant(t: Tensor, where: str) -> TensorQuant:
    """The single (scale, zero point) of an int8 activation tensor."""
    if t.dtype != "int8":
        raise _fail(
            f"{where}: {_tensor_label(t)} is {t.dtype}, not int8",
            hint="convert a full-integer model (representative dataset, TFLITE_BUILTINS_INT8)",
        )
    if t.quantization is None:
        raise _fail(f"{where}: {_tensor_label(t)} has no quantization parameters",
                    hint="convert a full-integer model (representative dataset, TFLITE_BUILTINS_INT8)")
    if t.quantization.scales.size != 1:
        raise _fail(f"{where}: {_tensor_label(t)} is quantized per channel "
                    f"({t.quantization.scales.size} scales); activations must be per-tensor")
    scale = float(t.quantization.scales[0])
    zp = int(t.quantization.zero_points[0])
    if not (math.isfinite(scale) and scale > 0):
        raise _fail(f"{where}: {_tensor_label(t)} has scale {scale}, which must be positive",
                    hint="re-convert the model with a representative dataset")
    if not INT8_MIN <= zp <= INT8_MAX:
        raise _fail(f"{where}: {_tensor_label(t)} has zero point {zp}, outside int8",
                    hint="re-convert the model with a representative dataset")
    return TensorQuant(scale=scale, zero_point=zp)


def _elements(shape: tuple[int, ...]) -> int | None:
    if any(d < 0 for d in shape):
        return None  # dynamic dimension
    return math.prod(shape)


def _dense_layer(model: TFLiteModel, op, x: Tensor, per_tensor_product: str) -> DenseLayer:
    where = f"operator {op.index} (FULLY_CONNECTED)"
    if len(op.inputs) < 2 or op.inputs[1] < 0 or len(op.outputs) != 1:
        raise _fail(f"{where} does not have an input, a weights tensor and one output",
                    hint="re-convert the model; the file looks malformed")
    tq_in = _per_tensor_quant(x, f"{where} input")
    w = model.tensors[op.inputs[1]]
    y = model.tensors[op.outputs[0]]
    tq_out = _per_tensor_quant(y, f"{where} output")

    if w.dtype != "int8":
        raise _fail(f"{where}: weights {_tensor_label(w)} are {w.dtype}, not int8",
                    hint="convert with optimizations=[DEFAULT], a representative dataset and "
                         "TFLITE_BUILTINS_INT8 so weights are int8")
    if w.data is None:
        raise _fail(f"{where}: weights {_tensor_label(w)} are not constant",
                    hint="ipytinyml needs weights stored in the model")
    if w.data.ndim != 2:
        raise _fail(f"{where}: weights {_tensor_label(w)} have shape {w.shape}, expected [out, in]")
    n_out, n_in = (int(d) for d in w.data.shape)
    wq = w.quantization
    if wq is None:
        raise _fail(f"{where}: weights {_tensor_label(w)} have no quantization parameters")
    if np.any(wq.zero_points != 0):
        raise _fail(f"{where}: weights {_tensor_label(w)} have a non-zero zero point",
                    hint="TFLM requires symmetric int8 weights; re-convert with the TFLite converter")
    scales = wq.scales.astype(np.float32)
    if not np.all(np.isfinite(scales) & (scales > 0)):
        raise _fail(f"{where}: weights {_tensor_label(w)} have a non-positive scale",
                    hint="re-convert the model")
    per_channel = scales.size > 1  # TFLM: is_per_channel = scale->size > 1
    if per_channel and (wq.quantized_dimension != 0 or scales.size != n_out):
        raise _fail(f"{where}: weights {_tensor_label(w)} have {scales.size} scales on dimension "
                    f"{wq.quantized_dimension}; per-channel weights need one scale per output unit (dimension 0)")

    options = op.options or {}
    if options.get("weights_format", "DEFAULT") != "DEFAULT":
        raise _fail(f"{where} uses weights format {options['weights_format']}",
                    hint="re-convert without shuffled weights")
    act = op.fused_activation or "NONE"
    if act not in SUPPORTED_ACTIVATIONS:
        raise _fail(f"{where} has fused activation {act}")

    bias_q_scale = None
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        b = model.tensors[op.inputs[2]]
        if b.dtype != "int32" or b.data is None:
            raise _fail(f"{where}: bias {_tensor_label(b)} is {'non-constant ' if b.data is None else ''}"
                        f"{b.dtype}; int8 models need a constant int32 bias")
        if b.data.size != n_out:
            raise _fail(f"{where}: bias {_tensor_label(b)} has {b.data.size} values for {n_out} outputs",
                        hint="re-convert the model; the file looks malformed")
        bias = b.data.reshape(n_out).astype(np.int32)
        bias_q_scale = float(b.quantization.scales[0]) if b.quantization is not None else 0.0
    else:
        bias = np.zeros(n_out, dtype=np.int32)

    # Effective scales, exactly as TFLM's Prepare (fully_connected_common.cc).
    if per_channel:
        reals = [float(tq_in.scale) * float(sc) / float(tq_out.scale) for sc in scales]
    else:
        if per_tensor_product == "float32":  # every compiled TFLM: (double)(float s_in * float s_w)
            product = float(np.float32(tq_in.scale) * np.float32(scales[0]))
        else:  # the tflite-micro wheel's binary: (double)s_in * (double)s_w
            product = float(tq_in.scale) * float(scales[0])
        if bias_q_scale is not None:
            # GetQuantizedConvolutionMultipler: Prepare fails past this tolerance.
            diff = abs(float(tq_in.scale) * float(scales[0]) - bias_q_scale)
            if diff / float(tq_out.scale) > 0.02:
                raise _fail(f"{where}: bias scale {bias_q_scale:g} does not match input scale x weight "
                            "scale; TFLM's Prepare rejects this layer",
                            hint="re-convert the model with the TFLite converter")
        reals = [product / float(tq_out.scale)] * n_out
    ms, shifts = zip(*(quantize_multiplier(r) for r in reals))
    if max(shifts) > 30:
        raise _fail(f"{where}: effective scale {max(reals):g} is too large (>= 2**30)",
                    hint="the layer's quantization is degenerate; retrain or re-convert")
    amin, amax = activation_range(act, tq_out.scale, tq_out.zero_point)

    weights = np.array(w.data, dtype=np.int8)
    bias = np.array(bias, dtype=np.int32)
    mult = np.array(ms, dtype=np.int32)
    shift = np.array(shifts, dtype=np.int32)
    for arr in (weights, bias, mult, shift):
        arr.setflags(write=False)
    return DenseLayer(
        weights=weights,
        bias=bias,
        input_offset=-tq_in.zero_point,
        output_offset=tq_out.zero_point,
        output_multiplier=mult,
        output_shift=shift,
        activation_min=amin,
        activation_max=amax,
        activation=act,
        per_channel=per_channel,
    )


def plan_from_model(model, *, per_tensor_product: str = "float32") -> ModelPlan:
    """Turn an int8 ``.tflite`` (a :class:`TFLiteModel`, a path or bytes) into a ``ModelPlan``.

    Accepts ``[QUANTIZE] (FULLY_CONNECTED [LOGISTIC|TANH])+ [SOFTMAX]
    [DEQUANTIZE]`` on one subgraph with one input and one output: int8
    activations (per-tensor), int8 weights (per-tensor, or per-channel on
    dimension 0) with zero point 0, an int32 bias or none, fused
    NONE/RELU/RELU6/RELU_N1_TO_1. A LOGISTIC, TANH or SOFTMAX op must take a
    FULLY_CONNECTED output (what Keras' sigmoid, tanh and softmax activations
    convert to) and becomes that layer's ``post``; SOFTMAX only as the last op. A RESHAPE between int8
    tensors with identical quantization and element count is accepted as the
    no-op it is. Anything else raises :class:`ConvertError` naming the op or
    tensor.

    ``per_tensor_product`` picks how a per-tensor layer's ``s_in * s_w`` is
    formed before dividing by ``s_out`` in double (per-channel layers are always
    all double: ``(double)s_in * (double)s_w[c] / (double)s_out`` in
    ``CalculateOpDataFullyConnected``). TFLM's per-tensor path
    (``GetQuantizedConvolutionMultipler`` in ``kernel_util.cc``, the overload
    without bias) computes ``static_cast<double>(input_scale * filter_scale)``:
    a float32 product, widened, then divided in double. Every compiled TFLM we
    measured does exactly that: upstream reference kernels,
    Chirale_TensorFlowLite 2.0.0 and tflite-micro-arduino-examples, on x86-64
    and on a Cortex-M4. So the default ``"float32"`` is the boards' arithmetic.
    The tflite-micro Python wheel (0.dev20261023, x86-64) takes the product in
    double instead (``cvtss2sd``/``mulsd`` in its ``_runtime.so``); the two
    multipliers differ in their low bits, so an output can differ by one LSB
    for accumulators near a rounding boundary (recorded in
    ``tests/test_quant.py::test_boards_per_tensor_product_differs_from_the_wheel_where_predicted``).
    ``"float64"`` reproduces the wheel.
    """
    if per_tensor_product not in ("float64", "float32"):
        raise ValueError('per_tensor_product must be "float64" or "float32"')
    from .tflite_file import TFLiteModel, read_tflite

    if not isinstance(model, TFLiteModel):
        if isinstance(model, (str, os.PathLike, bytes, bytearray, memoryview)):
            model = read_tflite(model)
        else:
            raise TypeError(f"plan_from_model expects a TFLiteModel, a path or bytes, not {type(model).__name__}")

    if model.n_subgraphs != 1:
        raise _fail(f"the model has {model.n_subgraphs} subgraphs (control flow); only one is supported")
    if model.version != 3:
        raise _fail(f"the model has schema version {model.version}; TFLM requires version 3",
                    hint="re-convert with a current TFLite converter")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise _fail(f"the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                    "exactly one of each is supported",
                    hint="build the Keras model with one Input and one output")
    ops = list(model.operators)
    if not ops:
        raise _fail("the model has no operators")

    T = model.tensors
    cur = model.inputs[0]
    float_input = float_output = False
    k = 0
    if ops[0].opcode == "QUANTIZE":
        op = ops[0]
        src = T[op.inputs[0]] if op.inputs else None
        if src is None or op.inputs[0] != cur or src.dtype != "float32" or len(op.outputs) != 1:
            raise _fail("operator 0 (QUANTIZE) must turn the float32 model input into int8")
        cur = op.outputs[0]
        float_input = True
        k = 1
    if not float_input and T[cur].dtype == "float32":
        raise _fail(
            f"operator 0 ({ops[0].opcode}) computes in float32: this is a float model",
            hint="convert a full-integer int8 model (representative dataset, TFLITE_BUILTINS_INT8)",
        )
    input_q = _per_tensor_quant(T[cur], "the model input" if not float_input else "operator 0 (QUANTIZE) output")

    layers: list[DenseLayer] = []
    batch: int | None = None
    output_q = None
    after_dense = False  # the current tensor is a FULLY_CONNECTED output (RESHAPEs aside)
    softmax_at = None  # name of the SOFTMAX op once seen: only DEQUANTIZE may follow
    for op in ops[k:]:
        name = f"operator {op.index} ({op.opcode})"
        if output_q is not None:
            raise _fail(f"{name} follows the final DEQUANTIZE")
        if softmax_at is not None and op.opcode not in ("DEQUANTIZE", "RESHAPE"):
            raise _fail(f"{name} follows {softmax_at}; SOFTMAX must be the model's last op "
                        "(before DEQUANTIZE)")
        if not op.inputs or op.inputs[0] != cur:
            raise _fail(f"{name} does not consume the previous op's output; only a straight chain is supported")
        x = T[cur]
        if op.opcode == "FULLY_CONNECTED":
            layer = _dense_layer(model, op, x, per_tensor_product)
            n = _elements(x.shape)
            if n is not None:
                if n % layer.n_in:
                    raise _fail(f"{name}: input {_tensor_label(x)} of shape {x.shape} does not split into "
                                f"rows of {layer.n_in}")
                if batch is None:
                    batch = n // layer.n_in
                elif n // layer.n_in != batch:
                    raise _fail(f"{name}: the batch size changes from {batch} to {n // layer.n_in} in the chain")
            if layers and layers[-1].n_out != layer.n_in:
                raise _fail(f"{name} takes {layer.n_in} inputs but the previous layer gives {layers[-1].n_out}")
            layers.append(layer)
            cur = op.outputs[0]
            after_dense = True
        elif op.opcode in POST_OPS:
            if not after_dense:
                raise _fail(f"{name} does not follow a FULLY_CONNECTED layer; LOGISTIC, TANH and "
                            "SOFTMAX are supported only as a Dense layer's activation")
            if len(op.outputs) != 1:
                raise _fail(f"{name} must have one output")
            y = T[op.outputs[0]]
            qx, qy = _per_tensor_quant(x, f"{name} input"), _per_tensor_quant(y, f"{name} output")
            fixed = {"LOGISTIC": LOGISTIC_OUTPUT, "TANH": TANH_OUTPUT, "SOFTMAX": SOFTMAX_OUTPUT}[op.opcode]
            if qy != fixed:
                raise _fail(f"{name} output has scale {qy.scale:g} and zero point {qy.zero_point}; "
                            f"int8 {op.opcode} needs scale {fixed.scale:g} and zero point {fixed.zero_point}",
                            hint="re-convert the model with the TFLite converter")
            if _elements(x.shape) != _elements(y.shape) or (x.shape and x.shape[-1] != layers[-1].n_out):
                raise _fail(f"{name} input shape {x.shape} is not the previous Dense layer's "
                            f"{layers[-1].n_out} outputs")
            where = f"{name}: "
            if op.opcode == "SOFTMAX":
                post = SoftmaxLayer.from_input(float((op.options or {}).get("beta", 0.0)), qx, where)
                softmax_at = name
            else:
                post = ActivationLayer.from_input(op.opcode, qx, where)
            layers[-1] = replace(layers[-1], post=post)
            cur = op.outputs[0]
            after_dense = False
        elif op.opcode == "RESHAPE":
            if len(op.outputs) != 1:
                raise _fail(f"{name} must have one output")
            y = T[op.outputs[0]]
            qx, qy = _per_tensor_quant(x, f"{name} input"), _per_tensor_quant(y, f"{name} output")
            nx, ny = _elements(x.shape), _elements(y.shape)
            if qx != qy or nx is None or nx != ny:
                raise _fail(f"{name} is not a no-op here ({x.shape} -> {y.shape}, quantization "
                            f"{qx} -> {qy}); only shape-only reshapes are supported")
            cur = op.outputs[0]
        elif op.opcode == "DEQUANTIZE":
            if len(op.outputs) != 1 or T[op.outputs[0]].dtype != "float32":
                raise _fail(f"{name} must turn the int8 result into float32")
            output_q = _per_tensor_quant(x, f"{name} input")
            float_output = True
            cur = op.outputs[0]
        elif op.opcode == "QUANTIZE":
            raise _fail(f"{name} requantizes inside the model, which is not supported")
        else:
            raise _fail(f"{name} is not supported")

    if not layers:
        raise _fail("the model has no FULLY_CONNECTED layer")
    if cur != model.outputs[0]:
        raise _fail(f"the chain ends at tensor {cur}, but the model output is tensor {model.outputs[0]}",
                    hint="only a straight chain of ops is supported")
    if output_q is None:
        output_q = _per_tensor_quant(T[cur], "the model output")
    return ModelPlan(
        layers=tuple(layers),
        input=input_q,
        output=output_q,
        float_input=float_input,
        float_output=float_output,
    )
