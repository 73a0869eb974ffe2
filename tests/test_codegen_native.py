"""The native runtime generator, checked with real compilers.

The generated C is compiled by host gcc/g++ (as C99 and as C++11, with
``-Wall -Wextra -Werror``), driven over stdin/stdout and compared bit for bit
with ``quant.evaluate_plan`` on synthetic plans and with tflite-micro on the
real AutoMPG models, for every int8 input value. It is also compiled by
avr-gcc/avr-g++ ``-Os -mmcu=atmega328p`` and run in simavr, with the same
check. Both kernels are run everywhere: the fast one (``TINYML_FAST_KERNELS=1``)
and the reference port of TFLM (``=0``).

These tests assert exactness only; cycle counts live in
``benchmarks/bench_native_cycles.py``.
"""
from __future__ import annotations

import itertools
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ipytinyml import quant
from ipytinyml.codegen import native
from ipytinyml.errors import ConvertError
from ipytinyml.quant import DenseLayer, ModelPlan, TensorQuant

sys.path.insert(0, str(Path(__file__).resolve().parent / "native_driver"))
import harness  # noqa: E402

needs_gcc = pytest.mark.skipif(not harness.have("gcc", "g++"), reason="host gcc/g++ not installed")
needs_avr = pytest.mark.skipif(not harness.have("avr-gcc", "avr-g++", "simavr", "avr-size"),
                               reason="avr-gcc, avr-g++, avr-size or simavr not installed")
HASH = "0123456789ab"
ALL_KINDS = {"affine16", "window16", "window24", "window32", "reference"}


# --------------------------------------------------------------------------
# synthetic plans


def _act_range(rng, activation: str, zp: int) -> tuple[int, int]:
    if activation == "NONE":
        return -128, 127
    if activation == "RELU":
        return max(-128, zp), 127
    if activation == "RELU6":
        return max(-128, zp), min(127, zp + int(rng.integers(1, 200)))
    span = int(rng.integers(0, 60))  # RELU_N1_TO_1: a band around the zero point
    return max(-128, zp - span), min(127, zp + span)


def synthetic_plan(seed: int, sizes, *, per_channel: bool, activations, shift=None,
                   bias_bits: int = 14, weight_max: int = 127, zero_points=None,
                   multipliers: str = "calibrated") -> ModelPlan:
    """A random chain of Dense layers with consistent zero points.

    By default each layer is calibrated like a converter would: its real scale
    maps the accumulators the test inputs produce onto the int8 range (times a
    random factor in [1/2, 2]) and, unless ``zero_points`` fixes them, its
    output zero point centres them. ``shift`` (an int or a (lo, hi) range)
    forces the shifts instead, with random multipliers (``multipliers``:
    "random", "with_zero" (every third 0) or "negative").
    """
    rng = np.random.default_rng(seed)
    x = harness.input_rows(sizes[0], seed=seed, extra=0 if sizes[0] == 1 else 256)
    zp_in = -128 if zero_points is None else zero_points[0]
    input_zp = zp_in
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.integers(-weight_max, weight_max + 1, size=(n_out, n_in)).astype(np.int8)
        bias = rng.integers(-(2**bias_bits), 2**bias_bits, size=n_out).astype(np.int32)
        activation = activations[i % len(activations)]
        n_q = n_out if per_channel else 1
        probe = DenseLayer(w, bias, -zp_in, 0, np.zeros(n_out, np.int32), np.zeros(n_out, np.int32),
                           -128, 127, activation, per_channel)
        acc = quant.accumulators(probe, x)
        lo, hi = (acc.min(axis=0), acc.max(axis=0)) if per_channel else (acc.min(), acc.max())
        # converters calibrate on a range that includes 0, ReLU outputs on [0, max]
        lo = np.zeros_like(lo) if activation in ("RELU", "RELU6") else np.minimum(lo, 0)
        hi = np.maximum(hi, 1)
        if shift is None:
            real = 255.0 / (np.asarray(hi, float) - lo + 1) * 2.0 ** rng.uniform(-1, 0.5, size=n_q)
            m, s = np.array([quant.quantize_multiplier(r) for r in np.atleast_1d(real)]).T
            zp_out = int(np.clip(-128 - np.round(np.mean(lo * real)), -128, 127))
        else:
            lo_s, hi_s = (shift, shift) if isinstance(shift, int) else shift
            s = rng.integers(lo_s, hi_s + 1, size=n_q)
            m = rng.integers(2**30, 2**31, size=n_q)
            if multipliers == "with_zero":
                m[::3] = 0
            elif multipliers == "negative":  # no converter writes these; TFLM would still run them
                m = -m + 1
            zp_out = int(rng.integers(-128, 128))
        if zero_points is not None:
            zp_out = zero_points[i + 1]
        amin, amax = _act_range(rng, activation, zp_out)
        layer = DenseLayer(
            weights=w, bias=bias, input_offset=-zp_in, output_offset=zp_out,
            output_multiplier=np.resize(m, n_out).astype(np.int32),
            output_shift=np.resize(np.clip(s, -31, 30), n_out).astype(np.int32),
            activation_min=amin, activation_max=amax, activation=activation, per_channel=per_channel)
        layers.append(layer)
        x = quant.fully_connected(layer, x)
        zp_in = zp_out
    return ModelPlan(layers=tuple(layers), input=TensorQuant(0.02, input_zp),
                     output=TensorQuant(0.1, zp_in), float_input=False, float_output=False)


