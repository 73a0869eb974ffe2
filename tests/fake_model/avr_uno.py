"""Build a sketch for arduino:avr:uno with avr-gcc directly (test helper).

Mirrors the compile and link recipes of the Arduino AVR core's platform.txt
(Debian's arduino-core-avr): the same flags (-Os, -flto, --gc-sections), the
core compiled once into an archive, ``.ino`` files compiled as C++ after an
``#include <Arduino.h>``. It exists so the protocol tests do not depend on the
toolchain package; ``ipytinyml.toolchain`` is the product's build path.
"""
from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
from pathlib import Path

AVR_ROOT = Path("/usr/share/arduino/hardware/arduino/avr")
CORE = AVR_ROOT / "cores" / "arduino"
VARIANT = AVR_ROOT / "variants" / "standard"

COMMON = [
    "-mmcu=atmega328p", "-DF_CPU=16000000L", "-DARDUINO=10813",
    "-DARDUINO_AVR_UNO", "-DARDUINO_ARCH_AVR", f"-I{CORE}", f"-I{VARIANT}",
]
CXXFLAGS = ["-c", "-g", "-Os", "-std=gnu++11", "-fpermissive", "-fno-exceptions",
            "-ffunction-sections", "-fdata-sections", "-fno-threadsafe-statics",
            "-Wno-error=narrowing", "-flto"]
CFLAGS = ["-c", "-g", "-Os", "-std=gnu11", "-ffunction-sections", "-fdata-sections",
          "-flto", "-fno-fat-lto-objects"]
SFLAGS = ["-c", "-g", "-x", "assembler-with-cpp", "-flto"]
LDFLAGS = ["-Os", "-g", "-flto", "-fuse-linker-plugin", "-Wl,--gc-sections", "-mmcu=atmega328p"]


def available() -> bool:
    return bool(shutil.which("avr-g++") and shutil.which("avr-size") and CORE.is_dir())


def _compile(src: Path, obj: Path, extra: list[str]) -> str:
    if src.suffix == ".c":
        cmd = ["avr-gcc", *CFLAGS]
    elif src.suffix == ".S":
        cmd = ["avr-gcc", *SFLAGS]
    else:
        cmd = ["avr-g++", *CXXFLAGS]
    cmd += [*COMMON, *extra, str(src), "-o", str(obj)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}\n{r.stderr}")
    return r.stderr


def build_core(build_dir: Path) -> Path:
    """Compile the Arduino core once into ``build_dir/core.a``."""
    build_dir.mkdir(parents=True, exist_ok=True)
    archive = build_dir / "core.a"
    if archive.exists():
        return archive
    sources = sorted(p for p in CORE.iterdir() if p.suffix in (".c", ".cpp", ".S"))
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        objs = list(pool.map(lambda s: _obj(s, build_dir), sources))
    tmp = build_dir / "core.a.tmp"
    subprocess.run(["avr-gcc-ar", "rcs", str(tmp), *map(str, objs)], check=True)
    tmp.rename(archive)
    return archive


def _obj(src: Path, build_dir: Path) -> Path:
    obj = build_dir / (src.name + ".o")
    # Debian's core 1.8.7 uses DECIMAL_DIG in WString.cpp, which avr-gcc 5.4's
    # <float.h> defines only for C; define it as the compiler would.
    _compile(src, obj, ["-DDECIMAL_DIG=__DECIMAL_DIG__"])
    return obj


def build_sketch(sketch_dir: Path, build_dir: Path, core: Path,
                 warnings: tuple[str, ...] = ("-Wall", "-Wextra")) -> tuple[Path, str]:
    """Compile every .ino/.cpp/.c of ``sketch_dir`` and link with ``core``.

    Returns the ELF path and the compiler's warning output (stderr).
    """
    build_dir.mkdir(parents=True, exist_ok=True)
    objs, stderr = [], []
    for src in sorted(sketch_dir.iterdir()):
        if src.suffix == ".ino":
            cpp = build_dir / (src.name + ".cpp")
            cpp.write_text(f'#include <Arduino.h>\n#line 1 "{src.name}"\n' + src.read_text())
            compile_src = cpp
        elif src.suffix in (".cpp", ".c"):
            compile_src = src
        else:
            continue
        obj = build_dir / (src.name + ".o")
        stderr.append(_compile(compile_src, obj, [f"-I{sketch_dir}", *warnings]))
        objs.append(obj)
    elf = build_dir / (sketch_dir.name + ".elf")
    cmd = ["avr-gcc", *warnings, *LDFLAGS, "-o", str(elf), *map(str, objs), str(core),
           f"-L{build_dir}", "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}\n{r.stderr}")
    stderr.append(r.stderr)
    return elf, "".join(stderr)


def sizes(elf: Path) -> tuple[int, int]:
    """(flash, static RAM) bytes as the Arduino IDE reports them."""
    out = subprocess.run(["avr-size", "-A", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    sec = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sec[parts[0]] = int(parts[1])
    text, data, bss = sec.get(".text", 0), sec.get(".data", 0), sec.get(".bss", 0)
    return text + data, data + bss
