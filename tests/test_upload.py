"""Uploads like a real Uno: optiboot in the simulator, the real avrdude, the chip's watchdog.

Real parts only: Debian's optiboot source (rebuilt so it fits, see toolchain/optiboot.py),
the real avrdude 7.1 talking STK500 to it over the harness's pty, sketches built with the
real arduino-builder and AVR core, pyserial. Errors a user can cause are produced for real:
a port held by another process, a device that answers garbage instead of a bootloader,
avrdude missing from PATH.
"""
from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import serial

from ipytinyml.errors import LinkError, ToolchainError
from ipytinyml.toolchain import avrdude, optiboot
from ipytinyml.toolchain.avr_build import build_sketch, missing_packages
from ipytinyml.toolchain.sim import VirtualBoard, missing_sim_packages

ROOT = Path(__file__).resolve().parents[1]
SKETCHES = ROOT / "tests" / "sketches"

pytestmark = pytest.mark.skipif(bool(missing_packages() or missing_sim_packages()
                                     or avrdude.find_avrdude() is None),
                                reason="Debian packages missing: "
                                       f"{missing_packages() + missing_sim_packages()} "
                                       f"{'avrdude' if avrdude.find_avrdude() is None else ''}")


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("upload_builds")
    return {name: build_sketch(SKETCHES / name, tmp / name, core_cache=tmp / "core")
            for name in ("echo", "watchdog")}


@pytest.fixture(scope="module")
def hexes(builds):
    return {name: b.hex for name, b in builds.items()}


@pytest.fixture
def uno():
    with VirtualBoard(bootloader=True) as board:
        yield board


def _lines(port: str, seconds: float) -> list[bytes]:
    """Open the port (which resets the board) and read lines for ``seconds``."""
    with serial.Serial(port, 115200, timeout=0.1) as ser:
        got, end = b"", time.monotonic() + seconds
        while time.monotonic() < end:
            got += ser.read(4096)
    return [ln for ln in got.split(b"\r\n") if ln]


def since_last_open(boots: list[str]) -> list[str]:
    """The resets from the last open of the port on (an open right after avrdude closed the
    port can come before the watchdog reset that starts the new sketch)."""
    return boots[len(boots) - 1 - boots[::-1].index("open"):]


def _data(memory: dict[int, int]) -> dict[int, int]:
    return {a: b for a, b in memory.items() if a < optiboot.BOOT_START}


# ------------------------------------------------------------------ the bootloader

def test_debians_optiboot_hex_is_refused_and_the_rebuilt_one_fits(tmp_path):
    shipped = optiboot.check_bootloader_hex(optiboot.SHIPPED_HEX)
    built = optiboot.optiboot_hex(cache=tmp_path)
    assert optiboot.check_bootloader_hex(built) is None
    memory = optiboot.read_hex(built)
    assert min(memory) == optiboot.BOOT_START and max(memory) <= optiboot.FLASH_END
    assert (memory[0x7FFE], memory[0x7FFF]) == (4, 4)  # optiboot 4.4's version word
    if shipped is not None:  # Debian 12: 532 bytes, past the end of flash, 0x7ffe twice
        assert "0x7ffe twice" in shipped or "outside the boot section" in shipped
        # the harness refuses it too, in one line, as avrdude would refuse to write it
        with pytest.raises(ToolchainError) as info:
            VirtualBoard(bootloader=optiboot.SHIPPED_HEX)
        assert "does not fit in the flash" in str(info.value) and "\n" not in str(info.value)
    else:
        assert built == optiboot.SHIPPED_HEX


def test_an_empty_uno_waits_in_its_bootloader(uno):
    assert not uno.running  # held until the port is opened
    with serial.Serial(uno.port, 115200, timeout=0.1) as ser:
        deadline = time.monotonic() + 5
        while not uno.empty and time.monotonic() < deadline:
            ser.read(100)
        assert ser.read(100) == b""
    assert uno.empty and uno.alive  # no sketch to start: parked, not crashed
    assert uno.boots == ["open", "watchdog"]  # optiboot timed out and started the (empty) sketch


def test_every_open_resets_into_the_bootloader_then_the_sketch(builds):
    """A sketch already in flash (ELF preloaded): each open is a DTR reset, one banner each;
    the reset button (the owner's "reset") does the same."""
    with VirtualBoard(builds["echo"].elf, bootloader=True) as uno:
        for _ in range(2):
            assert _lines(uno.port, 3.0) == [b"#echo ready"]
        with serial.Serial(uno.port, 115200, timeout=3) as ser:
            assert ser.readline() == b"#echo ready\r\n"
            uno.reset()
            assert ser.readline() == b"#echo ready\r\n"
            ser.write(b"still here\n")
            assert ser.readline() == b"STILL HERE\r\n"
        assert uno.boots == ["open", "watchdog"] * 3 + ["command", "watchdog"]


# ------------------------------------------------------------------ uploads

def test_upload_read_back_and_the_sketch_keeps_running(uno, hexes, tmp_path):
    result = avrdude.upload(hexes["echo"], uno.port)
    uploaded = optiboot.read_hex(hexes["echo"])
    assert result.bytes_written == len(uploaded)
    # exactly one banner in 3 s after opening: no reset loop after the upload
    lines = _lines(uno.port, 3.0)
    assert lines == [b"#echo ready"], lines
    assert since_last_open(uno.boots) == ["open", "watchdog"], uno.boots  # one start, no loop
    # read the flash back through the bootloader with a separate avrdude run
    out = avrdude.read_flash(uno.port, tmp_path / "out.hex")
    back = _data(optiboot.read_hex(out))
    assert {a: back.get(a, 0xFF) for a in uploaded} == uploaded
    assert all(v == 0xFF for a, v in back.items() if a not in uploaded)


