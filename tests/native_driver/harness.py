"""Build and run the generated native runtime with real compilers (tests and benchmarks).

- host: gcc/g++ with ``-Wall -Wextra -Werror``, driven over stdin/stdout
  (``host_driver.c``);
- AVR: avr-gcc/avr-g++ ``-Os -mmcu=atmega328p`` (what the Arduino AVR core
  uses), run in simavr with the inputs compiled in (``avr_driver.c``), which
  also reports Timer1 cycles per inference.

``TINYML_FAST_KERNELS`` picks the kernel: 1 = the generator's fast paths, 0 =
the reference port of TFLM.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WARNINGS = ["-Wall", "-Wextra", "-Werror", "-Wshadow"]
HOST_STD = {"c": ["-x", "c", "-std=c99", "-pedantic"], "c++": ["-x", "c++", "-std=c++11", "-pedantic"]}
AVR_CFLAGS = ["-Os", "-mmcu=atmega328p", "-DF_CPU=16000000UL", "-ffunction-sections", "-fdata-sections"]
AVR_LDFLAGS = ["-mmcu=atmega328p", "-Wl,--gc-sections"]
SIMAVR = ["simavr", "-m", "atmega328p", "-f", "16000000"]


def have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def compile_host(model_dir: Path, out: Path, *, lang: str = "c", fast: bool = True,
                 driver: Path = HERE / "host_driver.c", extra: tuple[str, ...] = ()) -> Path:
    """Host executable of ``driver`` + the generated ``tinyml_model.cpp`` (compiled as ``lang``)."""
    compiler = "gcc" if lang == "c" else "g++"
    std = HOST_STD[lang]
    _run([compiler, *std, "-O2", *WARNINGS, f"-DTINYML_FAST_KERNELS={int(fast)}", "-I", model_dir,
          *extra, model_dir / "tinyml_model.cpp", *std, driver, "-o", out])
    return out


def run_host(exe: Path, x: np.ndarray) -> np.ndarray:
    """Run the host driver on int8 rows ``x`` [n, n_inputs]; int8 outputs [n, n_outputs]."""
    x = np.asarray(x, dtype=np.int64)
    text = "\n".join(" ".join(map(str, row)) for row in x) + "\n"
    result = _run([exe], input=text, timeout=60)
    rows = [list(map(int, line.split())) for line in result.stdout.splitlines() if line.strip()]
    return np.asarray(rows, dtype=np.int64).reshape(len(x), -1)


def write_vectors(path: Path, x: np.ndarray) -> None:
    """``test_vectors.h`` for the AVR driver: the int8 rows in flash."""
    x = np.asarray(x, dtype=np.int64)
    values = ", ".join(str(int(v)) for v in x.ravel())
    path.write_text("#include <avr/pgmspace.h>\n#include <stdint.h>\n"
                    f"#define TINYML_TEST_N {len(x)}\n"
                    f"static const int8_t tinyml_test_inputs[] PROGMEM = {{{values}}};\n")


def compile_avr_objects(model_dir: Path, out_dir: Path, *, fast: bool = True, lang: str = "c++") -> Path:
    """``tinyml_model.o`` for the ATmega328P; Arduino compiles .cpp files as C++."""
    obj = out_dir / f"tinyml_model_{lang.replace('+', 'p')}_{int(fast)}.o"
    compiler = "avr-g++" if lang == "c++" else "avr-gcc"
    std = ["-x", "c++", "-std=gnu++11"] if lang == "c++" else ["-x", "c", "-std=gnu99"]
    _run([compiler, *std, *AVR_CFLAGS, *WARNINGS, f"-DTINYML_FAST_KERNELS={int(fast)}", "-I", model_dir,
          "-c", model_dir / "tinyml_model.cpp", "-o", obj])
    return obj


def compile_avr(model_dir: Path, out_dir: Path, x: np.ndarray, *, fast: bool = True) -> Path:
    """ELF of the simavr driver running the model on the rows ``x``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_vectors(out_dir / "test_vectors.h", x)
    model_obj = compile_avr_objects(model_dir, out_dir, fast=fast)
    driver_obj = out_dir / "avr_driver.o"
    _run(["avr-gcc", "-std=gnu99", *AVR_CFLAGS, *WARNINGS, "-I", model_dir, "-I", out_dir,
          "-c", HERE / "avr_driver.c", "-o", driver_obj])
    elf = out_dir / f"driver_{int(fast)}.elf"
    _run(["avr-gcc", *AVR_LDFLAGS, model_obj, driver_obj, "-o", elf])
    return elf


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_simavr(elf: Path, n_outputs: int, *, timeout: float = 120) -> tuple[np.ndarray, np.ndarray]:
    """Run the AVR driver in simavr: (int8 outputs [n, n_outputs], cycles per inference [n])."""
    result = subprocess.run([*SIMAVR, str(elf)], capture_output=True, timeout=timeout)
    # simavr prints each UART line (to stderr) wrapped in colour codes, '\n' shown as '.'
    text = _ANSI.sub("", result.stderr.decode("ascii", "replace") + result.stdout.decode("ascii", "replace"))
    lines = [line.strip().rstrip(".") for line in text.splitlines()]
    if "done" not in lines:
        raise AssertionError(f"simavr run of {elf.name} did not finish:\n{text[-2000:]}")
    errors = [line for line in lines if line.startswith("e ")]
    if errors:
        raise AssertionError(f"tinyml_model_invoke failed in simavr: {errors[:3]}")
    rows = [list(map(int, line.split()[1:])) for line in lines if line.startswith("v ")]
    data = np.asarray(rows, dtype=np.int64)
    return data[:, :n_outputs], data[:, n_outputs]


