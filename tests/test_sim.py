"""ipytinyml.toolchain.sim: the virtual Uno, for real.

Real parts only: the test sketches in tests/sketches/ are built with the real
arduino-builder and Arduino AVR core, run in our harness on the real
libsimavr, and talked to with pyserial over a real pty. Owner death is a
real SIGKILL of a real child Python process. Missing packages are simulated
by pointing the lookups at empty folders (``path=``, ``include_dir=``).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import serial

from ipytinyml.errors import ToolchainError
from ipytinyml.toolchain import sim
from ipytinyml.toolchain.avr_build import build_sketch, missing_packages
from ipytinyml.toolchain.sim import VirtualBoard, harness_path, missing_sim_packages

serial = pytest.importorskip("serial")

ROOT = Path(__file__).resolve().parents[1]
SKETCHES = ROOT / "tests" / "sketches"
F_CPU = 16_000_000

pytestmark = pytest.mark.skipif(bool(missing_packages() or missing_sim_packages()),
                                reason="Debian packages missing: "
                                       f"{missing_packages() + missing_sim_packages()}")


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return harness_path(cache=tmp_path_factory.mktemp("harness_cache"))


@pytest.fixture(scope="module")
def elfs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim_builds")
    return {name: build_sketch(SKETCHES / name, tmp / name, core_cache=tmp / "core").elf
            for name in ("echo", "crashy")}


@pytest.fixture
def board(harness, elfs):
    with VirtualBoard(elfs["echo"], harness=harness) as b:
        yield b


def _open(port: str, timeout: float = 3.0):
    return serial.Serial(port, 115200, timeout=timeout)


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for a parent that is not us counts)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return _gone(pid)


# ------------------------------------------------------------------ harness

def test_harness_compiles_warning_free(tmp_path):
    """-Wall -Wextra -Werror with the host gcc, as the lead asked."""
    run = subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-I/usr/include/simavr",
                          "-o", str(tmp_path / "h"), str(sim.HARNESS_SOURCE), "-lsimavr", "-lelf",
                          "-lutil"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_harness_is_cached_by_source_and_compiler(harness, tmp_path):
    assert harness.name.startswith("simavr_harness-") and os.access(harness, os.X_OK)
    assert harness_path(cache=harness.parent) == harness
    # A new cache builds a new executable with the same name (same key).
    again = harness_path(cache=tmp_path)
    assert again.name == harness.name and again.parent == tmp_path
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_concurrent_first_builds_all_get_a_working_harness(tmp_path):
    code = ("import sys; from ipytinyml.toolchain.sim import harness_path; "
            "print(harness_path(cache=sys.argv[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1
    run = subprocess.run([paths.pop()], capture_output=True, text=True)  # usage, exit 1
    assert run.returncode == 1 and "usage: simavr_harness" in run.stderr
    assert len(list(tmp_path.iterdir())) == 1  # one executable, no temp files left


def test_missing_sim_packages_are_named_with_the_install_command(tmp_path):
    assert missing_sim_packages() == []
    assert missing_sim_packages(path=str(tmp_path)) == ["gcc"]
    assert missing_sim_packages(include_dir=tmp_path) == ["libsimavr-dev", "libelf-dev"]
    with pytest.raises(ToolchainError) as info:
        harness_path(path=str(tmp_path), include_dir=tmp_path, cache=tmp_path / "cache")
    message = str(info.value)
    assert "\n" not in message
    assert "gcc, libsimavr-dev, libelf-dev are missing" in message
    assert message.endswith("apt-get install -y gcc libsimavr-dev libelf-dev")


# ------------------------------------------------------------ the board runs

def test_banner_echo_and_port_reopen(board):
    assert board.alive and board.port.startswith("/dev/pts/")
    assert not board.running  # held until the port is opened
    with _open(board.port) as ser:
        assert ser.readline() == b"#echo ready\r\n"
        assert board.running
        ser.write(b"hello, virtual uno\n")
        assert ser.readline() == b"HELLO, VIRTUAL UNO\r\n"
        long_line = bytes(range(0x61, 0x61 + 26)) * 3  # 78 bytes: more than the UART's FIFO
        ser.write(long_line + b"\r\n")
        assert ser.readline() == long_line.upper() + b"\r\n"
    # Closing and reopening the port neither hangs up nor resets the board.
    with _open(board.port, timeout=0.5) as ser:
        ser.write(b"again\n")
        assert ser.readline() == b"AGAIN\r\n"
        assert ser.readline() == b""  # no second banner


def test_cycles_follow_the_wall_clock(board):
    with _open(board.port) as ser:
        assert ser.readline() == b"#echo ready\r\n"
        t0 = time.monotonic()
        c0 = board.cycles()
        time.sleep(1.0)
        c1 = board.cycles()
        wall = time.monotonic() - t0
    simulated = (c1 - c0) / F_CPU
    assert c1 > c0 > 0
    # Never ahead of the wall clock (0.1 s: a stall shorter than that is caught
    # up); at real time unless this machine is very overloaded.
    assert simulated <= wall + 0.1, (simulated, wall)
    assert simulated >= 0.25 * wall, (simulated, wall)


def test_speed_zero_runs_faster_than_real_time(harness, elfs):
    with VirtualBoard(elfs["echo"], harness=harness, speed=0, wait_for_open=False) as b:
        t0 = time.monotonic()
        c0 = b.cycles()
        time.sleep(0.5)
        c1 = b.cycles()
        wall = time.monotonic() - t0
    assert (c1 - c0) / F_CPU > 2 * wall


def test_wait_for_open_false_runs_at_once(harness, elfs):
    with VirtualBoard(elfs["echo"], harness=harness, wait_for_open=False) as b:
        deadline = time.monotonic() + 5
        while not b.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert b.running
        first = b.cycles()
        time.sleep(0.1)
        assert b.cycles() > first > 0


def test_reset_starts_the_sketch_again(board):
    with _open(board.port) as ser:
        assert ser.readline() == b"#echo ready\r\n"
        ser.write(b"x\n")
        assert ser.readline() == b"X\r\n"
        at = board.reset()
        assert at > 0
        assert ser.readline() == b"#echo ready\r\n"
        ser.write(b"after reset\n")
        assert ser.readline() == b"AFTER RESET\r\n"


# --------------------------------------------------------- the board ends

def test_close_ends_the_harness(harness, elfs):
    b = VirtualBoard(elfs["echo"], harness=harness)
    pid = b.pid
    assert not _gone(pid)
    b.close()
    assert _gone(pid) and not b.alive
    assert b.describe_exit() == "the virtual board was closed (eof)"
    with pytest.raises(ToolchainError, match="not running: the virtual board was closed"):
        b.cycles()
    b.close()  # twice is fine


def test_sigterm_ends_the_harness_cleanly(harness, elfs):
    with VirtualBoard(elfs["echo"], harness=harness, wait_for_open=False) as b:
        os.kill(b.pid, signal.SIGTERM)
        assert _wait_gone(b.pid)
        assert b.returncode == 0
        assert b.describe_exit() == f"the virtual board was closed (signal {int(signal.SIGTERM)})"


def test_dropped_board_is_closed_by_its_finalizer(harness, elfs):
    b = VirtualBoard(elfs["echo"], harness=harness)
    pid = b.pid
    del b
    assert _wait_gone(pid)


CHILD = textwrap.dedent("""
    import os, signal, sys, threading, time
    from ipytinyml.toolchain.sim import VirtualBoard
    boards = []
    def start():
        boards.append(VirtualBoard(sys.argv[1], harness=sys.argv[2], wait_for_open=False))
    if sys.argv[3] == "thread":   # a worker thread that ends: no PR_SET_PDEATHSIG then
        t = threading.Thread(target=start); t.start(); t.join()
    else:
        start()
    board = boards[0]
    if sys.argv[4] == "interrupt":  # Ctrl-C / a notebook interrupt hits our process group
        try:
            os.killpg(os.getpgid(0), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            pass
        print(board.pid, board.alive, board.cycles() > 0, flush=True)
        board.close()
    else:
        print(board.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("where", ["main", "thread"])
def test_owner_killed_takes_the_harness_down(harness, elfs, where):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(elfs["echo"]), str(harness),
                              where, "kill"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err
    pid = int(out.split()[0])
    assert _wait_gone(pid, 5.0), f"harness {pid} outlived its owner"


def test_interrupting_the_owner_does_not_kill_the_board(harness, elfs):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(elfs["echo"]), str(harness),
                              "main", "interrupt"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    pid, alive, counted = out.split()
    assert (alive, counted) == ("True", "True")
    assert _wait_gone(int(pid))


@pytest.mark.parametrize("command, reason", [
    (b"crash", r"^the AVR crashed at pc=0x[0-9a-f]{4} after \d+ cycles: Invalid write address "
               r".* out of ram$"),
    (b"stop", r"^the AVR stopped at pc=0x[0-9a-f]{4} after \d+ cycles: it went to sleep with "
              r"interrupts off$"),
])
def test_avr_crash_or_stop_ends_the_harness_with_a_reason(harness, elfs, command, reason):
    with VirtualBoard(elfs["crashy"], harness=harness) as b, _open(b.port) as ser:
        assert ser.readline() == b"#crashy ready\r\n"
        ser.write(command + b"\n")
        try:
            echoed = ser.readline()
        except serial.SerialException:  # the harness may exit, hanging up the pty, first
            echoed = b""
        assert (command + b"\r\n").startswith(echoed)
        assert _wait_gone(b.pid)
        assert b.returncode == (2 if command == b"crash" else 3)
        assert not b.alive
        explanation = b.describe_exit()
        assert "\n" not in explanation
        assert re.match(reason, explanation), explanation
        with pytest.raises(ToolchainError, match="not running: the AVR"):
            b.cycles()


def test_start_errors(harness, elfs, tmp_path):
    with pytest.raises(ToolchainError, match="no firmware at .*: build the sketch first"):
        VirtualBoard(tmp_path / "missing.elf", harness=harness)
    junk = tmp_path / "junk.elf"
    junk.write_bytes(b"not an elf at all")
    with pytest.raises(ToolchainError, match="did not start: simavr_harness: cannot read ELF"):
        VirtualBoard(junk, harness=harness)
    with VirtualBoard(elfs["echo"], harness=harness) as b:
        with pytest.raises(ToolchainError, match="already started"):
            b.start(elfs["echo"])
    with pytest.raises(ToolchainError, match="speed must be >= 0"):
        VirtualBoard(speed=-1)
