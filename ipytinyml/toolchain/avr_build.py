"""Compile an Arduino sketch for the Uno with Debian's arduino-builder, offline.

This is the build behind the virtual board (and a real Uno without
arduino-cli): the Arduino AVR core packaged by Debian (``arduino-core-avr``),
compiled by ``arduino-builder`` with Debian's avr-gcc 5.4. Nothing is
downloaded and nothing is written outside the build folder and the per-user
core cache.

What the recipe needs on Debian 12, found by trying it:

- ``-hardware /usr/share/arduino/hardware`` (the core); its ``platform.txt``
  already points ``compiler.path`` at ``/usr/bin/``.
- ``-tools`` is mandatory but nothing in it is used; the package's own
  folder will do.
- arduino-builder does not read its own ``platform.txt`` (which has the ctags
  recipe), so the three ``tools.ctags.*`` preferences are passed explicitly,
  pointing at ``arduino-ctags``.
- The core's ``WString.cpp`` uses ``DECIMAL_DIG``, which avr-gcc 5.4's
  ``<float.h>`` only defines for C; ``-DDECIMAL_DIG=__DECIMAL_DIG__`` defines it
  as the compiler would (C++ only; C has it).
- arduino-builder rebuilds everything when its options change, so the
  preferences are always passed in the same order.

The compiled core is cached per user (``<cache>/arduino-core``, arduino-builder's
``-build-cache``; it checks the core's sources are older than the archive), so
a build in a new folder only compiles the sketch. A build folder is locked
while it is used, and so is the core cache.

Failures raise :class:`~ipytinyml.errors.ToolchainError` with one line; the
exception also carries ``log`` (everything arduino-builder printed) and
``diagnostics`` (one ``file:line:col: severity: message`` per compiler
diagnostic, paths mapped back to the sketch folder).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import ToolchainError
from . import cache_dir

try:
    import fcntl
except ImportError:  # Windows: no virtual board there (sim.unsupported_platform), import anyway
    fcntl = None

__all__ = ["BuildResult", "build_sketch", "missing_packages", "install_command", "section_sizes",
           "HARDWARE_DIR", "DEFAULT_FQBN"]

DEFAULT_FQBN = "arduino:avr:uno"
HARDWARE_DIR = Path("/usr/share/arduino/hardware")
BUILDER_TOOLS_DIR = Path("/usr/share/arduino-builder")
AVR_LIBC_HEADER = Path("/usr/lib/avr/include/avr/io.h")
BUILD_TIMEOUT = 600.0
# These compile flags are always given; extra_flags come after them.
BASE_CPP_FLAGS = ("-DDECIMAL_DIG=__DECIMAL_DIG__",)
CTAGS_PATTERN = ('"{cmd.path}" -u --language-force=c++ -f - --c++-kinds=svpf '
                 '--fields=KSTtzns --line-directives "{source_file}"')

# (what is checked, Debian package): executables on PATH, then files.
_EXECUTABLES = (
    ("arduino-builder", "arduino-builder"),
    ("arduino-ctags", "arduino-ctags"),
    ("avr-gcc", "gcc-avr"),
    ("avr-g++", "gcc-avr"),
    ("avr-gcc-ar", "gcc-avr"),
    ("avr-objcopy", "binutils-avr"),
    ("avr-size", "binutils-avr"),
)


@dataclass(frozen=True)
class BuildResult:
    """A compiled sketch.

    ``flash_bytes`` and ``ram_bytes`` are what the Arduino IDE reports:
    ``.text + .data`` of program storage and ``.data + .bss + .noinit`` of
    static RAM. ``seconds`` is the wall time of the build.
    """

    elf: Path
    hex: Path
    flash_bytes: int
    ram_bytes: int
    log: str
    seconds: float = 0.0


def install_command(packages) -> str:
    """The apt-get command line that installs ``packages``."""
    sudo = "sudo " if hasattr(os, "geteuid") and os.geteuid() != 0 else ""
    return f"{sudo}apt-get install -y {' '.join(packages)}"


def missing_packages(path: str | None = None, hardware_dir: Path | str = HARDWARE_DIR,
                     avr_libc_header: Path | str = AVR_LIBC_HEADER) -> list[str]:
    """Debian packages the Uno build needs and that are not installed.

    Executables are looked up on ``path`` (default ``$PATH``); the Arduino core
    under ``hardware_dir`` and avr-libc by one of its headers. Returns package
    names in a stable order, without duplicates; ``[]`` when all is there.
    """
    missing: list[str] = []
    for exe, package in _EXECUTABLES:
        if shutil.which(exe, path=path) is None and package not in missing:
            missing.append(package)
    if not (Path(hardware_dir) / "arduino" / "avr" / "platform.txt").is_file():
        missing.append("arduino-core-avr")
    if not Path(avr_libc_header).is_file():
        missing.append("avr-libc")
    return missing


def _check_installed(path: str | None, hardware_dir: Path) -> None:
    missing = missing_packages(path, hardware_dir)
    if missing:
        raise ToolchainError(
            f"cannot compile for the Uno (virtual board): Debian packages {', '.join(missing)} "
            f"are missing; install them with: {install_command(missing)}")


def _main_sketch_file(sketch_dir: Path) -> Path:
    if not sketch_dir.is_dir():
        raise ToolchainError(f"sketch folder {sketch_dir} does not exist")
    main = sketch_dir / f"{sketch_dir.name}.ino"
    if not main.is_file():
        raise ToolchainError(f"{sketch_dir} is not an Arduino sketch folder: it needs "
                             f"{main.name} (the main file is named after its folder)")
    return main


@contextmanager
def _locked(lock_file: Path):
    """Hold an exclusive lock on ``lock_file`` (created if needed)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _command(main: Path, build_dir: Path, fqbn: str, extra_flags, warnings: str,
             path: str | None, hardware_dir: Path, core_cache: Path | None) -> list[str]:
    builder = shutil.which("arduino-builder", path=path)
    ctags = shutil.which("arduino-ctags", path=path)
    avr_gcc = shutil.which("avr-gcc", path=path)
    flags = " ".join([*BASE_CPP_FLAGS, *extra_flags])
    c_flags = " ".join(extra_flags)
    # Always the same preferences in the same order: arduino-builder rebuilds
    # everything (the core too) when its build options change.
    cmd = [builder, "-compile", "-logger", "human",
           "-hardware", str(hardware_dir), "-tools", str(BUILDER_TOOLS_DIR),
           "-fqbn", fqbn, "-build-path", str(build_dir), "-warnings", warnings,
           "-prefs", f"compiler.path={Path(avr_gcc).parent}/",
           "-prefs", f"tools.ctags.path={Path(ctags).parent}",
           "-prefs", "tools.ctags.cmd.path={path}/" + Path(ctags).name,
           "-prefs", f"tools.ctags.pattern={CTAGS_PATTERN}",
           "-prefs", f"compiler.cpp.extra_flags={flags}",
           "-prefs", f"compiler.c.extra_flags={c_flags}"]
    if core_cache is not None:
        cmd += ["-build-cache", str(core_cache)]
    return [*cmd, str(main)]