def test_second_upload_to_the_running_board(uno, hexes):
    pid = uno.pid
    avrdude.upload(hexes["echo"], uno.port)
    assert _lines(uno.port, 3.0)[:1] == [b"#echo ready"]
    avrdude.upload(hexes["watchdog"], uno.port)
    assert uno.pid == pid and uno.alive  # the same simulator, never restarted
    assert _lines(uno.port, 3.0) == [b"#watchdog ready 0"]  # optiboot clears MCUSR


def test_upload_errors_are_one_line(uno, hexes, tmp_path, monkeypatch):
    # another program holds the port: refused before avrdude runs
    holder = subprocess.Popen([sys.executable, "-c", f"import serial, time; s = serial.Serial({uno.port!r}); "
                               "print('open', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(LinkError, match=f"busy \\(held by .*pid {holder.pid}\\)"):
            avrdude.upload_and_reacquire(hexes["echo"], uno.port)
    finally:
        holder.kill()
        holder.wait()
    # avrdude missing
    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(ToolchainError) as info:
        avrdude.upload(hexes["echo"], uno.port, path=str(empty))
    assert str(info.value).startswith("avrdude is not installed") and "apt-get install -y avrdude" in str(info.value)
    # no sketch file
    with pytest.raises(ToolchainError, match="build it first"):
        avrdude.upload(tmp_path / "none.hex", uno.port)
    # a board that is not in its bootloader (garbage for every byte)
    master, slave = os.openpty()
    name = os.ttyname(slave)
    os.close(slave)
    stop = threading.Event()

    def babble():
        while not stop.is_set():
            if select.select([master], [], [], 0.05)[0]:
                try:
                    os.write(master, b"x" * len(os.read(master, 256)))
                except OSError:
                    time.sleep(0.01)

    thread = threading.Thread(target=babble, daemon=True)
    thread.start()
    try:
        with pytest.raises(ToolchainError) as info:
            avrdude.upload(hexes["echo"], name)
    finally:
        stop.set()
        thread.join()
        os.close(master)
    text = str(info.value)
    assert f"no bootloader answered on {name}" in text and "\n" not in text
    assert "not in sync" in info.value.log


def test_upload_settings_from_boards_txt():
    assert avrdude.upload_settings("arduino:avr:uno") == {"mcu": "atmega328p", "protocol": "arduino",
                                                          "speed": "115200"}
    assert avrdude.upload_settings("arduino:avr:nano:cpu=atmega328old")["speed"] == "57600"
    assert avrdude.upload_settings("arduino:avr:mega")["protocol"] == "wiring"
    with pytest.raises(ToolchainError, match="1200|plain open"):
        avrdude.upload_settings("arduino:avr:leonardo")  # needs the 1200-bps touch
    with pytest.raises(ToolchainError, match="only arduino:avr"):
        avrdude.upload_settings("arduino:mbed_nano:nano33ble")


# ------------------------------------------------------------------ the watchdog

@pytest.fixture
def wdt_uno(uno, hexes):
    avrdude.upload(hexes["watchdog"], uno.port)
    return uno


def _session(port: str, commands: list[bytes], seconds: float = 1.5) -> list[bytes]:
    out = []
    with serial.Serial(port, 115200, timeout=0.1) as ser:
        end = time.monotonic() + 5
        got = b""
        while b"#watchdog ready" not in got and time.monotonic() < end:
            got += ser.read(256)
        out += [ln for ln in got.split(b"\r\n") if ln]
        for command in commands:
            ser.write(command + b"\n")
            got, end = b"", time.monotonic() + seconds
            while time.monotonic() < end:
                got += ser.read(4096)
            out += [ln for ln in got.split(b"\r\n") if ln]
    return out


def test_a_watchdog_reset_goes_straight_to_the_sketch(wdt_uno):
    before = wdt_uno.boots.count("watchdog")
    lines = _session(wdt_uno.port, [b"hang"])
    # one reset by the sketch's watchdog; optiboot sees WDRF, turns the watchdog off and
    # starts the sketch again at once (no 1 s bootloader wait), which then keeps running
    assert lines == [b"#watchdog ready 0", b"hanging", b"#watchdog ready 0"], lines
    assert wdt_uno.boots.count("watchdog") - before == 2  # the boot after the open, and this one


def test_watchdog_timed_sequence(wdt_uno):
    start = time.monotonic()
    lines = _session(wdt_uno.port, [b"off", b"late"])
    # turned off with WDCE: the sketch runs on; cleared without WDCE: WDE stays, it resets
    assert lines[:2] == [b"#watchdog ready 0", b"off"], lines
    assert lines[2:] == [b"#watchdog ready 0"], lines  # "still running" never printed
    boots = wdt_uno.boots.count("watchdog")
    lines = _session(wdt_uno.port, [b"change"], seconds=1.0)
    # a prescaler change inside the timed sequence takes effect: 15 ms, not the 2 s before it
    assert lines == [b"#watchdog ready 0", b"changed", b"#watchdog ready 0"], lines
    assert wdt_uno.boots.count("watchdog") == boots + 2
    assert time.monotonic() - start < 20
