"""LOGISTIC, TANH and SOFTMAX on the native runtime, checked with real compilers and simulators.

The generated C (firmware_templates/native, ``codegen.native``) is compiled by host gcc/g++
(C99 and C++11), avr-gcc/avr-g++ for the ATmega328P (run in simavr) and arm-none-eabi-g++ for a
Cortex-M4F (run in QEMU), all with ``-Wall -Wextra -Werror -Wshadow``, both kernels
(``TINYML_FAST_KERNELS`` 1 and 0), and must give exactly:

* for each op alone (an identity Dense layer in front, so every int8 value reaches the op):
  what tflite-micro computes on a real converted model of that op, for all 256 inputs of
  LOGISTIC and TANH and for random and edge rows of SOFTMAX (2, 3 and 10 classes);
* for real trained models (tests/activation_models.py: a 7->32->3 softmax classifier, a
  sigmoid binary classifier, a tanh hidden layer, sigmoid+tanh hidden layers with a softmax
  output): ``quant.evaluate_plan``, which tests/test_activations.py checks against
  tflite-micro (and, for SOFTMAX, against CMSIS-NN's arm_softmax_s8 that the boards run).

Cycle counts are reported by benchmarks/bench_native_cycles.py, not asserted here.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ipytinyml import quant as Q
from ipytinyml.codegen import native
from ipytinyml.quant import DenseLayer, ModelPlan
from ipytinyml.tflite_file import read_tflite

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "native_driver"))
import activation_models as AM  # noqa: E402
import harness  # noqa: E402
from test_activations import _op_layer, _softmax_rows  # noqa: E402
from test_prestage_board import sim_harness  # noqa: E402,F401  (fixture: the simavr harness)
from test_quant import _run_micro  # noqa: E402

needs_gcc = pytest.mark.skipif(not harness.have("gcc", "g++"), reason="host gcc/g++ not installed")
needs_avr = pytest.mark.skipif(not harness.have("avr-gcc", "avr-g++", "simavr", "avr-size"),
                               reason="avr-gcc, avr-g++, avr-size or simavr not installed")
needs_arm = pytest.mark.skipif(not harness.have(*harness.ARM_TOOLS),
                               reason="arm-none-eabi-gcc/g++/size or qemu-system-arm not installed")
HASH = "0123456789ab"

OPS = {  # name -> (activation, classes, calibration range)
    "logistic": ("sigmoid", 1, (-4, 4)),
    "logistic_wide": ("sigmoid", 1, (-20, 20)),
    "tanh": ("tanh", 1, (-4, 4)),
    "tanh_narrow": ("tanh", 1, (-1, 1)),
    "softmax2": ("softmax", 2, (-10, 10)),
    "softmax3": ("softmax", 3, (-4, 4)),
    "softmax10": ("softmax", 10, (-4, 4)),
    "softmax3_coarse": ("softmax", 3, (-40, 40)),  # diff_min cuts in
}


def op_case(name: str) -> tuple[ModelPlan, np.ndarray, np.ndarray]:
    """(plan: identity Dense + the op, int8 rows, tflite-micro's outputs for them)."""
    activation, n, (lo, hi) = OPS[name]
    data = AM.op_alone(activation, n, lo, hi)
    model = read_tflite(data)
    tq = Q._per_tensor_quant(model.tensors[model.operators[0].inputs[0]], "input")
    post = _op_layer(data)
    identity = DenseLayer(
        weights=np.eye(n, dtype=np.int8), bias=np.zeros(n, np.int32), input_offset=-tq.zero_point,
        output_offset=tq.zero_point, output_multiplier=np.full(n, 1 << 30, np.int32),
        output_shift=np.ones(n, np.int32), activation_min=-128, activation_max=127, activation="NONE",
        per_channel=False, post=post)
    plan = ModelPlan(layers=(identity,), input=tq, output=post.output, float_input=False, float_output=False)
    x = np.arange(-128, 128).reshape(-1, 1) if n == 1 else _softmax_rows(n, seed=n)
    want = _run_micro(data, x).astype(np.int64)
    assert np.array_equal(Q.fully_connected(replace(identity, post=None), x), x)  # the Dense is the identity
    assert np.array_equal(Q.evaluate_plan(plan, x).astype(np.int64), want)
    return plan, x.astype(np.int64), want


def _host(plan, x, tmp: Path, builds=(("c", True), ("c", False), ("c++", True), ("c++", False))):
    native.generate_native(plan, tmp / "model", model_hash=HASH)
    out = {}
    for lang, fast in builds:
        exe = harness.compile_host(tmp / "model", tmp / f"host_{lang.replace('+', 'p')}_{int(fast)}",
                                   lang=lang, fast=fast)
        out[(lang, fast)] = harness.run_host(exe, x)
    return out


# ---------------------------------------------------------------------------
# each op alone


@needs_gcc
@pytest.mark.parametrize("name", list(OPS))
def test_each_op_on_the_host_matches_tflite_micro(name, tmp_path):
    plan, x, want = op_case(name)
    for build, got in _host(plan, x, tmp_path).items():
        assert np.array_equal(got, want), f"{build}: {(got != want).sum()} outputs differ"


def _assert_in_simavr(plan, x, want, tmp_path, builds, *, timeout: float) -> list:
    """The generated model built with each kernel choice in ``builds`` (in parallel) gives
    exactly ``want`` in simavr; returns (fast, cycles) per build."""
    native.generate_native(plan, tmp_path / "model", model_hash=HASH)
    with ThreadPoolExecutor(2) as pool:
        elfs = list(pool.map(lambda fast: harness.compile_avr(tmp_path / "model", tmp_path / f"avr{int(fast)}", x,
                                                              fast=fast), builds))
    runs = []
    for fast, elf in zip(builds, elfs):
        got, cycles = harness.run_simavr(elf, plan.n_outputs, timeout=timeout)
        assert np.array_equal(got, want), f"fast={fast}: {(got != want).sum()} outputs differ"
        runs.append((fast, cycles))
    return runs


@needs_avr
@pytest.mark.parametrize("name", ["logistic", "tanh", "softmax3", "softmax10", "softmax3_coarse"])
def test_each_op_in_simavr_matches_tflite_micro(name, tmp_path):
    plan, x, want = op_case(name)
    for fast, cycles in _assert_in_simavr(plan, x, want, tmp_path, (True, False), timeout=600):
        assert cycles.min() > 0


def _assert_on_cortex_m4(plan, x, want, tmp_path) -> None:
    """Both kernel builds of the generated model, run in QEMU, give exactly ``want``."""
    native.generate_native(plan, tmp_path / "model", model_hash=HASH)
    for fast in (True, False):
        run = harness.run_qemu_arm(harness.compile_arm(tmp_path / "model", tmp_path / f"arm{int(fast)}", x,
                                                       fast=fast), plan.n_outputs)
        assert np.array_equal(run.outputs, want), f"fast={fast}: {(run.outputs != want).sum()} outputs differ"


@needs_arm
@pytest.mark.parametrize("name", ["logistic", "tanh", "softmax3", "softmax10", "softmax3_coarse"])
def test_each_op_on_cortex_m4_matches_tflite_micro(name, tmp_path):
    plan, x, want = op_case(name)
    _assert_on_cortex_m4(plan, x, want, tmp_path)


# ---------------------------------------------------------------------------
# real models


def _real(name: str):
    plan = Q.plan_from_model(AM.tflite(name, True))
    x = AM.test_rows(AM.N_FEATURES)
    want = Q.evaluate_plan(plan, x).astype(np.int64)
    # float and int8 I/O models share the int8 arithmetic
    assert np.array_equal(Q.evaluate_plan(Q.plan_from_model(AM.tflite(name)), x), want)
    return plan, x, want


@needs_gcc
@pytest.mark.parametrize("name", list(AM.RECIPES))
def test_real_models_on_the_host(name, tmp_path):
    plan, x, want = _real(name)
    assert len(np.unique(want)) > 20
    for build, got in _host(plan, x, tmp_path).items():
        assert np.array_equal(got, want), f"{build}: {(got != want).sum()} outputs differ"


@needs_avr
@pytest.mark.parametrize("name", list(AM.RECIPES))
def test_real_models_in_simavr(name, tmp_path):
    """Fast kernels (the AVR default) on every model, the reference port on the classifier too;
    no table or constant lands in RAM (data section empty: PROGMEM)."""
    plan, x, want = _real(name)
    builds = (True, False) if name == "softmax" else (True,)
    for fast, _ in _assert_in_simavr(plan, x, want, tmp_path, builds, timeout=900):
        size = harness.avr_size(harness.compile_avr_objects(tmp_path / "model", tmp_path, fast=fast))
        assert size["data"] == 0 and size["bss"] == sum(native._buffers(plan))


@needs_arm
@pytest.mark.parametrize("name", list(AM.RECIPES))
def test_real_models_on_cortex_m4(name, tmp_path):
    plan, x, want = _real(name)
    _assert_on_cortex_m4(plan, x, want, tmp_path)


# ---------------------------------------------------------------------------
# the pieces, and negative controls


@needs_gcc
def test_fast_softmax_reciprocal_equals_the_reference_port(tmp_path):
    """tinyml_one_over_one_plus_x_fast (32-bit partial products) against the int64 port of
    gemmlowp's, on every sum a row of up to 10 classes produces, and tinyml_srdhm_no_min on 4M
    pairs; with TINYML_BEND=1 (a neighbouring input) the same check must find differences."""
    plan, _, _ = _real("softmax")
    native.generate_native(plan, tmp_path / "model", model_hash=HASH)
    counts = []
    for bend in (0, 1):
        exe = tmp_path / f"recip{bend}"
        harness._run(["gcc", "-std=c99", "-pedantic", "-O2", *harness.WARNINGS, f"-DTINYML_BEND={bend}",
                      "-I", tmp_path / "model", HERE / "native_driver" / "softmax_reciprocal.c", "-o", exe])
        words = harness._run([exe], timeout=120).stdout.split()
        counts.append((int(words[1]), int(words[3])))
    assert counts[0][0] > 8_000_000 and counts[0][1] == 0
    assert counts[1][1] > 1000


@needs_gcc
def test_a_wrong_table_or_softmax_parameter_is_caught(tmp_path):
    """The comparison can fail: C generated from a plan with the LOGISTIC multiplier or the
    SOFTMAX diff_min bent differs from the true plan."""
    for name, bend in (("logistic", lambda p: replace(p, input_multiplier=p.input_multiplier + (1 << 24))),
                       ("softmax3", lambda p: replace(p, diff_min=-20))):
        plan, x, want = op_case(name)
        layer = plan.layers[0]
        bent = replace(plan, layers=(replace(layer, post=bend(layer.post)),))
        got = _host(bent, x, tmp_path / name, builds=(("c", True), ("c", False)))
        for build, out in got.items():
            assert (out != want).sum() > 0, build


def test_tables_and_next_layer_input_range():
    """A hidden LOGISTIC/TANH: its 256-entry table goes to flash, and the next layer's fast
    kernel takes its input range from the table's reachable outputs."""
    plan, _, _ = _real("mixed")
    files = native.render_native(plan, model_hash=HASH)
    cpp = files["tinyml_model.cpp"]
    assert "static const int8_t tinyml_l0_logistic[256] TINYML_IN_FLASH" in cpp
    assert "static const int8_t tinyml_l1_tanh[256] TINYML_IN_FLASH" in cpp
    assert "tinyml_softmax_fast(output, TINYML_L2_N_OUT, tinyml_l2_softmax_exp" in cpp
    kernels = native.plan_kernels(plan)
    lo, hi = native.result_range(plan.layers[0])
    assert kernels[1].x_min == lo and -128 <= lo < hi <= 127
    table = plan.layers[0].post.table()
    assert (lo, hi) == (int(table.min()), int(table.max()))


# ---------------------------------------------------------------------------
# the whole Uno sketch


@needs_avr
def test_classifier_sketch_on_the_virtual_uno(tmp_path, sim_harness):
    """The 7->32->3 softmax classifier's generated Uno sketch (protocol included), built with
    the Arduino AVR core warning-free and run on the virtual Uno: raw int8 requests answer
    quant's outputs; the flash it takes stays within the fit estimate."""
    from fake_model import avr_uno
    from ipytinyml.codegen.fit import native_footprint
    from ipytinyml.codegen.sketch import render_native_sketch
    from ipytinyml.toolchain.avr_build import section_sizes
    from test_prestage_board import _serve

    if not avr_uno.available():
        pytest.skip("needs avr-gcc and arduino-core-avr")
    plan, x, want = _real("softmax")
    sketch = render_native_sketch(plan, tmp_path / "fw", sketch_name="tinyml_cls", board_name="uno",
                                  model_hash=HASH, input_label="f", output_label="p")
    core = avr_uno.build_core(tmp_path / "core")
    elf, warnings = avr_uno.build_sketch(sketch, tmp_path / "build", core)
    assert warnings.strip() == "", warnings
    rows = x[:300]
    got = _serve(elf, sim_harness, [f"!{i + 1} r {' '.join(map(str, r))}".encode() for i, r in enumerate(rows)])
    assert got[0].startswith("#tinyml ready proto=2 runtime=native board=uno")
    answers = [[int(v) for v in line.split()[2:2 + plan.n_outputs]] for line in got[1:]]
    assert all(line.split()[:2] == [f"@{i + 1}", "ok"] for i, line in enumerate(got[1:]))
    assert np.array_equal(np.asarray(answers), want[:300])
    sizes = section_sizes(elf)
    flash, _ = native_footprint(plan)
    used = sizes[".text"] + sizes.get(".data", 0)
    print(f"classifier sketch: {used} B flash, estimate {flash} B")
    assert used <= flash + 1024, (sizes, flash)
