"""Build and run the host "board": the real protocol code with the fake model.

``build(model, out_dir)`` compiles firmware_templates/common/tinyml_protocol.cpp,
host_port.cpp, the fake model and host_board.cpp with host g++ and
``-Wall -Wextra -Werror``; ``PtyBoard`` runs it on a pseudo-terminal.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

from .ref import FakeModel

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COMMON = ROOT / "firmware_templates" / "common"
WARNINGS = ["-Wall", "-Wextra", "-Werror"]


def build(model: FakeModel, out: Path) -> Path:
    """Compile a host board for ``model`` into ``out`` and return its path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["g++", "-std=c++11", "-O1", *WARNINGS, *model.defines(), f"-I{COMMON}", f"-I{HERE}",
           str(COMMON / "tinyml_protocol.cpp"), str(COMMON / "host_port.cpp"),
           str(HERE / "tinyml_model.cpp"), str(HERE / "host_board.cpp"), "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"host board build failed:\n{' '.join(cmd)}\n{r.stderr}")
    return out


def build_parse_driver(model: FakeModel, out: Path, driver: str = "parse_driver.cpp") -> Path:
    """Compile parse_driver.cpp (the protocol's number code, white-box), or another
    white-box driver of this folder (sub_driver.cpp: the pre-stage's subtraction)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["g++", "-std=c++11", "-O1", *WARNINGS, *model.defines(), f"-I{COMMON}", f"-I{HERE}",
           str(HERE / driver), str(COMMON / "host_port.cpp"),
           str(HERE / "tinyml_model.cpp"), "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{driver} build failed:\n{' '.join(cmd)}\n{r.stderr}")
    return out


def run_stdio(exe: Path, data: bytes, board: str = "host", timeout: float = 30) -> bytes:
    """Feed ``data`` on stdin, return everything the board printed."""
    r = subprocess.run([str(exe), "--board", board], input=data, capture_output=True,
                       timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"host board exited {r.returncode}: {r.stderr!r}")
    return r.stdout


def run_script(exe: Path, records, board: str = "host", timeout: float = 30) -> bytes:
    """Run the board on a simulated clock: records are (bytes, pause in ms); each
    record's bytes arrive back to back, then nothing for the pause."""
    script = b"".join(b"%d %d\n" % (ms, len(data)) + data for data, ms in records)
    r = subprocess.run([str(exe), "--script", "--board", board], input=script,
                       capture_output=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"host board --script exited {r.returncode}: {r.stderr[-300:]!r}")
    return r.stdout


class PtyBoard:
    """The host board serving a pty (``path``), as a context manager.

    ``wait_open=True`` behaves like an Uno: the banner comes ``boot_ms`` after
    each open of the port and input sent before that is lost.
    """

    def __init__(self, exe: Path, *, wait_open: bool = False, boot_ms: int = 200,
                 board: str = "host"):
        args = [str(exe), "--pty", "--board", board]
        if wait_open:
            args += ["--wait-open", "--boot-ms", str(boot_ms)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("PTY "):
            self.close()
            raise RuntimeError(f"host board did not start: {line!r}")
        self.path = line.split(None, 1)[1].strip()

    def reset(self) -> None:
        """Reset the board now (SIGUSR1): a second banner mid-session."""
        self.proc.send_signal(signal.SIGUSR1)

    def kill(self) -> None:
        """The far end vanishes: the pty master closes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # EOF on stdin: the board exits
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            if f and not f.closed:
                f.close()

    def __enter__(self) -> "PtyBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wait_for(predicate, timeout: float = 5.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


__all__ = ["build", "run_stdio", "PtyBoard", "wait_for", "FakeModel"]