SYNTHETIC = {
    "1-64-1 per-tensor relu": dict(seed=1, sizes=[1, 64, 1], per_channel=False, activations=["RELU", "NONE"]),
    "1-64-1 per-channel relu": dict(seed=2, sizes=[1, 64, 1], per_channel=True, activations=["RELU", "NONE"]),
    "1-16-16-1 relu6 relu": dict(seed=3, sizes=[1, 16, 16, 1], per_channel=False,
                                 activations=["RELU6", "RELU", "NONE"]),
    "3-8-4 per-channel zero points": dict(seed=4, sizes=[3, 8, 4], per_channel=True, activations=["NONE"],
                                          zero_points=[0, 17, -5]),
    "width 1 chain": dict(seed=5, sizes=[1, 1, 1, 1], per_channel=False, activations=["NONE"]),
    "64-64-2 per-tensor": dict(seed=6, sizes=[64, 64, 2], per_channel=False, activations=["RELU", "NONE"]),
    "64-32-1 per-channel": dict(seed=7, sizes=[64, 32, 1], per_channel=True, activations=["RELU6", "NONE"]),
    "huge biases": dict(seed=8, sizes=[4, 16], per_channel=True, activations=["NONE"],
                        bias_bits=31, shift=(-24, -8)),
    "accumulator wraps": dict(seed=19, sizes=[64, 8], per_channel=False, activations=["NONE"],
                              bias_bits=16, shift=-14),
    "negative multipliers": dict(seed=20, sizes=[3, 6, 2], per_channel=True, activations=["NONE"],
                                 shift=(-12, -8), multipliers="negative"),
    "positive shifts": dict(seed=9, sizes=[2, 8, 2], per_channel=True, activations=["NONE"],
                            shift=(0, 3), weight_max=3, bias_bits=6),
    "positive shifts, big accumulators": dict(seed=10, sizes=[8, 8], per_channel=False,
                                              activations=["NONE"], shift=3, weight_max=1, bias_bits=8),
    "tiny and zero multipliers": dict(seed=11, sizes=[5, 12, 2], per_channel=True, activations=["NONE"],
                                      shift=(-31, -20), multipliers="with_zero"),
    "relu_n1_to_1": dict(seed=12, sizes=[2, 10, 10, 1], per_channel=False,
                         activations=["RELU_N1_TO_1", "RELU_N1_TO_1", "NONE"]),
    "input zero point 127": dict(seed=13, sizes=[1, 12, 1], per_channel=False, activations=["RELU", "NONE"],
                                 zero_points=[127, -60, 3]),
    "input zero point -1": dict(seed=14, sizes=[2, 12, 1], per_channel=True, activations=["RELU", "NONE"],
                                zero_points=[-1, 0, -128]),
    "wide window per-tensor": dict(seed=15, sizes=[64, 24], per_channel=False, activations=["NONE"],
                                   shift=-16, bias_bits=24),
    "medium window 4 inputs": dict(seed=16, sizes=[4, 24, 1], per_channel=False, activations=["NONE"],
                                   shift=-9, bias_bits=12),
    "scale near 1": dict(seed=17, sizes=[1, 6], per_channel=True, activations=["NONE"], shift=(-1, 1),
                         weight_max=1, bias_bits=5),
    "reference layer in the middle": dict(seed=21, sizes=[1, 16, 12, 3], per_channel=False,
                                          activations=["RELU", "RELU6", "NONE"]),
    "degenerate activation range": dict(seed=18, sizes=[3, 5, 2], per_channel=False,
                                        activations=["RELU_N1_TO_1", "NONE"], zero_points=[-128, 40, 0]),
}