_DIAG = re.compile(r"^(?P<file>[^:\n]+?):(?P<line>\d+):(?:(?P<col>\d+):)? "
                   r"(?P<severity>fatal error|error|warning|note): (?P<message>.*)$", re.M)
_UNDEFINED = re.compile(r"undefined reference to (?P<symbol>.+)$", re.M)
_OVERFLOW = re.compile(r"region `(?P<region>\w+)' overflowed by (?P<bytes>\d+) bytes", re.M)
_NOT_IN_REGION = re.compile(r"section `(?P<section>[.\w]+)' is not within region `(?P<region>\w+)'", re.M)
_USES = re.compile(r"^(?:Sketch uses|Global variables use) .*$", re.M)


def _map_path(file: str, sketch_dir: Path, build_dir: Path) -> str:
    """A compiler path as the user knows it: relative to the sketch folder
    (arduino-builder compiles copies of the sketch's files in build/sketch)."""
    path = Path(file)
    for root in (build_dir / "sketch", sketch_dir):
        try:
            return str(path.relative_to(root))
        except ValueError:
            continue
    return file


def _diagnostics(log: str, sketch_dir: Path, build_dir: Path) -> list[str]:
    out = []
    for m in _DIAG.finditer(log):
        where = _map_path(m["file"], sketch_dir, build_dir)
        col = f"{m['col']}:" if m["col"] else ""
        out.append(f"{where}:{m['line']}:{col} {m['severity']}: {m['message'].strip()}")
    return out


