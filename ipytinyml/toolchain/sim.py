"""The virtual board: an Uno sketch running in simavr, UART0 on a pseudo-terminal.

``VirtualBoard(elf)`` starts our harness (``simavr_harness.c``, compiled with
the host's gcc against ``libsimavr`` on first use and cached) on an ELF built
by :func:`~ipytinyml.toolchain.avr_build.build_sketch`; ``.port`` is then a
pty path that pyserial (and ``ipytinyml.link``) opens like a real port::

    with VirtualBoard(build.elf) as board:   # or VirtualBoard(bootloader=True): see below
        link = Link(board.port)      # the sketch starts when the port is first opened
        ...
        board.cycles()               # simulated CPU cycles so far

How it behaves, so it can be relied on:

- Real time: simulated time never runs ahead of the wall clock (by more than
  about 0.3 ms) and keeps up with it. A sketch that sleeps (SLEEP_MODE_IDLE) costs
  a few percent of a core; one that busy-polls costs what simavr needs for
  16 MHz of AVR (about an eighth of one core here).
- With ``bootloader=True`` it is an Uno as it comes from the factory: the
  Uno's bootloader (optiboot, :mod:`~ipytinyml.toolchain.optiboot`) at 0x7E00,
  no sketch (or ``elf`` preloaded), and every open of the port resets the AVR
  into the bootloader as DTR does on an Uno. The real ``avrdude`` uploads
  through it (:mod:`~ipytinyml.toolchain.avrdude`); the flash keeps the sketch
  while the simulator lives; after about a second without upload traffic the
  bootloader starts the sketch through a watchdog reset, which prints its
  banner, and the sketch runs until the next reset. :func:`virtual_uno` is
  the one such board that ``tm.flash(board="sim")`` uploads to, again and
  again. :attr:`VirtualBoard.boots` lists the resets ("open", "watchdog", ...).
- Without a bootloader the AVR runs ``elf`` directly. By default it is held
  in reset until the port is first opened, then starts 0.2 s later: the first
  opener sees the boot banner (pyserial discards pending input when it opens
  a port). Later opens do not reset it; :meth:`VirtualBoard.reset` does.
- No orphans: the harness exits when its stdin reaches EOF (this process
  died or closed the board), when this process is no longer its parent, on
  SIGTERM/SIGINT/SIGHUP, and (when started from the main thread) through
  Linux's parent-death signal. It runs in its own session, so interrupting
  a notebook cell does not kill it. Each board has a ``weakref.finalize``
  that closes it when the object is collected or Python exits (finalizers
  run at exit).
- If the AVR crashes or stops, the harness exits and says why; ``alive``
  turns False and :meth:`describe_exit` has the reason.
"""
from __future__ import annotations

import collections
import hashlib
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

from ..errors import ToolchainError
from . import cache_dir
from .avr_build import install_command

__all__ = ["VirtualBoard", "virtual_uno", "harness_path", "missing_sim_packages", "check_virtual_board",
           "unsupported_platform", "HARNESS_SOURCE"]

HARNESS_SOURCE = Path(__file__).with_name("simavr_harness.c")
INCLUDE_DIR = Path("/usr/include")
CFLAGS = ("-O2", "-Wall", "-Wextra")
LIBS = ("-lsimavr", "-lelf", "-lutil")
START_TIMEOUT = 10.0
REPLY_TIMEOUT = 5.0
STDERR_LINES = 200
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# (file under the include dir, Debian package)
_HEADERS = (
    ("simavr/sim_avr.h", "libsimavr-dev"),
    ("simavr/avr_uart.h", "libsimavr-dev"),
    ("libelf.h", "libelf-dev"),
)


# ----------------------------------------------------------------- building

def missing_sim_packages(path: str | None = None, include_dir: Path | str = INCLUDE_DIR) -> list[str]:
    """Debian packages needed to build the simavr harness that are not installed.

    gcc is looked up on ``path`` (default ``$PATH``), the headers of simavr and
    libelf under ``include_dir``. ``[]`` when all is there.
    """
    missing: list[str] = []
    if shutil.which("gcc", path=path) is None:
        missing.append("gcc")
    for header, package in _HEADERS:
        if not (Path(include_dir) / header).is_file() and package not in missing:
            missing.append(package)
    return missing


