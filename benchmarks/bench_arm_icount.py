"""Native runtime on a Cortex-M4F in QEMU: instructions per inference.

The same models as bench_native_cycles.py (AutoMPG horsepower -> mpg, TF
tutorial split; 1->64->1 and 1->32->16->1; per-tensor and per-channel Dense),
the same generated ``tinyml_model.cpp``/``.h`` an Arduino gets, compiled by
arm-none-eabi-g++ ``-O2 -mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16
-mfloat-abi=hard`` and run bare-metal in ``qemu-system-arm -M mps2-an386
-icount shift=3`` (tests/arm_m4/: our startup, linker script and driver).

Under ``-icount`` QEMU advances its virtual clock by a fixed 8 ns per
instruction, so the SysTick timer (25 MHz processor clock) counts one tick
per 5 instructions; the driver calibrates that ratio with 4000 and 8000
``nop``s. Reported per model, for the fast kernels (``TINYML_FAST_KERNELS=1``,
what the boards run) and the reference port of TFLM (``=0``):

- instructions per inference: the mean over the 256 int8 inputs from one
  timed loop over all of them minus the same loop without the calls (exact to
  a fraction of an instruction), and the min/max of the inputs timed one by
  one (to within 5 instructions);
- flash (text + data) of ``tinyml_model.o``.

Instructions are not cycles: a Cortex-M4 takes 1 to ~12 cycles per
instruction (loads, branches, long multiplies), and QEMU does not model that.
Every run checks the outputs against ``quant.evaluate_plan`` (the arithmetic
of the TFLM that runs on boards).

    python benchmarks/bench_arm_icount.py [--epochs 300] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_native_cycles  # noqa: E402  (its training recipe, and tests/native_driver on sys.path)
import harness  # noqa: E402


def measure(name: str, variant: str, tflite: bytes, work: Path) -> dict:
    from ipytinyml import quant
    from ipytinyml.codegen import native

    plan = quant.plan_from_model(tflite)
    model_dir = work / "model"
    native.generate_native(plan, model_dir, model_hash="0" * 12)
    x = harness.input_rows(1)
    want = quant.evaluate_plan(plan, x).astype(np.int64)
    row = {"model": name, "variant": variant, "kernels": [k.kind for k in native.plan_kernels(plan)]}
    for fast in (True, False):
        run = harness.run_qemu_arm(harness.compile_arm(model_dir, work / f"arm{int(fast)}", x, fast=fast),
                                   plan.n_outputs)
        size = harness.arm_size(harness.compile_arm_objects(model_dir, work / f"arm{int(fast)}", fast=fast))
        row["fast" if fast else "reference"] = {
            "instructions_mean": float(run.mean_instructions),
            "instructions_min": int(run.instructions.min()), "instructions_max": int(run.instructions.max()),
            "instructions_per_tick": run.instructions_per_tick,
            "flash_object": size["text"] + size["data"], "ram": size["data"] + size["bss"],
            "mismatches": int((run.outputs != want).sum())}
    return row


def run(epochs: int = 300) -> dict:
    from ipytinyml.convert import convert

    rows = []
    for name, (model, train_x) in bench_native_cycles.train_models(epochs).items():
        for variant, options in (("per-tensor", {}), ("per-channel", {"per_channel": True})):
            tflite = convert(model, "int8", train_x, int8_io=True, **options)
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(measure(name, variant, tflite, Path(tmp)))
    exact = all(r[k]["mismatches"] == 0 for r in rows for k in ("fast", "reference"))
    gcc = harness._run(["arm-none-eabi-gcc", "--version"]).stdout.splitlines()[0]
    qemu = harness._run(["qemu-system-arm", "--version"]).stdout.splitlines()[0]
    return {"rows": rows, "exact": exact, "gcc": gcc, "qemu": qemu}


def report(result: dict) -> str:
    lines = [f"Native runtime, Cortex-M4F in QEMU mps2-an386 -icount ({result['gcc']}, -O2; {result['qemu']}), "
             "instructions per inference over the 256 int8 inputs",
             f"{'model':14s} {'Dense':11s} {'fast mean':>9s} {'min':>6s} {'max':>6s} {'reference':>9s} "
             f"{'speed-up':>8s} {'flash obj':>9s} {'ref flash':>9s} {'RAM':>4s}  kernels"]
    for r in result["rows"]:
        f, ref = r["fast"], r["reference"]
        lines.append(f"{r['model']:14s} {r['variant']:11s} {f['instructions_mean']:9.0f} {f['instructions_min']:6d} "
                     f"{f['instructions_max']:6d} {ref['instructions_mean']:9.0f} "
                     f"{ref['instructions_mean'] / f['instructions_mean']:7.1f}x {f['flash_object']:9d} "
                     f"{ref['flash_object']:9d} {f['ram']:4d}  {' '.join(r['kernels'])}")
    lines.append("bit-exact vs quant.evaluate_plan (both kernels, every input): "
                 + ("yes" if result["exact"] else "NO"))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300, help="training steps per model (default 300)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if not harness.have(*harness.ARM_TOOLS):
        print("needs " + ", ".join(harness.ARM_TOOLS)
              + " (Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)")
        return 1
    result = run(args.epochs)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
