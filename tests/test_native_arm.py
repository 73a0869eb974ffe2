"""The native runtime on a 32-bit ARM core: Cortex-M4F, bare metal, in QEMU.

Real parts: the very ``tinyml_model.cpp``/``.h`` an Arduino gets, generated
from real AutoMPG models (trained and converted by the real pipeline in
conftest.py), compiled by Debian's arm-none-eabi-g++ for
``-mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard`` with
``-Wall -Wextra -Werror``, linked with our own startup code and linker script
(tests/arm_m4/) and run in ``qemu-system-arm -M mps2-an386`` with
semihosting. Every int8 input and the whole test set must give exactly what
``quant.evaluate_plan`` computes, i.e. the arithmetic of the TFLM that runs on
boards (per-tensor ``s_in * s_w`` in float32, see tests/test_quant.py).

The fast kernels are the ones boards get with ``TINYML_FAST_KERNELS=1``
(default on AVR); the reference port (``=0``, the default on ARM) is run too.
Instruction counts (QEMU ``-icount``) are reported by
``benchmarks/bench_arm_icount.py``, not asserted here beyond being counted.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ipytinyml import quant
from ipytinyml.codegen import native

sys.path.insert(0, str(Path(__file__).resolve().parent / "native_driver"))
import harness  # noqa: E402

needs_arm = pytest.mark.skipif(not harness.have(*harness.ARM_TOOLS),
                               reason="arm-none-eabi-gcc/g++/size or qemu-system-arm not installed "
                                      "(Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)")
HASH = "0123456789ab"


def _inputs(plan, autompg_split) -> np.ndarray:
    """The 256 int8 inputs, then the test set quantized as the protocol does (QUANTIZE)."""
    test_x = autompg_split[2]
    rows = np.concatenate([np.arange(-128, 128).reshape(-1, 1),
                           quant.quantize(test_x, plan.input).astype(np.int64)])
    assert rows.shape == (256 + len(test_x), 1) and len(test_x) > 50
    return rows


@needs_arm
@pytest.mark.parametrize("key", ["int8", "int8_pc_io", "two_hidden"])
def test_real_model_on_cortex_m4_matches_the_boards_tflm(key, tflite_models, autompg_split, tmp_path):
    """1->64->1 per-tensor and per-channel, 1->32->16->1: fast kernels (and, for the per-tensor
    model, the reference port too) bit-exact on every int8 input and every test-set row."""
    plan = quant.plan_from_model(tflite_models[key])
    kernels = native.plan_kernels(plan)
    assert all(k.fast for k in kernels), [k.reason for k in kernels]
    x = _inputs(plan, autompg_split)
    want = quant.evaluate_plan(plan, x).astype(np.int64)
    assert len(np.unique(want)) > 20  # the outputs are not all one value
    model = tmp_path / "model"
    native.generate_native(plan, model, model_hash=HASH)
    builds = (True, False) if key == "int8" else (True,)
    with ThreadPoolExecutor(2) as pool:
        elfs = list(pool.map(lambda fast: harness.compile_arm(model, tmp_path / f"arm{int(fast)}", x, fast=fast),
                             builds))
    for fast, elf in zip(builds, elfs):
        run = harness.run_qemu_arm(elf, plan.n_outputs)
        assert run.outputs.shape == want.shape
        bad = int((run.outputs != want).sum())
        assert bad == 0, f"fast={fast}: {bad} of {len(want)} outputs differ"
        assert run.instructions_per_tick == 5.0  # -icount shift=3 against SysTick's 25 MHz clock
        assert run.instructions.min() > 100 and 100 < run.mean_instructions < 100_000


@needs_arm
def test_every_fast_kernel_kind_on_cortex_m4(tmp_path):
    """The synthetic plans the AVR test runs (together they use every kernel kind: affine16,
    window16/24/32, reference) compiled for the Cortex-M4F, fast kernels, run in QEMU."""
    from test_codegen_native import AVR_SYNTHETIC, _plan

    kinds = {k.kind for name in AVR_SYNTHETIC for k in native.plan_kernels(_plan(name))}
    assert kinds == {"affine16", "window16", "window24", "window32", "reference"}

    def one(i_name):
        i, name = i_name
        plan = _plan(name)
        x = harness.input_rows(plan.n_inputs)
        model = tmp_path / f"m{i}"
        native.generate_native(plan, model, model_hash=HASH)
        run = harness.run_qemu_arm(harness.compile_arm(model, tmp_path / f"arm{i}", x), plan.n_outputs)
        return name, int((run.outputs != quant.evaluate_plan(plan, x).astype(np.int64)).sum())

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, enumerate(AVR_SYNTHETIC)))
    assert [r for r in results if r[1]] == []


@needs_arm
def test_a_wrong_answer_is_caught(tflite_models, tmp_path):
    """The comparison can fail: a model file with one multiplier changed by one gives
    different outputs in QEMU than the plan it was generated from."""
    plan = quant.plan_from_model(tflite_models["int8"])
    last = plan.layers[-1]
    bent = replace(plan, layers=plan.layers[:-1] + (replace(
        last, output_multiplier=last.output_multiplier + np.int32(1 << 22)),))
    x = harness.input_rows(1)
    native.generate_native(bent, tmp_path / "model", model_hash=HASH)
    run = harness.run_qemu_arm(harness.compile_arm(tmp_path / "model", tmp_path / "arm", x), plan.n_outputs)
    assert int((run.outputs != quant.evaluate_plan(plan, x).astype(np.int64)).sum()) > 0


@needs_arm
def test_protocol_on_cortex_m4_over_uart(tflite_models, autompg_split, tmp_path):
    """The shared protocol (firmware_templates/common/tinyml_protocol.cpp, through the port seam's
    non-Arduino branch, implemented on the mps2-an386's UART0 in tests/arm_m4/arm_port.c) with the
    real per-tensor AutoMPG model, in QEMU with UART0 on a pty, driven by ipytinyml's own Link:
    the banner and info describe the model; all 256 int8 inputs (``r``) and the test set as
    decimals parsed and QUANTIZEd on the ARM core (``p``) match quant bit for bit."""
    from ipytinyml.link import Link

    plan = quant.plan_from_model(tflite_models["int8"])
    model = tmp_path / "model"
    native.generate_native(plan, model, model_hash=HASH)
    elf = harness.compile_arm_protocol(model, tmp_path / "fw")
    with harness.QemuArmBoard(elf) as board, Link(board.port, timeout=10) as link:
        info = link.info()
        assert (info.runtime, info.board, info.model, info.n_in, info.n_out) == (
            "native", "mps2-an386", HASH, 1, 1)
        assert (info.input_scale, info.input_zero_point) == (plan.input.scale, plan.input.zero_point)
        assert (info.output_scale, info.output_zero_point) == (plan.output.scale, plan.output.zero_point)

        raw = np.arange(-128, 128).reshape(-1, 1)
        got = np.asarray(link.predict_raw(raw.ravel().tolist()).raw, dtype=np.int64)
        assert np.array_equal(got, quant.evaluate_plan(plan, raw).astype(np.int64))

        test_x = autompg_split[2]
        result = link.predict(test_x.ravel().tolist())
        want = quant.evaluate_plan(plan, quant.quantize(test_x, plan.input)).astype(np.int64)
        assert np.array_equal(np.asarray(result.raw, dtype=np.int64), want)
        assert np.array_equal(np.asarray(result.outputs, dtype=np.float32),
                              quant.dequantize(want, plan.output))
        assert result.timing.device_us > 0
