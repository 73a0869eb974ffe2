"""ModelPlan -> the native runtime's C sources (any Arduino, the Uno included).

``generate_native`` writes ``tinyml_model.h`` (the firmware seam described in
docs/internals.md), ``tinyml_model.cpp`` (the model's integer tables and one
function per layer) and ``tinyml_kernels.h`` (the fixed kernels) into a folder.
The C reproduces TFLM's reference int8 FULLY_CONNECTED bit for bit.

Every layer has two implementations, chosen at compile time by
``TINYML_FAST_KERNELS`` (see firmware_templates/native/tinyml_kernels.h.j2):

- the reference kernel: TFLM's loop nest and double-rounding
  MultiplyByQuantizedMultiplier with int64_t, always available, the default
  off AVR;
- a fast kernel, the default on AVR, chosen per layer here, where all the
  float work and all the proofs happen, on exact Python integers:

  * the input offset moves into the bias, so every product is int8 x uint8
    (AVR ``mulsu``) and a row sums into the narrowest of int16/int24/int32
    that its weights allow (``acc_type``); a fast layer that feeds another
    one stores ``y - activation_min``, so the next layer multiplies the stored
    byte directly and skips inactive ReLU units;
  * the output is a monotone function of the accumulator, so two thresholds
    per channel decide the clamped outputs (an inactive ReLU unit costs two
    comparisons);
  * between them, the requantization is either
    ``affine16``: ``y0 + floor((u * a + b) / 2^24)``, one 16x16 and one 16x8
    product and the top byte, used when such (a, b) exist, which is proved by
    checking every accumulator the channel can reach; or
    ``window16`` / ``window24`` / ``window32``: TFLM's double rounding
    rewritten around the window's start as a 16/24/32 x 32-bit product from
    16x16->32-bit partial products (the division by 2^31 becomes taking high
    words) and one shift.

  Constants shared by every channel (all of them, for a per-tensor layer)
  are compile-time literals; the others sit in one per-channel table in flash.
  A layer whose ranges cannot be proven (an accumulator that may leave int32,
  a negative multiplier, a window too wide) keeps the reference kernel, and
  the generated file says why.

``plan_kernels`` exposes that analysis, so tests and reports can see which
kernel each layer got.

A layer's ``post`` op runs in place on its int8 outputs: LOGISTIC and TANH
are functions of the int8 input alone, so they become a 256-entry table in
flash (computed by ``quant.ActivationLayer``, which is checked against
tflite-micro), and the next layer's fast kernel takes its input range from
the table entries its predecessor can reach. SOFTMAX (last layer only) is a
C port of TFLM's gemmlowp arithmetic (reference kernel) or, with the fast
kernels, an exp table for the differences ``x - max`` a row can produce
plus 32-bit partial products (no 64-bit arithmetic).
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConvertError
from ..prestage import InputStage
from ..quant import ActivationLayer, DenseLayer, ModelPlan, SoftmaxLayer, multiply_by_quantized_multiplier
from . import cgen, input_stage_for
from . import render as _render
from .classes import header_context

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
MAX_UNITS = 65535  # loop counters are uint16_t
SHIFT_RANGE = (-31, 30)  # what TFLM's QuantizeMultiplier can produce (TFLM shifts 1 << left_shift)
GENERATED_FILES = ("tinyml_model.h", "tinyml_model.cpp", "tinyml_kernels.h")
ACC_TYPES = ("int16_t", "tinyml_int24_t", "int32_t")
DOT_FUNCTIONS = {"int16_t": "tinyml_dot_i16", "tinyml_int24_t": "tinyml_dot_i24",
                 "int32_t": "tinyml_dot_i32"}


# --------------------------------------------------------------------------
# analysis results


@dataclass(frozen=True)
class Window:
    """Requantization of one channel (or of a whole per-tensor layer) around a base.

    For ``base <= acc <= base + u_max`` with ``u = acc - base``::

        h'  = floor((h_rem + (u << lshift) * mult) / 2^31)
        out = y0 + ((h' + g_rem - (h' < h_neg)) >> rshift)

    equals TFLM's clamped output; below ``base`` the output is the activation
    minimum, above ``base + u_max`` the maximum. ``u_max`` is -1 when no
    accumulator the channel can produce lands inside.
    """

    base: int
    u_max: int
    mult: int
    h_rem: int
    g_rem: int
    h_neg: int
    y0: int
    lshift: int
    rshift: int
    h_max: int  # the largest h' in the window

    @property
    def v_max(self) -> int:
        """Largest value shifted right in the second stage."""
        return self.h_max + self.g_rem

    def steps(self) -> np.ndarray:
        """``out - y0`` for every u in 0..u_max, as the C computes it (needs u_max << lshift < 2^16)."""
        u = np.arange(self.u_max + 1, dtype=np.int64) << self.lshift
        h = (2 * self.h_rem + u * (2 * self.mult)) >> 32  # < 2^48: exact in int64
        return (h + self.g_rem - (h < self.h_neg)) >> self.rshift


@dataclass(frozen=True)
class Affine:
    """``out = y0 + floor(((u * a + b) mod 2^32) / 2^24)``, equal to the window's output
    for every u the channel can reach (checked by enumerating them all). Cheaper on
    AVR than the window's own arithmetic: one 16x16 and one 16x8 product, then the
    top byte."""

    a: int
    b: int
    y0: int


@dataclass(frozen=True)
class LayerKernel:
    """How one layer is compiled: which kernel, which types, which tables."""

    index: int
    kind: str  # "affine16" | "window16" | "window24" | "window32" | "reference"
    reason: str  # why the reference kernel, or a one-line summary of the fast one
    per_channel: bool  # multipliers/shifts differ between channels
    acc_type: str = "int32_t"
    x_min: int = -128  # smallest int8 the layer's input can hold
    skip_zero: bool = False  # skip inputs at x_min in the dot product
    offsets: tuple[int, ...] = ()  # per channel: bias' - window base, saturated
    windows: tuple[Window, ...] = ()  # one (per-tensor) or one per channel
    wide_v: bool = False  # second stage in uint32_t rather than uint16_t
    affine: tuple[Affine, ...] = ()  # kind "affine16": one per window

    @property
    def fast(self) -> bool:
        return self.kind != "reference"



# --------------------------------------------------------------------------
# plan validation


def _check_plan(plan: ModelPlan) -> None:
    if not isinstance(plan, ModelPlan):
        raise ConvertError(f"expected a ModelPlan, got {type(plan).__name__}")
    if not plan.layers:
        raise ConvertError("the model has no FULLY_CONNECTED layer; the native runtime needs at least one")
    problems: list[str] = []
    for i, layer in enumerate(plan.layers):
        problems += [f"layer {i}: {p}" for p in _layer_problems(layer)]
        problems += [f"layer {i}: {p}" for p in _post_problems(layer)]
        if isinstance(layer.post, SoftmaxLayer) and i != len(plan.layers) - 1:
            problems.append(f"layer {i}: SOFTMAX is only supported after the last layer")
        if i and not problems:
            prev = plan.layers[i - 1]
            if layer.n_in != prev.n_out:
                problems.append(f"layer {i}: takes {layer.n_in} inputs but layer {i - 1} "
                                f"produces {prev.n_out}")
            if layer.input_offset != -prev.result_zero_point:
                problems.append(f"layer {i}: input zero point {-layer.input_offset} differs from "
                                f"layer {i - 1}'s output zero point {prev.result_zero_point} "
                                "(a requantization between layers is not supported)")
    if not problems:
        if plan.input.zero_point != -plan.layers[0].input_offset:
            problems.append(f"input zero point {plan.input.zero_point} differs from the first "
                            f"layer's {-plan.layers[0].input_offset}")
        if plan.output.zero_point != plan.layers[-1].result_zero_point:
            problems.append(f"output zero point {plan.output.zero_point} differs from the last "
                            f"layer's {plan.layers[-1].result_zero_point}")
    if problems:
        raise ConvertError("the native runtime cannot generate this model: " + "; ".join(problems),
                           hint="it supports chains of int8 FULLY_CONNECTED layers with "
                                f"activations {', '.join(ACTIVATIONS)}, each optionally followed by "
                                "LOGISTIC or TANH, and a final SOFTMAX")


def _int_array(value, name: str, shape: tuple[int, ...], lo: int, hi: int, problems: list[str]):
    arr = np.asarray(value)
    if arr.shape != shape:
        problems.append(f"{name} has shape {arr.shape}, expected {shape}")
        return None
    if arr.size and arr.dtype.kind not in "iu":
        problems.append(f"{name} must hold integers, not {arr.dtype}")
        return None
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        problems.append(f"{name} has values outside {lo}..{hi}")
        return None
    return arr


def _layer_problems(layer: DenseLayer) -> list[str]:
    problems: list[str] = []
    weights = np.asarray(layer.weights)
    if weights.ndim != 2 or weights.dtype.kind not in "iu":
        return [f"weights must be a 2-D integer array [out, in], got {weights.dtype} {weights.shape}"]
    n_out, n_in = weights.shape
    if not (1 <= n_in <= MAX_UNITS and 1 <= n_out <= MAX_UNITS):
        return [f"{n_out}x{n_in} weights; each dimension must be 1..{MAX_UNITS}"]
    _int_array(weights, "weights", (n_out, n_in), -128, 127, problems)
    _int_array(layer.bias, "bias", (n_out,), INT32_MIN, INT32_MAX, problems)
    _int_array(layer.output_multiplier, "output_multiplier", (n_out,), INT32_MIN, INT32_MAX, problems)
    _int_array(layer.output_shift, "output_shift", (n_out,), *SHIFT_RANGE, problems)
    if layer.activation not in ACTIVATIONS:
        problems.append(f"activation {layer.activation!r} is not one of {', '.join(ACTIVATIONS)}")
    if not -128 <= layer.activation_min <= layer.activation_max <= 127:
        problems.append(f"activation range {layer.activation_min}..{layer.activation_max} "
                        "is not inside -128..127")
    if not -128 <= layer.output_offset <= 127:
        problems.append(f"output zero point {layer.output_offset} is not an int8")
    if not -127 <= layer.input_offset <= 128:
        problems.append(f"input zero point {-layer.input_offset} is not an int8")
    return problems


SOFTMAX_MAX_UNITS = 4095  # TFLM's output shift 12 - clz(sum) + 23 must stay <= 31


def _post_problems(layer: DenseLayer) -> list[str]:
    post = layer.post
    if post is None:
        return []
    if isinstance(post, ActivationLayer):
        if post.op not in ("LOGISTIC", "TANH"):
            return [f"activation op {post.op!r} is not LOGISTIC or TANH"]
        if post.input_zero_point != layer.output_offset:
            return [f"{post.op} input zero point {post.input_zero_point} differs from the layer's "
                    f"output zero point {layer.output_offset}"]
        return []
    if isinstance(post, SoftmaxLayer):
        problems = []
        if not (0 < post.input_multiplier <= INT32_MAX and 0 <= post.input_left_shift <= 31):
            problems.append("SOFTMAX multiplier or shift out of range")
        if not INT32_MIN <= post.diff_min <= 0:
            problems.append(f"SOFTMAX diff_min {post.diff_min} out of range")
        if layer.n_out > SOFTMAX_MAX_UNITS:
            problems.append(f"SOFTMAX over {layer.n_out} classes; TFLM's int8 kernel allows "
                            f"{SOFTMAX_MAX_UNITS} at most")
        return problems
    return [f"unknown op after the layer: {type(post).__name__}"]


def result_range(layer: DenseLayer) -> tuple[int, int]:
    """The smallest and largest int8 value a layer (with its post op) can hand on."""
    lo, hi = int(layer.activation_min), int(layer.activation_max)
    if isinstance(layer.post, ActivationLayer):
        reached = layer.post.table()[lo + 128:hi + 129].astype(np.int64)
        return int(reached.min()), int(reached.max())
    if isinstance(layer.post, SoftmaxLayer):
        return -128, 127
    return lo, hi


def softmax_exp_table(layer: DenseLayer) -> np.ndarray:
    """exp(beta * s_in * diff) in Q0.31 for diff = 0, -1, ... (uint32), as far as the layer's
    outputs can differ and the kernel does not skip them (diff >= diff_min)."""
    post = layer.post
    span = int(layer.activation_max) - int(layer.activation_min)
    n = min(span, -int(post.diff_min)) + 1
    return post.exp_of_diff(-np.arange(n, dtype=np.int64)).astype(np.int64)


# --------------------------------------------------------------------------
# the fast-kernel analysis


def _domain(shift: int) -> tuple[int, int]:
    """Accumulators whose ``acc * 2^left_shift`` stays inside int32 (no wrap in TFLM)."""
    left = max(shift, 0)
    return -(2**31 >> left), INT32_MAX >> left


def _thresholds(mults: np.ndarray, shifts: np.ndarray, layer: DenseLayer):
    """Per channel, (A0, A1): the smallest accumulator whose output exceeds the
    activation minimum and the largest whose output stays below the maximum,
    searched within the no-wrap domain of each channel (None when there is none).

    Exact: for M >= 0 the requantization is non-decreasing in the accumulator
    over that domain (``quant.requant_thresholds`` states the argument; it
    searches all of int32, so it gives up on channels with a left shift, where
    this restricts the domain instead). Bisection on int64 arrays, one lane per
    channel, with the arithmetic of ``quant.multiply_by_quantized_multiplier``.
    """
    m = np.asarray(mults, dtype=np.int64)
    s = np.asarray(shifts, dtype=np.int64)
    left = np.maximum(s, 0)
    d_lo = -(np.int64(2**31) >> left)
    d_hi = np.int64(INT32_MAX) >> left

    def out(acc):
        return multiply_by_quantized_multiplier(acc, m, s) + int(layer.output_offset)

    def first(pred):  # smallest acc in [d_lo, d_hi] with pred(acc), or d_hi + 1
        ok_hi = pred(d_hi)
        lo, hi = d_lo.copy(), d_hi.copy()
        for _ in range(33):
            mid = (lo + hi) >> 1
            p = pred(mid)
            hi = np.where(p, mid, hi)
            lo = np.where(p, lo, np.minimum(mid + 1, hi))
        return np.where(ok_hi, hi, d_hi + 1)

    a0 = first(lambda acc: out(acc) > layer.activation_min)
    at_max = first(lambda acc: out(acc) >= layer.activation_max)
    result = []
    for c in range(m.size):
        lo = None if a0[c] > d_hi[c] else int(a0[c])
        hi = None if at_max[c] == d_lo[c] else int(at_max[c]) - 1
        result.append((lo, hi))
    return result


def _window(lo: int, hi: int, multiplier: int, shift: int, layer: DenseLayer,
            thresholds: tuple[int | None, int | None]) -> Window:
    """The window of accumulators in [lo, hi] whose output is not clamped, and its constants."""
    a0, a1 = thresholds
    if a0 is None:  # always at the minimum
        base, u_max = hi + 1, -1
    elif a1 is None:  # always at the maximum
        base, u_max = lo, -1
    else:
        base, top = max(a0, lo), min(a1, hi)
        u_max = top - base if top >= base else -1
    left, right = max(shift, 0), max(-shift, 0)
    if u_max < 0:  # no reachable accumulator inside: the constants are never used
        return Window(base=base, u_max=-1, mult=multiplier, h_rem=0, g_rem=0, h_neg=0, y0=0,
                      lshift=left, rshift=right, h_max=0)
    h_q, h_rem = divmod((base << left) * multiplier + 2**30, 2**31)
    h_max = (h_rem + (max(u_max, 0) << left) * multiplier) >> 31
    g_q, g_rem = divmod(h_q + ((1 << (right - 1)) if right else 0), 1 << right)
    h_neg = min(max(0, -h_q), h_max + 1) if right else 0
    y0 = g_q + layer.output_offset
    if right and g_rem == 0 and h_neg > 0:  # keep h' + g_rem - 1 >= 0 (unsigned in C)
        g_rem, y0 = 1 << right, y0 - 1
    return Window(base=base, u_max=u_max, mult=multiplier, h_rem=h_rem, g_rem=g_rem,
                  h_neg=h_neg, y0=y0, lshift=left, rshift=right, h_max=h_max)


AFFINE_SHIFT = 24  # floor(x / 2^24) of a uint32_t is its top byte


def _affine(window: Window, points: np.ndarray | None = None) -> Affine | None:
    """An exact ``floor((u * a + b) / 2^24)`` form of the window's output, or None.

    ``points`` are the u values the channel can reach (default: all of 0..u_max);
    the form only has to hold there. The window's output minus y0 is a
    non-decreasing step function r(u) of 0..255. (a, b) reproduces it iff the first
    point of every step satisfies r * 2^24 <= u*a + b and the last point of every
    step satisfies u*a + b < (r+1) * 2^24. For a fixed a the best b is the largest
    lower bound, and the gap g(a) = max(lower bounds) - min(upper bounds) is convex
    in a, so a binary search on its slope finds the best a. The result is then
    checked on every point.
    """
    if window.u_max < 0:
        return Affine(0, 0, 0)
    r_all = window.steps()
    if points is None:
        u = np.arange(window.u_max + 1, dtype=np.int64)
    else:
        u = np.unique(points[(points >= 0) & (points <= window.u_max)].astype(np.int64))
        if u.size == 0:
            return Affine(0, 0, 0)
    r = r_all[u]
    if r[0] < 0 or r[-1] > 255:
        return None
    starts = np.flatnonzero(np.diff(r, prepend=-1))  # index of each step's first point
    ends = np.append(starts[1:] - 1, u.size - 1)  # and of its last
    first, last, rf, rl = u[starts], u[ends], r[starts], r[ends]
    one = 1 << AFFINE_SHIFT

    def gap(a: int) -> int:
        lower = int((rf * one - first * a).max())
        upper = int(((rl + 1) * one - 1 - last * a).min())
        return lower - upper

    lo, hi = 0, (1 << AFFINE_SHIFT) - 1  # a < 2^24: u * (a >> 16) stays an 8-bit factor
    while lo < hi:  # smallest a where g stops decreasing
        mid = (lo + hi) // 2
        if gap(mid + 1) - gap(mid) >= 0:
            hi = mid
        else:
            lo = mid + 1
    a = lo
    if gap(a) > 0:
        return None
    b = int((rf * one - first * a).max())
    x = u * a + b
    if int(x.min()) < 0 or int(x.max()) >= 2**32 or not np.array_equal(x >> AFFINE_SHIFT, r):
        return None  # cannot happen if the reasoning above holds; never trust it blindly
    # C computes u*a + b modulo 2^32, exact because the true value is in [0, 2^32)
    return Affine(a=a, b=b % 2**32, y0=window.y0)


def _reachable(weights: np.ndarray, offsets: list[int], x_span: int, per_out, windows):
    """For each window, the u values its channels can reach, or None for "all of 0..u_max".

    Only a one-input layer is worth enumerating: channel c reaches
    u = W[c,0] * xr + offset[c] for xr in 0..x_span, 256 points at most.
    """
    if weights.shape[1] != 1:
        return [None] * len(windows)
    xr = np.arange(x_span + 1, dtype=np.int64)
    reach = [int(weights[c, 0]) * xr + offsets[c] for c in range(weights.shape[0])]
    if len(windows) == len(reach):
        return reach
    return [np.concatenate(reach)]  # one window shared by every channel


def _narrowest(values, types=ACC_TYPES) -> str | None:
    lo, hi = min(values), max(values)
    for ctype in types:
        if cgen.fits(lo, ctype) and cgen.fits(hi, ctype):
            return ctype
    return None


def _analyze_layer(index: int, layer: DenseLayer, prev: DenseLayer | None) -> LayerKernel:
    mults = [int(m) for m in np.asarray(layer.output_multiplier)]
    shifts = [int(s) for s in np.asarray(layer.output_shift)]
    per_channel = len(set(zip(mults, shifts))) > 1
    reference = lambda why: LayerKernel(index, "reference", why, per_channel)  # noqa: E731

    if min(mults) < 0:
        return reference("a negative output_multiplier (the requantization is not monotone)")
    x_min, x_max = (-128, 127) if prev is None else result_range(prev)
    x_span = x_max - x_min
    weights = np.asarray(layer.weights).astype(np.int64)
    bias = np.asarray(layer.bias).astype(np.int64)
    row_sum = weights.sum(axis=1)
    s_min = [int(v) * x_span for v in np.minimum(weights, 0).sum(axis=1)]
    s_max = [int(v) * x_span for v in np.maximum(weights, 0).sum(axis=1)]
    # TFLM: acc = bias + sum W*(x + input_offset) = bias' + sum W*(x - x_min)
    bias_prime = [int(b) + int(r) * (x_min + layer.input_offset) for b, r in zip(bias, row_sum)]
    acc_lo = [b + s for b, s in zip(bias_prime, s_min)]
    acc_hi = [b + s for b, s in zip(bias_prime, s_max)]
    for c in range(layer.n_out):
        d_lo, d_hi = _domain(shifts[c])
        if acc_lo[c] < d_lo or acc_hi[c] > d_hi:
            return reference(f"channel {c}'s accumulator may leave int32 (TFLM wraps it)")

    if per_channel:
        bounds = _thresholds(mults, shifts, layer)
        windows = tuple(_window(acc_lo[c], acc_hi[c], mults[c], shifts[c], layer, bounds[c])
                        for c in range(layer.n_out))
        per_out = windows
    else:
        bounds = _thresholds(mults[:1], shifts[:1], layer)[0]
        shared = _window(min(acc_lo), max(acc_hi), mults[0], shifts[0], layer, bounds)
        windows, per_out = (shared,), (shared,) * layer.n_out

    u_top = max((max(w.u_max, 0) << w.lshift) for w in windows)
    if u_top < 2**16:
        kind = "window16"
    elif u_top < 2**24:
        kind = "window24"
    elif u_top < 2**32:
        kind = "window32"
    else:
        return reference(f"a requantization window of {u_top} accumulator steps (more than 2^32)")
    if max(w.v_max for w in windows) >= 2**32:
        return reference("a requantization result wider than 32 bits")
    wide_v = any(w.v_max >= 2**16 or w.rshift >= 16 for w in windows)

    # Saturate each offset to the range that still classifies every reachable
    # accumulator correctly (below / inside / above the window).
    offsets = []
    for c, w in enumerate(per_out):
        offsets.append(min(max(bias_prime[c] - w.base, -(s_max[c] + 1)), w.u_max - s_min[c] + 1))
    values = [0, -1, *s_min, *s_max, *(w.u_max for w in windows)]
    values += [o + s for o, s in zip(offsets, s_min)] + [o + s for o, s in zip(offsets, s_max)]
    affine: tuple[Affine, ...] = ()
    if kind == "window16":
        points = _reachable(weights, offsets, x_span, per_out, windows)
        found = [_affine(w, p) for w, p in zip(windows, points)]
        if all(f is not None for f in found):
            kind, affine = "affine16", tuple(found)
    acc_type = _narrowest(values)
    if acc_type is None:
        return reference("offset accumulators that do not fit in int32")
    if any(not cgen.fits(w.y0, "int16_t") or not cgen.fits(w.y0 + 128, "int16_t") for w in windows):
        return reference("an output base outside int16")

    summary = (f"{kind}, {acc_type} accumulator, "
               + ("per-channel table" if per_channel else "per-tensor constants")
               + ("" if kind == "affine16" else f", {'uint32_t' if wide_v else 'uint16_t'} rounding"))
    return LayerKernel(index, kind, summary, per_channel, acc_type=acc_type, x_min=x_min,
                       skip_zero=prev is not None and prev.activation != "NONE" and prev.post is None,
                       offsets=tuple(offsets), windows=windows, wide_v=wide_v, affine=affine)


def plan_kernels(plan: ModelPlan) -> tuple[LayerKernel, ...]:
    """Decide, layer by layer, how the generated C computes ``plan``.

    Raises
    ------
    ConvertError
        The plan holds something the native runtime cannot run (the message
        names every problem found).
    """
    _check_plan(plan)
    return tuple(_analyze_layer(i, layer, plan.layers[i - 1] if i else None)
                 for i, layer in enumerate(plan.layers))


# --------------------------------------------------------------------------
# rendering


def _buffers(plan: ModelPlan) -> list[int]:
    """Sizes of the ping-pong activation buffers between layers."""
    sizes = [0, 0]
    for i, layer in enumerate(plan.layers[:-1]):
        sizes[i % 2] = max(sizes[i % 2], layer.n_out)
    return [s for s in sizes if s]


def _layer_context(layer: DenseLayer, kernel: LayerKernel, buffer_in: str, buffer_out: str, *,
                   input_offset_stored: bool, store_offset: bool) -> dict:
    """Template values for one layer.

    With the fast kernels, a fast layer whose next layer is fast too stores its
    outputs as ``y - activation_min`` (uint8, what the next dot product
    multiplies by: ``store_offset``); ``input_offset_stored`` says the previous
    layer did so.
    """
    i = kernel.index
    p = f"tinyml_l{i}"
    macro = f"TINYML_L{i}"
    n_q = layer.n_out if kernel.per_channel else 1
    ctx = {
        "index": i, "p": p, "m": macro, "n_in": layer.n_in, "n_out": layer.n_out,
        "activation": layer.activation,
        "quantization": "per-channel" if kernel.per_channel else "per-tensor",
        "input": buffer_in, "output": buffer_out,
        "counter_type": "uint8_t" if layer.n_out <= 255 else "uint16_t",
        "input_offset": cgen.int_literal(layer.input_offset),
        "output_offset": cgen.int_literal(layer.output_offset),
        "activation_min": cgen.int_literal(layer.activation_min),
        "activation_max": cgen.int_literal(layer.activation_max),
        "weights": cgen.int_array(np.asarray(layer.weights).ravel(), "int8_t"),
        "bias": cgen.int_array(np.asarray(layer.bias), "int32_t"),
        "n_q": n_q,
        "multipliers": cgen.int_array(np.asarray(layer.output_multiplier)[:n_q], "int32_t"),
        "shifts": cgen.int_array(np.asarray(layer.output_shift)[:n_q], "int8_t"),
        "kernel": kernel,
    }
    if not kernel.fast:
        return ctx
    v_type = "uint32_t" if kernel.wide_v else "uint16_t"
    offset_type = _narrowest(kernel.offsets, ("int16_t", "int32_t"))
    out_bias = layer.activation_min if store_offset else 0
    ctx.update({
        "acc_type": kernel.acc_type, "dot": DOT_FUNCTIONS[kernel.acc_type],
        "x_min": cgen.int_literal(kernel.x_min),
        "x_bias": cgen.int_literal(0 if input_offset_stored else kernel.x_min & 0xFF, "uint8_t"),
        "x_bias_note": ("the previous layer stores x - INPUT_MIN" if input_offset_stored
                        else f"x - ({kernel.x_min}) as a byte"),
        "out_min": cgen.int_literal(layer.activation_min - out_bias, "int16_t"),
        "out_max": cgen.int_literal(layer.activation_max - out_bias, "int16_t"),
        "out_note": ("stored minus ACTIVATION_MIN, for the next layer" if store_offset
                     else "stored as int8"),
        "skip_zero": int(kernel.skip_zero),
        "v_type": v_type, "v_bits": v_type[4:6],
        "u_type": "uint16_t" if kernel.kind == "window16" else "uint32_t",
        "high": {"window16": "tinyml_high32_u16", "window24": "tinyml_high32_u24"}.get(
            kernel.kind, "tinyml_high32_u32"),
        "h_type": "uint16_t" if kernel.kind == "window16" else "uint32_t",
    })
    u_max_type = _narrowest([w.u_max for w in kernel.windows], ("int16_t", "int32_t"))
    offset = ("OFFSET", offset_type, list(kernel.offsets),
              "bias + sum(weights) * (INPUT_MIN + INPUT_OFFSET) - window base, saturated")
    if kernel.kind == "affine16":
        fields = [offset,
            ("U_MAX", u_max_type, [w.u_max for w in kernel.windows],
             "u above this: output at the activation maximum"),
            ("A_LO", "uint16_t", [f.a & 0xFFFF for f in kernel.affine], "slope A, low 16 bits"),
            ("A_HI", "uint8_t", [f.a >> 16 for f in kernel.affine], "slope A, bits 16..23"),
            ("B", "uint32_t", [f.b for f in kernel.affine], "intercept"),
            ("Y0", "int16_t", [f.y0 - out_bias for f in kernel.affine],
             "stored output at u = 0, less rounding"),
        ]
    else:
        ws = kernel.windows
        fields = [offset,
            ("U_MAX", u_max_type, [w.u_max for w in ws],
             "u above this: output at the activation maximum"),
            ("MULT2", "uint32_t", [2 * w.mult for w in ws], "2 * output_multiplier"),
            ("REM2", "uint32_t", [2 * w.h_rem for w in ws],
             "2 * ((base * 2^LSHIFT * output_multiplier + 2^30) mod 2^31)"),
            ("G_REM", v_type, [w.g_rem for w in ws], "rounding constant of the final shift"),
            ("H_NEG", v_type, [w.h_neg for w in ws], "h' below this: the high product is < 0"),
            ("Y0", "int16_t", [w.y0 - out_bias for w in ws], "stored output at the window base, less rounding"),
            ("LSHIFT", "uint8_t", [w.lshift for w in ws], "max(output_shift, 0)"),
            ("RSHIFT", "uint8_t", [w.rshift for w in ws], "max(-output_shift, 0)"),
        ]
    # A value shared by every channel becomes a literal (the compiler folds it);
    # the others go into a per-channel table in flash.
    def literal(value, ctype):
        text = cgen.int_literal(value, ctype)
        return text.rstrip("U") if ctype == "uint8_t" else text

    # (per-tensor windows are listed once; repeat them for every channel)
    fields = [(name, ctype, values * (layer.n_out // len(values)), note)
              for name, ctype, values, note in fields]
    uniform = [f for f in fields if len(set(f[2])) == 1]
    varying = [f for f in fields if len(set(f[2])) > 1]
    ctx["constants"] = [(name, literal(values[0], ctype), note) for name, ctype, values, note in uniform]
    ctx["e"] = {name: f"{macro}_{name}" for name, _, _, _ in uniform}
    read = {"int16_t": "tinyml_flash_i16", "int32_t": "tinyml_flash_i32",
            "uint16_t": "tinyml_flash_u16", "uint32_t": "tinyml_flash_u32", "uint8_t": "tinyml_flash_u8"}
    ctx["channel_fields"] = [(ctype, name.lower(), note) for name, ctype, _, note in varying]
    ctx["channel_rows"] = [
        cgen.struct_init([literal(values[c], ctype) for _, ctype, values, _ in varying])
        for c in range(layer.n_out)] if varying else []
    ctx["e"].update({name: f"{read[ctype]}(&channel->{name.lower()})" for name, ctype, _, _ in varying})
    return ctx


def _post_context(layer: DenseLayer, ctx: dict) -> dict | None:
    """Template values for the LOGISTIC/TANH/SOFTMAX op after a layer (in place on its output)."""
    post = layer.post
    if post is None:
        return None
    p, m = ctx["p"], ctx["m"]
    if isinstance(post, ActivationLayer):
        name = post.op.lower()
        return {"op": post.op, "table_name": f"{p}_{name}",
                "table": cgen.int_array(post.table().astype(np.int64), "int8_t"),
                "note": (f"input zero point {post.input_zero_point}, multiplier {post.input_multiplier}, "
                         f"shift {post.input_left_shift}, radius {post.input_range_radius}"),
                "call": f"tinyml_lookup({ctx['output']}, {m}_N_OUT, {p}_{name})"}
    table = softmax_exp_table(layer)
    return {"op": "SOFTMAX", "exp_name": f"{p}_softmax_exp", "n_exp": len(table),
            "exp_table": cgen.int_array(table, "uint32_t"),
            "multiplier": cgen.int_literal(post.input_multiplier),
            "shift": str(post.input_left_shift), "diff_min": cgen.int_literal(post.diff_min),
            "beta": f"{post.beta:g}",
            "call_fast": f"tinyml_softmax_fast({ctx['output']}, {m}_N_OUT, {p}_softmax_exp, {len(table)})",
            "call_reference": (f"tinyml_softmax_reference({ctx['output']}, {m}_N_OUT, {m}_SOFTMAX_MULTIPLIER, "
                               f"{m}_SOFTMAX_SHIFT, {m}_SOFTMAX_DIFF_MIN)")}


_HASH = re.compile(r"[0-9a-f]{1,64}\Z")


def render_native(plan: ModelPlan, *, model_hash: str, input_label: str = "x",
                  output_label: str = "y", stage: InputStage | None = None,
                  classes=None) -> dict[str, str]:
    """The generated files as ``{file name: text}``, without writing anything."""
    if not isinstance(model_hash, str) or not _HASH.match(model_hash):
        raise ConvertError(f"model_hash must be lowercase hex digits, got {model_hash!r}")
    stage = input_stage_for(plan, stage)
    kernels = plan_kernels(plan)
    buffers = _buffers(plan)
    names = [f"tinyml_activations_{j}" for j in range(len(buffers))]
    layers = []
    n = len(plan.layers)
    for i, (layer, kernel) in enumerate(zip(plan.layers, kernels)):
        buffer_in = "input" if i == 0 else names[(i - 1) % 2]
        buffer_out = "output" if i == n - 1 else names[i % 2]
        ctx = _layer_context(
            layer, kernel, buffer_in, buffer_out,
            input_offset_stored=i > 0 and kernels[i - 1].fast and plan.layers[i - 1].post is None,
            store_offset=i < n - 1 and kernels[i + 1].fast and layer.post is None)
        ctx["post"] = _post_context(layer, ctx)
        layers.append(ctx)
    context = {
        "model_hash": model_hash,
        "n_inputs": plan.n_inputs, "n_outputs": plan.n_outputs, "n_layers": n,
        "input_scale_bits": cgen.float32_bits(plan.input.scale),
        "input_zero_point": cgen.int_literal(plan.input.zero_point),
        "input_stage_rows": cgen.stage_table(stage.mean, stage.div),
        "output_scale_bits": cgen.float32_bits(plan.output.scale),
        "output_zero_point": cgen.int_literal(plan.output.zero_point),
        "input_label": cgen.string_literal(input_label),
        "output_label": cgen.string_literal(output_label),
        "float_input": int(bool(plan.float_input)), "float_output": int(bool(plan.float_output)),
        "arena_bytes": sum(buffers),
        "buffers": list(zip(names, buffers)),
        "layers": layers,
        **header_context(classes, plan.output, plan.n_outputs),
    }
    return {name: _render(f"native/{name}.j2", context, model_hash=model_hash)
            for name in GENERATED_FILES}


def generate_native(plan: ModelPlan, out_dir, *, model_hash: str, input_label: str = "x",
                    output_label: str = "y", stage: InputStage | None = None,
                    classes=None) -> list[Path]:
    """Write the native runtime's C sources for ``plan`` into ``out_dir``.

    Parameters
    ----------
    plan : the int8 model as a ``ModelPlan`` (``ipytinyml.quant.plan_from_model``)
    out_dir : folder to write into (created if missing); other files are left alone
    model_hash : first hex digits of the .tflite's SHA-256, reported by the firmware
    input_label, output_label : names the firmware prints for the input and output
    stage : the input pre-stage (``ipytinyml.prestage.InputStage``) the board applies to
        typed values; None: the identity stage (plain QUANTIZE with the input scale)
    classes : a classifier's class names in index order (report.json ``classes``): the
        human answer then names the class (``codegen.classes``); None for a regression

    Returns
    -------
    The paths written: ``tinyml_model.h``, ``tinyml_model.cpp``, ``tinyml_kernels.h``.

    Raises
    ------
    ConvertError
        The plan uses something the native runtime does not support (named in
        the message), ``model_hash`` is not hex, or ``stage`` does not fit the plan.

    Examples
    --------
    >>> from ipytinyml.quant import plan_from_model            # doctest: +SKIP
    >>> generate_native(plan, "tinyml/hp_mpg/sketch",           # doctest: +SKIP
    ...                 model_hash="3f2a9c01d4e5", input_label="horsepower", output_label="mpg")
    """
    files = render_native(plan, model_hash=model_hash, input_label=input_label,
                          output_label=output_label, stage=stage, classes=classes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = out / name
        # atomic: a reader never sees half a file
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(path)
    return written