def _first_error(log: str, name: str, fqbn: str, sketch_dir: Path, build_dir: Path) -> str:
    """One line saying what went wrong, from arduino-builder's output."""
    for m in _DIAG.finditer(log):
        if m["severity"] in ("error", "fatal error"):
            where = _map_path(m["file"], sketch_dir, build_dir)
            return f"compiling sketch {name} failed: {where}:{m['line']}: {m['message'].strip()}"
    m = _UNDEFINED.search(log)
    if m:
        return (f"linking sketch {name} failed: undefined reference to {m['symbol'].strip()} "
                "(declared but never defined?)")
    m = _OVERFLOW.search(log)
    if m:
        what = "flash" if m["region"] == "text" else "RAM" if m["region"] == "data" else m["region"]
        return f"sketch {name} does not fit in the {what} of {fqbn}: {m['bytes']} bytes too many"
    m = _NOT_IN_REGION.search(log)
    if m:
        what = "RAM" if m["region"] == "data" else m["region"]
        return f"sketch {name} does not fit in the {what} of {fqbn} (section {m['section']})"
    if "Sketch too big" in log or "Not enough memory" in log:
        uses = " ".join(u.strip() for u in _USES.findall(log))
        return f"sketch {name} is too big for {fqbn}: {uses}"
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and ln.strip() != "exit status 1"]
    for ln in lines:
        if "error" in ln.lower() or "unknown" in ln.lower():
            return f"building sketch {name} failed: {ln}"
    return f"building sketch {name} failed: {lines[-1] if lines else 'arduino-builder gave no output'}"


def section_sizes(elf: Path | str, path: str | None = None) -> dict[str, int]:
    """Section sizes of an AVR ELF, from ``avr-size -A``."""
    avr_size = shutil.which("avr-size", path=path)
    if avr_size is None:
        raise ToolchainError("avr-size is missing; install it with: "
                             + install_command(["binutils-avr"]))
    run = subprocess.run([avr_size, "-A", str(elf)], capture_output=True, text=True,
                         env=_c_locale(), timeout=60)
    if run.returncode:
        raise ToolchainError(f"avr-size could not read {elf}: {run.stderr.strip()[:200]}")
    sizes = {}
    for line in run.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def _c_locale() -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C"  # plain ASCII quotes in compiler messages
    env.pop("LANGUAGE", None)
    return env