def avr_size(obj: Path) -> dict[str, int]:
    """text/data/bss bytes of an AVR object or ELF (avr-size, Berkeley format)."""
    out = _run(["avr-size", "-B", obj]).stdout.splitlines()
    text, data, bss = (int(v) for v in out[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}


def input_rows(n_inputs: int, seed: int = 0, extra: int = 0) -> np.ndarray:
    """Every int8 value at every input position (row v holds (v + 37*d) mod 256 - 128 at
    input d), plus ``extra`` random rows. For one input: the 256 values in order."""
    v = np.arange(256)[:, None]
    d = np.arange(n_inputs)[None, :]
    rows = (v + 37 * d) % 256 - 128
    if extra:
        rng = np.random.default_rng(seed)
        rows = np.concatenate([rows, rng.integers(-128, 128, size=(extra, n_inputs))])
    return rows.astype(np.int64)


# --------------------------------------------------------------------------
# Cortex-M4F: arm-none-eabi-gcc, bare metal in QEMU's mps2-an386 (tests/arm_m4/)

ARM_DIR = HERE.parent / "arm_m4"
ARM_CPU = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"]
ARM_CFLAGS = [*ARM_CPU, "-O2", "-ffunction-sections", "-fdata-sections", "-ffreestanding"]
ARM_CXXFLAGS = ["-x", "c++", "-std=gnu++11", "-fno-exceptions", "-fno-rtti"]
ARM_TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-g++", "arm-none-eabi-size", "qemu-system-arm")
# -icount shift=3: every instruction advances QEMU's virtual clock by exactly 8 ns
QEMU_ARM = ["qemu-system-arm", "-M", "mps2-an386", "-cpu", "cortex-m4", "-icount", "shift=3",
            "-display", "none", "-monitor", "none", "-serial", "none", "-semihosting"]


def write_arm_vectors(path: Path, x: np.ndarray) -> None:
    """``test_vectors.h`` for the ARM driver: the int8 rows as a const array (in flash)."""
    x = np.asarray(x, dtype=np.int64)
    values = ", ".join(str(int(v)) for v in x.ravel())
    path.write_text("#include <stdint.h>\n"
                    f"#define TINYML_TEST_N {len(x)}u\n"
                    f"static const int8_t tinyml_test_inputs[] = {{{values}}};\n")


def compile_arm_objects(model_dir: Path, out_dir: Path, *, fast: bool = True) -> Path:
    """``tinyml_model.o`` for the Cortex-M4F, compiled as C++ (as Arduino compiles .cpp files)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    obj = out_dir / f"tinyml_model_arm_{int(fast)}.o"
    _run(["arm-none-eabi-g++", *ARM_CXXFLAGS, *ARM_CFLAGS, *WARNINGS, f"-DTINYML_FAST_KERNELS={int(fast)}",
          "-I", model_dir, "-c", model_dir / "tinyml_model.cpp", "-o", obj])
    return obj


def link_arm(objects: list[Path], elf: Path) -> Path:
    """Link with the startup code and linker script of tests/arm_m4 (newlib-nano libc, libgcc)."""
    startup = elf.parent / "startup.o"
    _run(["arm-none-eabi-gcc", "-std=gnu99", *ARM_CFLAGS, *WARNINGS, "-I", ARM_DIR,
          "-c", ARM_DIR / "startup.c", "-o", startup])
    _run(["arm-none-eabi-gcc", *ARM_CPU, "-nostartfiles", "--specs=nano.specs", "-T", ARM_DIR / "mps2_an386.ld",
          "-Wl,--gc-sections", "-Wl,--fatal-warnings", startup, *objects, "-lgcc", "-o", elf])
    return elf


def compile_arm(model_dir: Path, out_dir: Path, x: np.ndarray, *, fast: bool = True) -> Path:
    """ELF of the QEMU driver (arm_driver.c) running the model on the rows ``x``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_arm_vectors(out_dir / "test_vectors.h", x)
    model_obj = compile_arm_objects(model_dir, out_dir, fast=fast)
    driver_obj = out_dir / "arm_driver.o"
    _run(["arm-none-eabi-gcc", "-std=gnu99", *ARM_CFLAGS, *WARNINGS, "-I", model_dir, "-I", out_dir,
          "-I", ARM_DIR, "-c", ARM_DIR / "arm_driver.c", "-o", driver_obj])
    return link_arm([model_obj, driver_obj], out_dir / f"driver_arm_{int(fast)}.elf")


@dataclass(frozen=True)
class ArmRun:
    outputs: np.ndarray  # int8 outputs [n, n_outputs]
    instructions: np.ndarray  # instructions per inference [n] (to within one SysTick period)
    mean_instructions: float  # from one timed loop over all n inputs, loop overhead subtracted
    instructions_per_tick: float


def run_qemu_arm(elf: Path, n_outputs: int, *, timeout: float = 60) -> ArmRun:
    """Run the ARM driver in QEMU: outputs and instructions per inference (-icount)."""
    result = subprocess.run([*QEMU_ARM, "-kernel", str(elf)], capture_output=True, timeout=timeout)
    text = result.stdout.decode("ascii", "replace") + result.stderr.decode("ascii", "replace")
    lines = [line.strip() for line in text.splitlines()]
    if result.returncode != 0 or "done" not in lines:
        raise AssertionError(f"QEMU run of {elf.name} failed ({result.returncode}):\n{text[-2000:]}")
    fields = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in lines
              if line.split() and line.split()[0] in ("cal", "sweep")}
    empty, nops4000, nops8000 = fields["cal"]
    per_tick = 4000 / (nops8000 - nops4000)  # the call's own instructions cancel
    rows = np.asarray([[int(v) for v in line.split()[1:]] for line in lines if line.startswith("v ")],
                      dtype=np.int64)
    total, baseline = fields["sweep"]
    return ArmRun(outputs=rows[:, :n_outputs],
                  instructions=np.round((rows[:, n_outputs] - empty) * per_tick).astype(np.int64),
                  mean_instructions=(total - baseline) * per_tick / len(rows),
                  instructions_per_tick=per_tick)


