"""The Uno's bootloader (optiboot) for the virtual board, from Debian's Arduino AVR core.

:func:`optiboot_hex` returns an Intel HEX of optiboot for the ATmega328P at
16 MHz and 115200 baud, the bootloader of every Uno since 2010. It comes from
the ``arduino-core-avr`` package:

- ``bootloaders/optiboot/optiboot_atmega328.hex`` is used as shipped when it
  is a valid bootloader: every byte inside the 512-byte boot section
  (0x7E00-0x7FFF) and no address written twice.
- Debian 12's is not (found by checking it): built by Debian with avr-gcc 5.4
  it is 532 bytes. Its last 20 bytes (the end of ``watchdogConfig()`` and all
  of ``appStart()``) lie past the end of the 32 KB flash, and the version word
  at 0x7FFE overwrites the first ``st`` of ``watchdogConfig()``. avrdude
  refuses to write such a file to a chip; a lenient loader gets a bootloader
  that never turns the watchdog off before starting the sketch, which is then
  reset every 16 ms.
- Then the same package's ``optiboot.c`` (optiboot 4.4, unchanged) is compiled
  with the recipe of its own Makefile's ``atmega328`` target (same defines,
  sections and link flags) plus ``-mrelax -fno-tree-scev-cprop
  -fno-move-loop-invariants``, which bring avr-gcc 5.4's output to 500 bytes,
  inside the boot section like the Arduino-built original. The result is
  checked the same way and cached per user, keyed by the source, the compiler
  version and the flags.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import ToolchainError
from . import cache_dir
from .avr_build import HARDWARE_DIR, install_command

__all__ = ["optiboot_hex", "check_bootloader_hex", "read_hex", "BOOT_START", "FLASH_END"]

OPTIBOOT_DIR = HARDWARE_DIR / "arduino" / "avr" / "bootloaders" / "optiboot"
SHIPPED_HEX = OPTIBOOT_DIR / "optiboot_atmega328.hex"
SOURCE = OPTIBOOT_DIR / "optiboot.c"
BOOT_START = 0x7E00  # BOOTSZ = 256 words (Uno high fuse 0xDE)
FLASH_END = 0x7FFF  # ATmega328P: 32 KB
# The Makefile's atmega328 target (OPTIMIZE, CFLAGS, LDSECTIONS, LDFLAGS) ...
_MAKEFILE_FLAGS = ("-g", "-Wall", "-Os", "-fno-inline-small-functions", "-fno-split-wide-types",
                   "-mshort-calls", "-mmcu=atmega328p", "-DF_CPU=16000000L", "-DLED_START_FLASHES=3",
                   "-DBAUD_RATE=115200", "-Wl,--section-start=.text=0x7e00",
                   "-Wl,--section-start=.version=0x7ffe", "-Wl,--relax", "-Wl,--gc-sections",
                   "-nostartfiles", "-nostdlib")
# ... plus what makes avr-gcc 5.4 fit it in 512 bytes again.
_SIZE_FLAGS = ("-mrelax", "-fno-tree-scev-cprop", "-fno-move-loop-invariants")


def read_hex(path: Path | str) -> dict[int, int]:
    """The bytes of an Intel HEX file: ``{address: byte}``.

    Raises ToolchainError for a malformed file or an address written twice.
    """
    memory: dict[int, int] = {}
    base = 0
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolchainError(f"cannot read {path}: {exc}") from exc
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            if not line.startswith(":"):
                raise ValueError
            record = bytes.fromhex(line[1:])
        except ValueError:
            raise ToolchainError(f"{path} line {number} is not an Intel HEX record") from None
        if len(record) < 5 or record[0] + 5 != len(record) or sum(record) & 0xFF:
            raise ToolchainError(f"{path} line {number}: bad length or checksum")
        kind, address, data = record[3], (record[1] << 8) | record[2], record[4:-1]
        if kind == 0:
            for offset, byte in enumerate(data):
                where = base + address + offset
                if where in memory:
                    raise ToolchainError(f"{path} writes address 0x{where:04x} twice (line {number})")
                memory[where] = byte
        elif kind == 1:
            break
        elif kind == 2:
            base = int.from_bytes(data[:2], "big") << 4
        elif kind == 4:
            base = int.from_bytes(data[:2], "big") << 16
    return memory


def check_bootloader_hex(path: Path | str) -> str | None:
    """Why ``path`` is not a usable Uno bootloader, or None when it is."""
    try:
        memory = read_hex(path)
    except ToolchainError as exc:
        return str(exc)
    if not memory:
        return f"{path} holds no data"
    low, high = min(memory), max(memory)
    if low < BOOT_START or high > FLASH_END:
        return (f"{path} spans 0x{low:04x}-0x{high:04x}, outside the boot section "
                f"0x{BOOT_START:04x}-0x{FLASH_END:04x}")
    return None


def _tool(name: str, package: str, path: str | None) -> str:
    found = shutil.which(name, path=path)
    if found is None:
        raise ToolchainError(f"cannot build the Uno bootloader: {name} is missing; install it with: "
                             + install_command([package]))
    return found


_memo: dict[tuple, Path] = {}


def optiboot_hex(*, cache: Path | str | None = None, path: str | None = None,
                 shipped: Path | str = SHIPPED_HEX, source: Path | str = SOURCE) -> Path:
    """An Intel HEX of the Uno's optiboot that fits its boot section (see the module docstring).

    Raises ToolchainError (one line) when ``arduino-core-avr`` or the AVR
    compiler is missing, or the build does not fit.
    """
    shipped, source = Path(shipped), Path(source)
    memo = (str(cache), path, str(shipped), str(source))
    if memo in _memo and _memo[memo].is_file():
        return _memo[memo]
    if shipped.is_file() and check_bootloader_hex(shipped) is None:
        _memo[memo] = shipped
        return shipped
    if not source.is_file():
        raise ToolchainError("the Uno bootloader (optiboot) is missing: install it with: "
                             + install_command(["arduino-core-avr"]))
    gcc = _tool("avr-gcc", "gcc-avr", path)
    objcopy = _tool("avr-objcopy", "binutils-avr", path)
    flags = (*_MAKEFILE_FLAGS, *_SIZE_FLAGS)
    try:
        version = subprocess.run([gcc, "--version"], capture_output=True, text=True,
                                 timeout=60).stdout.splitlines()[:1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolchainError(f"cannot run {gcc}: {exc}") from exc
    key = hashlib.sha256(b"\0".join([source.read_bytes(), " ".join(version).encode(),
                                     " ".join(flags).encode()])).hexdigest()[:16]
    folder = Path(cache) if cache is not None else cache_dir()
    target = folder / f"optiboot_atmega328-{key}.hex"
    if target.is_file() and check_bootloader_hex(target) is None:
        _memo[memo] = target
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".optiboot-", dir=folder))
    except OSError as exc:
        raise ToolchainError(f"cannot write the Uno bootloader to {folder}: {exc}") from exc
    try:
        elf, hexfile = work / "optiboot.elf", work / "optiboot.hex"
        env = dict(os.environ, LC_ALL="C")
        steps = ([gcc, *flags, f"-I{source.parent}", "-o", str(elf), str(source)],
                 [objcopy, "-j", ".text", "-j", ".data", "-j", ".version",
                  "--set-section-flags", ".version=alloc,load", "-O", "ihex", str(elf), str(hexfile)])
        for cmd in steps:
            try:
                run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env,
                                     stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ToolchainError(f"cannot build the Uno bootloader: {exc}") from exc
            if run.returncode != 0:
                lines = run.stderr.strip().splitlines()
                first = next((ln for ln in lines if "error" in ln), lines[-1] if lines else "no output")
                raise ToolchainError(f"building the Uno bootloader failed: {first.strip()}")
        problem = check_bootloader_hex(hexfile)
        if problem:
            raise ToolchainError(f"the Uno bootloader built from {source} does not fit: {problem}")
        os.replace(hexfile, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _memo[memo] = target
    return target