def _plan(name: str) -> ModelPlan:
    plan = synthetic_plan(**SYNTHETIC[name])
    if name == "degenerate activation range":  # act_min == act_max: every output is that value
        plan = _with(plan, 0, activation_min=40, activation_max=40)
    if name == "reference layer in the middle":  # fast -> reference -> fast: int8 hand-over both ways
        middle = plan.layers[1]
        plan = _with(plan, 1, output_multiplier=-middle.output_multiplier)
    if name == "accumulator wraps":  # sums that leave int32 (TFLM wraps them) in both directions
        bias = plan.layers[0].bias.copy()
        bias[:4] = [2**31 - 1, 2**31 - 400000, -2**31, -2**31 + 400000]
        plan = _with(plan, 0, bias=bias)
    if name == "positive shifts, big accumulators":  # acc * 2^3 wraps to values near 0
        bias = plan.layers[0].bias.copy()
        bias[:6] = 2**29 + np.arange(-3, 3) * 300
        plan = _with(plan, 0, bias=bias)
    return plan


def _generate(plan: ModelPlan, folder: Path, **kw) -> Path:
    native.generate_native(plan, folder, model_hash=HASH, **kw)
    return folder


# --------------------------------------------------------------------------
# the generated files


def test_generated_files_define_the_firmware_seam(tmp_path):
    plan = _plan("1-64-1 per-tensor relu")
    paths = native.generate_native(plan, tmp_path / "out", model_hash="3f2a9c01d4e5",
                                   input_label="horsepower", output_label='mpg "city"')
    assert [p.name for p in paths] == ["tinyml_model.h", "tinyml_model.cpp", "tinyml_kernels.h"]
    header = (tmp_path / "out" / "tinyml_model.h").read_text()
    for p in paths:
        text = p.read_text()
        assert text.startswith("/* Generated by ipytinyml ") and "3f2a9c01d4e5" in text.splitlines()[0]
        assert "do not edit" in text.splitlines()[0]
        assert text.isascii()
    expected = {
        "TINYML_N_INPUTS": "1", "TINYML_N_OUTPUTS": "1", "TINYML_MODEL_HASH": '"3f2a9c01d4e5"',
        "TINYML_RUNTIME": '"native"', "TINYML_INPUT_SCALE_BITS": "0x3ca3d70aUL",
        "TINYML_INPUT_ZERO_POINT": "(-128)", "TINYML_OUTPUT_SCALE_BITS": "0x3dcccccdUL",
        "TINYML_INPUT_LABEL": '"horsepower"', "TINYML_OUTPUT_LABEL": r'"mpg \"city\""',
        "TINYML_ARENA_BYTES": "64",
    }
    for name, value in expected.items():
        assert re.search(rf"^#define {name} {re.escape(value)}(\s|$)", header, re.M), name
    assert "#ifndef TINYML_MODEL_H" in header and 'extern "C"' in header
    assert "int tinyml_model_invoke(const int8_t *input, int8_t *output);" in header
    for p in paths:
        for macro in re.findall(r"^#define (\w+)", p.read_text(), re.M):
            assert macro.lower().startswith("tinyml_"), macro