# The harness needs a pseudo-terminal and pyserial's POSIX backend: Linux (or another Unix).
PLATFORM_MODULES = ("fcntl", "termios", "pty")
SUPPORTED_SYSTEMS = "Linux (tested on Debian 12; Ubuntu has the same packages)"


def unsupported_platform() -> str | None:
    """Why this Python cannot run the virtual board (a missing POSIX module), or None."""
    import importlib

    for module in PLATFORM_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            return (f"the virtual board is not supported on this system (Python has no {module!r} "
                    f"module: Windows?); it runs on {SUPPORTED_SYSTEMS}: use WSL, or flash a real "
                    "board with --board uno|nano33ble")
    return None


def check_virtual_board(path: str | None = None) -> None:
    """Raise one ``ToolchainError`` naming everything the virtual board lacks: an unsupported
    system, or every missing Debian package (the compilers, the simulator's, avrdude) at once."""
    problem = unsupported_platform()
    if problem:
        raise ToolchainError(problem)
    from .avr_build import missing_packages
    from .avrdude import find_avrdude

    uploader = [] if find_avrdude(path) else ["avrdude"]  # uploads through the virtual optiboot
    missing = list(dict.fromkeys([*missing_packages(path), *missing_sim_packages(path), *uploader]))
    if missing:
        raise ToolchainError(
            f"the virtual board needs Debian packages {', '.join(missing)}; install them with: "
            f"{install_command(missing)}")


def _missing_error(packages) -> ToolchainError:
    return ToolchainError(
        f"cannot build the virtual board's simulator: Debian packages {', '.join(packages)} "
        f"are missing; install them with: {install_command(packages)}")