def build_sketch(sketch_dir, build_dir, fqbn: str = DEFAULT_FQBN, extra_flags=(), *,
                 warnings: str = "default", core_cache: Path | str | None = "auto",
                 path: str | None = None, hardware_dir: Path | str = HARDWARE_DIR,
                 timeout: float = BUILD_TIMEOUT) -> BuildResult:
    """Compile the Arduino sketch folder ``sketch_dir`` into ``build_dir``.

    Parameters
    ----------
    sketch_dir : path
        An Arduino sketch folder: ``<folder>/<folder>.ino`` plus any
        ``.cpp``/``.c``/``.h`` files next to it.
    build_dir : path
        Where arduino-builder works and leaves ``<folder>.ino.elf`` and
        ``.hex``. Reuse it: an unchanged core is not compiled again, and a
        rebuild only compiles what changed.
    fqbn : str
        Board, ``arduino:avr:uno`` by default (any board of Debian's AVR core).
    extra_flags : sequence of str
        Extra compiler flags for the sketch's C and C++ files (and the core),
        e.g. ``("-DTINYML_DEBUG=1",)``.
    warnings : str
        arduino-builder's warning level: none, default, more or all.
    core_cache : path, None or "auto"
        Folder where the compiled core is shared between build folders;
        "auto" is ``<user cache>/arduino-core``; None disables it.
    path : str, optional
        Where to look for the tools instead of ``$PATH``.
    hardware_dir : path
        The Arduino hardware folder (Debian: /usr/share/arduino/hardware).
    timeout : float
        Seconds before the build is abandoned.

    Returns
    -------
    BuildResult
        ELF and HEX paths, flash and static RAM bytes, the build log, seconds.

    Raises
    ------
    ToolchainError
        A missing Debian package (the message has the apt-get command), a
        folder that is not a sketch, or a failed build: the first compiler
        error as ``file:line: message`` (``.log`` and ``.diagnostics`` on the
        exception have the rest).

    Examples
    --------
    >>> r = build_sketch("tinyml/hp_mpg/firmware/sim/tinyml_hp_mpg", "/tmp/build")  # doctest: +SKIP
    >>> r.flash_bytes, r.ram_bytes                                                 # doctest: +SKIP
    (5130, 412)
    """
    sketch_dir = Path(sketch_dir).resolve()
    build_dir = Path(build_dir).resolve()
    hardware_dir = Path(hardware_dir)
    main = _main_sketch_file(sketch_dir)
    _check_installed(path, hardware_dir)
    for flag in extra_flags:
        if not isinstance(flag, str) or not flag or any(c.isspace() for c in flag):
            raise ToolchainError(f"bad compiler flag {flag!r}: give one flag per item, without spaces")
    if warnings not in ("none", "default", "more", "all"):
        raise ToolchainError(f"unknown warning level {warnings!r}; use none, default, more or all")
    if core_cache == "auto":
        core_cache = cache_dir() / "arduino-core"
        try:
            core_cache.mkdir(parents=True, exist_ok=True)
        except OSError:
            core_cache = None  # an unwritable home: each build folder keeps its own core
    core_cache = Path(core_cache) if core_cache is not None else None

    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        if core_cache is not None:
            core_cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolchainError(f"cannot create the build folder: {exc}") from exc
    cmd = _command(main, build_dir, fqbn, tuple(extra_flags), warnings, path, hardware_dir,
                   core_cache)
    start = time.perf_counter()
    # One build at a time in a folder; and the shared core archive is written
    # in place by arduino-builder, so builds that share it take turns too.
    with _locked(build_dir / ".ipytinyml.lock"), \
            (_locked(core_cache / ".lock") if core_cache is not None else _nothing()):
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                 env=_c_locale(), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            err = ToolchainError(f"building sketch {sketch_dir.name} took more than {timeout:g} s "
                                 "and was stopped; is the machine overloaded?")
            err.log = _text(exc.stdout) + _text(exc.stderr)
            err.diagnostics = []
            raise err from None
        except OSError as exc:
            raise ToolchainError(f"cannot run arduino-builder: {exc}") from exc
    seconds = time.perf_counter() - start
    log = run.stdout + run.stderr
    elf = build_dir / f"{main.name}.elf"
    hexfile = build_dir / f"{main.name}.hex"
    if run.returncode != 0 or not elf.is_file():
        err = ToolchainError(_first_error(log, sketch_dir.name, fqbn, sketch_dir, build_dir))
        err.log = log
        err.diagnostics = _diagnostics(log, sketch_dir, build_dir)
        raise err
    sizes = section_sizes(elf, path)
    flash = sizes.get(".text", 0) + sizes.get(".data", 0) + sizes.get(".bootloader", 0)
    ram = sizes.get(".data", 0) + sizes.get(".bss", 0) + sizes.get(".noinit", 0)
    return BuildResult(elf=elf, hex=hexfile, flash_bytes=flash, ram_bytes=ram, log=log,
                       seconds=seconds)


@contextmanager
def _nothing():
    yield


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