@needs_gcc
@pytest.mark.parametrize("name", ["1-64-1 per-tensor relu", "1-64-1 per-channel relu", "huge biases"])
def test_every_symbol_is_prefixed(name, tmp_path):
    """What the object file defines, static or not, is named tinyml_* (nm, both kernels)."""
    model = _generate(_plan(name), tmp_path)
    for fast in (0, 1):
        obj = tmp_path / f"m{fast}.o"
        subprocess.run(["gcc", "-x", "c", "-O0", f"-DTINYML_FAST_KERNELS={fast}", "-c",
                        str(model / "tinyml_model.cpp"), "-o", str(obj)], check=True)
        names = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True).stdout
        defined = [line.split()[-1] for line in names.splitlines() if line.split()[-2] not in "Uw"]
        assert defined and all(n.startswith("tinyml_") for n in defined), defined


def test_output_is_deterministic(tmp_path):
    plan = _plan("1-16-16-1 relu6 relu")
    a = native.render_native(plan, model_hash=HASH)
    b = native.render_native(_plan("1-16-16-1 relu6 relu"), model_hash=HASH)
    assert a == b
    paths = native.generate_native(plan, tmp_path, model_hash=HASH)
    assert {p.name: p.read_text() for p in paths} == a
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(a)  # no temporary files left


def test_arena_is_the_ping_pong_buffers(tmp_path):
    assert "#define TINYML_ARENA_BYTES 32 " in native.render_native(
        _plan("1-16-16-1 relu6 relu"), model_hash=HASH)["tinyml_model.h"]
    assert "#define TINYML_ARENA_BYTES 0 " in native.render_native(
        synthetic_plan(0, [3, 2], per_channel=False, activations=["NONE"]), model_hash=HASH)["tinyml_model.h"]


@pytest.mark.parametrize("change, message", [
    (lambda p: _with(p, 0, output_shift=np.full(64, 31, np.int32)), "output_shift has values outside -31..30"),
    (lambda p: _with(p, 0, activation="TANH"), "activation 'TANH' is not one of"),
    (lambda p: _with(p, 0, activation_min=10, activation_max=5), "activation range 10..5"),
    (lambda p: _with(p, 1, input_offset=3), "input zero point -3 differs from layer 0's output zero point"),
    (lambda p: _with(p, 1, weights=np.zeros((1, 63), np.int8)), "takes 63 inputs but layer 0 produces 64"),
    (lambda p: _with(p, 0, weights=np.zeros((64, 1), np.float32)), "weights must be a 2-D integer array"),
    (lambda p: _with(p, 0, bias=np.zeros(3, np.int32)), "bias has shape (3,), expected (64,)"),
    (lambda p: _with(p, 0, output_offset=200), "output zero point 200 is not an int8"),
    (lambda p: replace(p, layers=()), "no FULLY_CONNECTED layer"),
    (lambda p: replace(p, input=TensorQuant(0.1, 5)), "input zero point 5 differs"),
])
def test_unsupported_plans_are_named(change, message):
    with pytest.raises(ConvertError) as err:
        native.plan_kernels(change(_plan("1-64-1 per-tensor relu")))
    assert message in str(err.value)


def _with(plan: ModelPlan, index: int, **fields) -> ModelPlan:
    layers = list(plan.layers)
    layers[index] = replace(layers[index], **fields)
    return replace(plan, layers=tuple(layers))


def test_bad_model_hash_is_refused(tmp_path):
    with pytest.raises(ConvertError, match="model_hash"):
        native.generate_native(_plan("width 1 chain"), tmp_path, model_hash="not hex!")


# --------------------------------------------------------------------------
# the analysis


def test_synthetic_plans_exercise_every_kernel():
    """The exactness tests below are only worth something if every kernel kind runs."""
    kinds = {k.kind for name in SYNTHETIC for k in native.plan_kernels(_plan(name))}
    assert kinds == ALL_KINDS
    middle = [k.kind for k in native.plan_kernels(_plan("reference layer in the middle"))]
    assert middle[1] == "reference" and middle[0] != "reference" and middle[2] != "reference"