def _gcc_version(gcc: str) -> str:
    try:
        run = subprocess.run([gcc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolchainError(f"cannot run {gcc}: {exc}") from exc
    return run.stdout.splitlines()[0] if run.stdout else ""


_built: dict[tuple, Path] = {}


def harness_path(*, path: str | None = None, include_dir: Path | str = INCLUDE_DIR,
                 cache: Path | str | None = None) -> Path:
    """The simavr harness executable, compiled on first use.

    Built with the host gcc (``-O2 -Wall -Wextra``) into the
    cache (``<user cache>/ipytinyml`` unless ``cache`` is given), named by a
    hash of the C source, the gcc version and the flags, so a changed source
    or compiler gives a new build. The executable appears atomically (temp
    file, then rename): processes building at the same time each get a
    complete one.

    Raises
    ------
    ToolchainError
        gcc, libsimavr-dev or libelf-dev missing (with the apt-get command), or
        the compile failed (first error line; ``.log`` has the rest).
    """
    folder = Path(cache) if cache is not None else cache_dir()
    memo = (path, str(include_dir), str(folder))
    if memo in _built and os.access(_built[memo], os.X_OK):
        return _built[memo]
    missing = missing_sim_packages(path, include_dir)
    if missing:
        raise _missing_error(missing)
    gcc = shutil.which("gcc", path=path)
    source = HARNESS_SOURCE.read_bytes()
    include = Path(include_dir) / "simavr"
    flags = [*CFLAGS, f"-I{include}"]
    key = hashlib.sha256(b"\0".join([source, _gcc_version(gcc).encode(),
                                     " ".join([*flags, *LIBS]).encode()])).hexdigest()[:16]
    target = folder / f"simavr_harness-{key}"
    if os.access(target, os.X_OK):
        _built[memo] = target
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".simavr_harness-", dir=folder)
    except OSError as exc:
        if cache is not None:
            raise ToolchainError(f"cannot write the simavr harness to {folder}: {exc}") from exc
        # an unwritable home (some CI and containers): a private temp folder
        folder = Path(tempfile.gettempdir()) / f"ipytinyml-{os.getuid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        target = folder / target.name
        if os.access(target, os.X_OK):
            _built[memo] = target
            return target
        fd, tmp = tempfile.mkstemp(prefix=".simavr_harness-", dir=folder)
    os.close(fd)
    try:
        cmd = [gcc, *flags, "-o", tmp, str(HARNESS_SOURCE), *LIBS]
        env = dict(os.environ, LC_ALL="C")
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolchainError(f"cannot compile the simavr harness: {exc}") from exc
        if run.returncode != 0:
            raise _compile_error(run.stderr)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _built[memo] = target
    return target


def _compile_error(log: str) -> ToolchainError:
    if "-lsimavr" in log or "sim_avr.h" in log or "avr_uart.h" in log:
        err = _missing_error(["libsimavr-dev"])
    elif "-lelf" in log or "libelf.h" in log:
        err = _missing_error(["libelf-dev"])
    else:
        first = next((ln.strip() for ln in log.splitlines() if "error" in ln), None)
        first = first or (log.strip().splitlines() or ["no output"])[-1]
        err = ToolchainError(f"compiling the simavr harness failed: {first}")
    err.log = log
    return err


# ------------------------------------------------------------------ running

class _Channel:
    """The harness's stdout and stderr, read by two daemon threads.

    Kept apart from VirtualBoard so the threads hold no reference to the
    board object (it can then be collected, which closes it).
    """

    def __init__(self, proc: subprocess.Popen):
        self.replies: queue.Queue[str] = queue.Queue()
        self.pty: queue.Queue[str] = queue.Queue()
        self.running = threading.Event()
        self.exit_line: str | None = None
        self.boots: list[str] = []     # why each reset happened: open, command, watchdog
        self.idle = threading.Event()  # the bootloader found no sketch (until the next BOOT)
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.finished = threading.Event()
        threading.Thread(target=self._read_stdout, args=(proc.stdout,), daemon=True,
                         name="simavr-stdout").start()
        threading.Thread(target=self._read_stderr, args=(proc.stderr,), daemon=True,
                         name="simavr-stderr").start()

    def _read_stdout(self, stream) -> None:
        try:
            for raw in stream:
                line = raw.rstrip("\r\n")
                kind = line.split(" ", 1)[0]
                if kind == "PTY":
                    self.pty.put(line[4:])
                elif kind == "RUN":
                    self.running.set()
                elif kind == "EXIT":
                    self.exit_line = line[5:]
                elif kind == "BOOT":
                    self.idle.clear()
                    self.boots.append(line[5:].split(" ", 1)[0])
                elif kind == "IDLE":
                    self.idle.set()
                elif kind in ("CYCLES", "RESET", "ERR"):
                    self.replies.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self.finished.set()
            self.pty.put("")          # wake anyone waiting for a PTY line
            self.replies.put("")      # or for a reply

    def _read_stderr(self, stream) -> None:
        try:
            for raw in stream:
                self.stderr.append(raw.rstrip("\r\n"))
        except (OSError, ValueError):
            pass


def _stop(proc: subprocess.Popen, timeout: float = 2.0) -> None:
    """End the harness: EOF on its stdin, then SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


class VirtualBoard:
    """An Uno sketch (ELF) running in simavr, its UART0 on a pty.

    Parameters
    ----------
    elf : path, optional
        Firmware to start now; or call :meth:`start` later.
    speed : float
        Simulated time per wall-clock time: 1 is real time (default); 0 runs
        as fast as the host allows (for batch work; timings then mean
        nothing in wall-clock terms).
    wait_for_open : bool
        Hold the AVR until the port is first opened (default True), so the
        first opener sees the boot banner. Without a bootloader only.
    bootloader : True or path, optional
        Run a bootloader: True for the Uno's optiboot, or an Intel HEX for the
        boot section. ``elf`` is then optional, the AVR is held until the port
        is first opened, and every open resets it (as DTR does on an Uno).
    start_delay : float
        Seconds between that first open and the AVR starting.
    start_timeout : float
        Seconds to wait for the harness to report its pty.
    harness : path, optional
        The harness executable; default :func:`harness_path`.

    Attributes
    ----------
    port : str
        The pty path to open with pyserial.
    pid : int
        The harness's process id.
    """

    def __init__(self, elf=None, *, speed: float = 1.0, wait_for_open: bool = True,
                 start_delay: float = 0.2, start_timeout: float = START_TIMEOUT, harness=None,
                 bootloader=None):
        if not speed >= 0:
            raise ToolchainError(f"speed must be >= 0 (1 = real time), not {speed!r}")
        self.bootloader = bootloader
        self.speed = float(speed)
        self.wait_for_open = bool(wait_for_open)
        self.start_delay = float(start_delay)
        self.start_timeout = float(start_timeout)
        self._harness = harness
        self._proc: subprocess.Popen | None = None
        self._channel: _Channel | None = None
        self._finalizer = None
        self._lock = threading.Lock()
        self.port: str | None = None
        self.pid: int | None = None
        self.elf: Path | None = None
        if elf is not None or bootloader is not None:
            self.start(elf)

    # -- life cycle

    def start(self, elf=None) -> "VirtualBoard":
        """Start the harness on ``elf`` (optional with a bootloader); returns self once ``.port`` is known."""
        if self._proc is not None:
            raise ToolchainError("this virtual board is already started; close() it first, "
                                 "or make a new VirtualBoard")
        if elf is None and self.bootloader is None:
            raise ToolchainError("give the virtual board a firmware ELF, or a bootloader to upload to")
        if elf is not None:
            elf = Path(elf)
            if not elf.is_file():
                raise ToolchainError(f"no firmware at {elf}: build the sketch first")
        harness = Path(self._harness) if self._harness is not None else harness_path()
        cmd = [str(harness), "--speed", repr(self.speed), "--parent-pid", str(os.getpid())]
        if threading.current_thread() is threading.main_thread():
            # PR_SET_PDEATHSIG fires when the forking *thread* ends, so only
            # ask for it from the main thread (which lives as long as we do).
            cmd.append("--pdeathsig")
        if self.bootloader is not None:
            from .optiboot import optiboot_hex
            hexfile = optiboot_hex() if self.bootloader is True else Path(self.bootloader)
            cmd += ["--bootloader", str(hexfile), "--reset-on-open"]
        elif self.wait_for_open:
            cmd += ["--wait-open", "--start-delay-ms", str(max(0, round(self.start_delay * 1000)))]
        if elf is not None:
            cmd.append(str(elf))
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, bufsize=1,
                                    close_fds=True, start_new_session=True)
        except OSError as exc:
            raise ToolchainError(f"cannot start the simavr harness {harness}: {exc}") from exc
        self._proc, self.pid, self.elf = proc, proc.pid, elf
        self._channel = _Channel(proc)
        self._finalizer = weakref.finalize(self, _stop, proc)
        try:
            port = self._channel.pty.get(timeout=self.start_timeout)
        except queue.Empty:
            port = ""
        if not port:
            detail = self._failure_detail()
            self.close()
            raise ToolchainError(f"the virtual board did not start: {detail}")
        self.port = port
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Stop the harness (EOF, then SIGTERM, then SIGKILL) and wait for it."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._proc is not None:
            _stop(self._proc, timeout)
            if self._channel is not None:
                self._channel.finished.wait(timeout)

    def __enter__(self) -> "VirtualBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.alive else ("exited" if self._proc else "not started")
        what = self.elf.name if self.elf else ("optiboot" if self.bootloader is not None else "")
        return f"<VirtualBoard {what} on {self.port} ({state})>"

    # -- state

    @property
    def alive(self) -> bool:
        """True while the harness runs (the AVR has not crashed or stopped)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def running(self) -> bool:
        """True once the AVR executes (with ``wait_for_open``, after the first open)."""
        return self._channel is not None and self._channel.running.is_set() and self.alive

    @property
    def boots(self) -> list[str]:
        """Why the AVR was reset, one entry per reset so far: "open" (the port was opened, with
        a bootloader), "command" (:meth:`reset`), "watchdog" (how optiboot starts the sketch)."""
        return list(self._channel.boots) if self._channel else []

    @property
    def empty(self) -> bool:
        """True while the bootloader found no sketch to start (a chip that was never flashed)."""
        return self._channel is not None and self._channel.idle.is_set()

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    @property
    def stderr_tail(self) -> str:
        """The harness's last lines of diagnostics."""
        return "\n".join(self._channel.stderr) if self._channel else ""

    def describe_exit(self) -> str | None:
        """Why the harness ended, in words; None while it runs."""
        if self._proc is None or self._proc.poll() is None:
            return None
        if self._channel is not None:
            self._channel.finished.wait(1.0)
        line = (self._channel.exit_line if self._channel else None) or ""
        reason, _, rest = line.partition(" ")
        fields = dict(f.split("=", 1) for f in rest.split() if "=" in f)
        where = f"at pc={fields.get('pc', '?')} after {fields.get('cycle', '?')} cycles"
        if reason == "crashed":
            core = self._core_message()
            return f"the AVR crashed {where}: " + (core or (
                "simavr stops on an access outside RAM, a jump outside the program or an "
                "invalid instruction"))
        if reason == "done":
            return f"the AVR stopped {where}: it went to sleep with interrupts off"
        if line:
            return f"the virtual board was closed ({line})"
        return f"the simavr harness exited with status {self._proc.returncode}: {self._last_error()}"

    # -- commands

    def cycles(self, timeout: float = REPLY_TIMEOUT) -> int:
        """Simulated CPU cycles since the AVR started (sleep included)."""
        return int(self._ask("cycles", "CYCLES", timeout))

    def reset(self, timeout: float = REPLY_TIMEOUT) -> int:
        """Reset the AVR (as the reset button would); returns the cycle count at the reset.

        The sketch starts over and prints its banner again; bytes in flight
        to it are lost.
        """
        return int(self._ask("reset", "RESET", timeout))

    def _ask(self, command: str, answer: str, timeout: float) -> str:
        with self._lock:
            if not self.alive:
                raise ToolchainError(f"the virtual board is not running: {self._why_not()}")
            channel = self._channel
            while True:  # drop replies nobody waited for (an earlier timeout)
                try:
                    channel.replies.get_nowait()
                except queue.Empty:
                    break
            try:
                self._proc.stdin.write(command + "\n")
                self._proc.stdin.flush()
            except (OSError, ValueError) as exc:
                raise ToolchainError(f"the virtual board is not running: {self._why_not()}") from exc
            try:
                reply = channel.replies.get(timeout=timeout)
            except queue.Empty:
                raise ToolchainError(f"the virtual board did not answer {command!r} within "
                                     f"{timeout:g} s; close it and start it again") from None
            if not reply:
                raise ToolchainError(f"the virtual board is not running: {self._why_not()}")
            kind, _, value = reply.partition(" ")
            if kind != answer:
                raise ToolchainError(f"the virtual board answered {reply!r} to {command!r}")
            return value

    # -- helpers

    def _why_not(self) -> str:
        if self._proc is None:
            return "it was never started; call start(elf)"
        try:
            self._proc.wait(0.5)
        except subprocess.TimeoutExpired:
            pass
        return self.describe_exit() or "it does not answer"

    def _last_error(self) -> str:
        lines = [ln for ln in (self._channel.stderr if self._channel else ()) if ln.strip()]
        for ln in reversed(lines):
            if "simavr_harness:" in ln or "error" in ln.lower() or "crash" in ln.lower():
                return ln.strip()
        return lines[-1].strip() if lines else "no output"

    def _core_message(self) -> str:
        """simavr's own words about a crash, if it printed any."""
        for ln in reversed(self._channel.stderr if self._channel else ()):
            if "CORE:" in ln:
                text = _ANSI.sub("", ln).replace("*", " ").replace("CORE:", "")
                return " ".join(text.split())
        return ""

    def _failure_detail(self) -> str:
        if self._proc is not None:
            try:
                self._proc.wait(1.0)
            except subprocess.TimeoutExpired:
                return f"no pty reported within {self.start_timeout:g} s"
        if self._channel is not None:
            time.sleep(0.05)  # let the stderr reader catch up
        return self._last_error()


_shared: VirtualBoard | None = None
_shared_lock = threading.Lock()


def virtual_uno(*, harness=None) -> VirtualBoard:
    """The virtual Uno of this Python process: optiboot in simavr, started once, flashed by avrdude.

    Started on first use with only the bootloader (an Uno fresh from the
    factory, no sketch); every upload goes through its bootloader, and the
    flash keeps what was uploaded while the simulator lives. If it ended (it
    was closed, or its AVR crashed) the next call starts a new one, empty.
    It stops when this Python process exits.
    """
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.alive:
            _shared = VirtualBoard(bootloader=True, harness=harness)
        return _shared


def _main(argv=None) -> int:
    """``python -m ipytinyml.toolchain.sim firmware.elf``: run a virtual board by hand."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m ipytinyml.toolchain.sim firmware.elf", file=sys.stderr)
        return 2
    board = VirtualBoard(args[0])
    print(f"virtual board on {board.port} (pid {board.pid}): the sketch starts when the port "
          f"is opened (e.g. screen {board.port} 115200); Ctrl-C stops it", flush=True)
    try:
        while board.alive:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        board.close()
    print(board.describe_exit() or "", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