def arm_size(path: Path) -> dict[str, int]:
    """text/data/bss bytes of an ARM object or ELF (arm-none-eabi-size, Berkeley format)."""
    out = _run(["arm-none-eabi-size", "-B", path]).stdout.splitlines()
    text, data, bss = (int(v) for v in out[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}


COMMON = HERE.parents[1] / "firmware_templates" / "common"


def compile_arm_protocol(model_dir: Path, out_dir: Path, *, fast: bool = True) -> Path:
    """ELF of the protocol firmware for the Cortex-M4F: firmware_templates/common/tinyml_protocol.cpp
    (the file every sketch gets, through its non-Arduino port seam) + the generated model, with
    tests/arm_m4's UART0 port, startup and linker script."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model_obj = compile_arm_objects(model_dir, out_dir, fast=fast)
    include = ["-I", model_dir, "-I", COMMON, "-I", ARM_DIR]
    objects = [model_obj]
    for src, lang in ((COMMON / "tinyml_protocol.cpp", "c++"), (ARM_DIR / "arm_port.c", "c"),
                      (ARM_DIR / "protocol_main.c", "c")):
        obj = out_dir / (src.stem + ".o")
        std = ARM_CXXFLAGS if lang == "c++" else ["-std=gnu99"]
        compiler = "arm-none-eabi-g++" if lang == "c++" else "arm-none-eabi-gcc"
        _run([compiler, *std, *ARM_CFLAGS, *WARNINGS, *include, "-c", src, "-o", obj])
        objects.append(obj)
    return link_arm(objects, out_dir / f"protocol_arm_{int(fast)}.elf")


class QemuArmBoard:
    """QEMU running an ARM ELF with UART0 on a pseudo-terminal: ``.port`` is its path.
    A context manager; the QEMU process is ended on exit."""

    def __init__(self, elf: Path, *, timeout: float = 20):
        import select
        import time

        self.process = subprocess.Popen(
            [*QEMU_ARM[:QEMU_ARM.index("-serial")], *QEMU_ARM[QEMU_ARM.index("-serial") + 2:],
             "-chardev", "pty,id=uart0", "-serial", "chardev:uart0", "-kernel", str(elf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        text = b""
        self.port = None
        while self.port is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                chunk = self.process.stdout.read1(4096) if hasattr(self.process.stdout, "read1") else b""
                if not chunk:
                    break
                text += chunk
                m = re.search(rb"(/dev/pts/\d+)", text)
                if m:
                    self.port = m.group(1).decode()
        if self.port is None:
            self.close()
            raise AssertionError(f"QEMU did not report its pty: {text.decode('ascii', 'replace')[-1000:]}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()

    def __enter__(self) -> "QemuArmBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