def test_thresholds_agree_with_quant():
    """Where quant.requant_thresholds is exact (shift <= 0, M >= 0) both searches agree."""
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = 8
        m = rng.integers(2**30, 2**31, n)
        m[0] = 0
        s = rng.integers(-31, 1, n)
        zp = int(rng.integers(-128, 128))
        amin = int(rng.integers(-128, 128))
        amax = int(rng.integers(amin, 128))
        layer = DenseLayer(np.zeros((n, 1), np.int8), np.zeros(n, np.int32), 128, zp, m.astype(np.int32),
                           s.astype(np.int32), amin, amax, "NONE", True)
        lo, hi = quant.requant_thresholds(layer)
        ours = native._thresholds(m, s, layer)
        for c in range(n):
            a0, a1 = ours[c]
            assert (quant.INT32_MAX + 1 if a0 is None else a0) == lo[c]
            assert (quant.INT32_MIN - 1 if a1 is None else a1) == hi[c]


def test_affine_form_is_exact_or_refused():
    rng = np.random.default_rng(1)
    found = refused = 0
    for _ in range(60):
        m, shift = int(rng.integers(2**30, 2**31)), int(rng.integers(-12, -2))
        layer = DenseLayer(np.zeros((1, 1), np.int8), np.zeros(1, np.int32), 128, int(rng.integers(-128, 128)),
                           np.array([m], np.int32), np.array([shift], np.int32), -128, 127, "NONE", False)
        bounds = native._thresholds(np.array([m]), np.array([shift]), layer)[0]
        if bounds[0] is None:
            continue
        lo = bounds[0] - int(rng.integers(0, 2**15))
        window = native._window(lo, lo + int(rng.integers(0, 2**16)), m, shift, layer, bounds)
        if window.u_max < 0 or (window.u_max << window.lshift) >= 2**16:
            continue
        affine = native._affine(window)
        if affine is None:
            refused += 1
            continue
        found += 1
        u = np.arange(window.u_max + 1, dtype=np.int64)
        got = affine.y0 + (((u * affine.a + affine.b) % 2**32) >> 24)
        acc = window.base + u
        want = quant.multiply_by_quantized_multiplier(acc, m, shift) + layer.output_offset
        assert np.array_equal(got, want)
    assert found > 10 and refused > 0  # both outcomes happen on random windows


# --------------------------------------------------------------------------
# host compilers


@needs_gcc
def test_window_requantization_sweep(tmp_path):
    """Every fast requantization building block equals MultiplyByQuantizedMultiplier +
    zero point + clamp over whole windows (sampled beyond 2^22 accumulators) and at
    both ends of the accumulator range they were built for, for random multipliers
    and shifts -31..3, zero points, activation ranges and ranges, including
    multiplier 0 and empty windows."""
    model = _generate(_plan("width 1 chain"), tmp_path / "model")
    exe = harness.compile_host(model, tmp_path / "sweep", driver=harness.HERE / "window_sweep.c")
    rng = np.random.default_rng(2)
    lines = []
    for trial in range(400):
        m = int(rng.integers(2**30, 2**31)) if trial % 25 else int(rng.integers(0, 2**20)) * (trial % 2)
        shift = int(rng.integers(-31, 4)) if trial % 3 else int(rng.integers(-12, 0))
        zp = int(rng.integers(-128, 128))
        amin = int(rng.integers(-128, 128))
        amax = int(rng.integers(amin, 128))
        layer = DenseLayer(np.zeros((1, 1), np.int8), np.zeros(1, np.int32), 128, zp, np.array([m], np.int32),
                           np.array([shift], np.int32), amin, amax, "NONE", False)
        d_lo, d_hi = native._domain(shift)
        width = int(2 ** rng.uniform(0, 34))
        lo = int(rng.integers(d_lo, max(d_lo + 1, d_hi - min(width, d_hi - d_lo))))
        hi = min(d_hi, lo + width)
        bounds = native._thresholds(np.array([m]), np.array([shift]), layer)[0]
        w = native._window(lo, hi, m, shift, layer, bounds)
        if w.u_max >= 0 and ((w.u_max << w.lshift) >= 2**32 or w.v_max >= 2**32):
            continue  # the generator sends such layers to the reference kernel
        affine = native._affine(w) if 0 <= (w.u_max << w.lshift) < 2**16 else None
        a = affine or native.Affine(0, 0, 0)
        lines.append(f"{lo} {hi} {m} {shift} {zp} {amin} {amax} {w.base} {w.u_max} {2 * w.mult} {2 * w.h_rem} "
                     f"{w.g_rem} {w.h_neg} {w.y0} {w.lshift} {w.rshift} {int(w.v_max >= 2**16 or w.rshift >= 16)} "
                     f"{int(affine is not None)} "
                     f"{a.a} {a.b} {a.y0}")
    result = subprocess.run([exe], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=300)
    verdicts = result.stdout.split("\n")[:-1]
    assert len(verdicts) == len(lines) > 300
    bad = [(line, v) for line, v in zip(lines, verdicts) if not v.startswith("ok")]
    assert not bad, bad[:3]
    assert sum(int(v.split()[1]) for v in verdicts) > 10**7


def _host_outputs(plan: ModelPlan, folder: Path, builds, x: np.ndarray) -> dict:
    model = _generate(plan, folder / "model")
    exes = {}
    with ThreadPoolExecutor(4) as pool:
        jobs = {(lang, fast): pool.submit(harness.compile_host, model,
                                          folder / f"drv_{lang.replace('+', 'p')}_{int(fast)}",
                                          lang=lang, fast=fast)
                for lang, fast in builds}
        exes = {key: job.result() for key, job in jobs.items()}
    return {key: harness.run_host(exe, x) for key, exe in exes.items()}


@needs_gcc
@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_synthetic_plan_on_host_matches_evaluate_plan(name, tmp_path):
    plan = _plan(name)
    x = harness.input_rows(plan.n_inputs, seed=3, extra=0 if plan.n_inputs == 1 else 256)
    want = quant.evaluate_plan(plan, x).astype(np.int64)
    builds = [("c", True), ("c", False), ("c++", True)]
    for key, got in _host_outputs(plan, tmp_path, builds, x).items():
        assert np.array_equal(got, want), f"{key}: {int((got != want).sum())} of {want.size} outputs differ"


SANITIZED = ["1-64-1 per-channel relu", "reference layer in the middle", "wide window per-tensor",
             "accumulator wraps", "positive shifts, big accumulators", "tiny and zero multipliers",
             "64-64-2 per-tensor", "input zero point 127"]


@needs_gcc
def test_no_undefined_behaviour(tmp_path):
    """UBSan and ASan (host gcc, -fno-sanitize-recover): no signed overflow, bad shift or
    out-of-bounds access in either kernel, including where TFLM's int32 sums wrap."""
    flags = ("-fsanitize=undefined,address", "-fno-sanitize-recover=all", "-g")
    assert {k.kind for n in SANITIZED for k in native.plan_kernels(_plan(n))} == ALL_KINDS

    def check(i: int, name: str) -> None:
        plan = _plan(name)
        model = _generate(plan, tmp_path / f"m{i}")
        x = harness.input_rows(plan.n_inputs, extra=0 if plan.n_inputs == 1 else 64)
        want = quant.evaluate_plan(plan, x).astype(np.int64)
        for fast in (True, False):
            exe = harness.compile_host(model, model / f"san{int(fast)}", fast=fast, extra=flags)
            assert np.array_equal(harness.run_host(exe, x), want), (name, fast)

    with ThreadPoolExecutor(4) as pool:
        for job in [pool.submit(check, i, name) for i, name in enumerate(SANITIZED)]:
            job.result()


# --------------------------------------------------------------------------
# the real models against tflite-micro


def _oracle_int8(path: Path, plan: ModelPlan, x_int8: np.ndarray) -> np.ndarray:
    """tflite-micro's int8 outputs for int8 inputs, whatever the model's I/O types:
    float-I/O models get the dequantized values (QUANTIZE gives the int8 back exactly)
    and their outputs are quantized back (exact, as DEQUANTIZE is invertible)."""
    pytest.importorskip("tflite_micro")
    from ipytinyml.reference import run_micro

    y = run_micro(path, quant.dequantize(x_int8, plan.input))
    return quant.quantize(y, plan.output).astype(np.int64)


REAL = ["int8", "int8_pc", "int8_io", "int8_pc_io", "relu6", "two_hidden"]


@needs_gcc
@pytest.mark.parametrize("key", REAL)
def test_real_model_on_host_matches_tflite_micro(key, tflite_models, all_int8_inputs, tmp_path):
    path = tflite_models[key]
    plan = quant.plan_from_model(path)
    want = _oracle_int8(path, plan, all_int8_inputs)
    assert np.array_equal(quant.evaluate_plan(plan, all_int8_inputs), want)
    kernels = native.plan_kernels(plan)
    assert all(k.fast for k in kernels), [k.reason for k in kernels]
    builds = [("c", True), ("c", False), ("c++", True), ("c++", False)]
    for build, got in _host_outputs(plan, tmp_path, builds, all_int8_inputs).items():
        assert np.array_equal(got, want), f"{build}: {int((got != want).sum())} of 256 outputs differ"


def test_one_input_hidden_layers_get_the_affine_kernel(tflite_models):
    """The AutoMPG models' first layer (one input) is proved affine, per-tensor or per-channel."""
    for key in REAL:
        first = native.plan_kernels(quant.plan_from_model(tflite_models[key]))[0]
        assert first.kind == "affine16", (key, first.reason)


# --------------------------------------------------------------------------
# AVR: avr-gcc -Os -mmcu=atmega328p, simavr


@needs_avr
def test_avr_compiles_warning_free(tmp_path):
    """avr-gcc (C) and avr-g++ (C++), both kernels, every synthetic plan: -Wall -Wextra -Werror."""
    jobs = []
    with ThreadPoolExecutor(4) as pool:
        for i, name in enumerate(SYNTHETIC):
            model = _generate(_plan(name), tmp_path / f"m{i}")
            for lang, fast in itertools.product(("c", "c++"), (True, False)):
                jobs.append(pool.submit(harness.compile_avr_objects, model, model, fast=fast, lang=lang))
        for job in jobs:
            job.result()


AVR_SYNTHETIC = ["1-16-16-1 relu6 relu", "reference layer in the middle", "64-64-2 per-tensor", "wide window per-tensor",
                 "medium window 4 inputs", "huge biases", "positive shifts, big accumulators",
                 "3-8-4 per-channel zero points"]


@needs_avr
@pytest.mark.parametrize("name", AVR_SYNTHETIC)
def test_synthetic_plan_in_simavr_matches_evaluate_plan(name, tmp_path):
    plan = _plan(name)
    x = harness.input_rows(plan.n_inputs)
    want = quant.evaluate_plan(plan, x).astype(np.int64)
    model = _generate(plan, tmp_path / "model")
    for fast in (True, False):
        got, _ = harness.run_simavr(harness.compile_avr(model, tmp_path / f"avr{int(fast)}", x, fast=fast),
                                    plan.n_outputs)
        assert np.array_equal(got, want), f"fast={fast}: {int((got != want).sum())} outputs differ"


def test_avr_synthetic_plans_cover_the_fast_kernels():
    kinds = {k.kind for name in AVR_SYNTHETIC for k in native.plan_kernels(_plan(name))}
    assert kinds == ALL_KINDS


@needs_avr
@pytest.mark.parametrize("key", REAL)
def test_real_model_in_simavr_matches_tflite_micro(key, tflite_models, all_int8_inputs, tmp_path):
    path = tflite_models[key]
    plan = quant.plan_from_model(path)
    want = _oracle_int8(path, plan, all_int8_inputs)
    model = _generate(plan, tmp_path / "model")
    for fast in (True, False) if key in ("int8", "two_hidden") else (True,):
        elf = harness.compile_avr(model, tmp_path / f"avr{int(fast)}", all_int8_inputs, fast=fast)
        got, cycles = harness.run_simavr(elf, plan.n_outputs)
        assert np.array_equal(got, want), f"fast={fast}: {int((got != want).sum())} of 256 outputs differ"
        assert len(cycles) == 256 and cycles.min() > 0
