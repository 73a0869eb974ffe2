"""Port handling around an upload (ipytinyml/ports.py).

Real: pyserial opening pseudo-terminals (the kernel's pty driver), advisory
locks held by a second real process, the /proc scan that names it, file
system symlinks that disappear and reappear.

Stand-in: no USB board is attached, so the port list that
``serial.tools.list_ports`` would read from /sys comes from a small lister
in this file: it reports the symlinks of a folder (``ttyACM0`` -> a pty)
with the USB identity the test gave each. Re-pointing the symlinks is how a
board "re-enumerates under a new name" here.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import serial
from serial.tools.list_ports_common import ListPortInfo

from ipytinyml import ports
from ipytinyml.errors import LinkError
from ipytinyml.ports import PortIdentity

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ptys and /proc: Linux only")

NANO_SKETCH = PortIdentity(0x2341, 0x805A, "8C3A1F2E5B6D7E90")
NANO_BOOT = PortIdentity(0x2341, 0x005A, "8C3A1F2E5B6D7E90")


class Pty:
    """A pseudo-terminal: the test keeps the master side, the code under test opens ``path``."""

    def __init__(self):
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        os.close(slave)

    def read(self, n=64, timeout=2.0) -> bytes:
        import select
        ready, _, _ = select.select([self.master], [], [], timeout)
        return os.read(self.master, n) if ready else b""

    def close(self):
        os.close(self.master)


class UsbFolder:
    """A /dev/serial/by-id-like folder of symlinks, and a lister over it (the stand-in for /sys)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.ids: dict[str, PortIdentity] = {}
        self.ptys: dict[str, Pty] = {}

    def plug(self, name: str, identity: PortIdentity) -> str:
        pty = Pty()
        link = self.folder / name
        link.symlink_to(pty.path)
        self.ids[name], self.ptys[name] = identity, pty
        return str(link)

    def unplug(self, name: str) -> None:
        (self.folder / name).unlink()
        self.ids.pop(name)
        self.ptys.pop(name).close()

    def lister(self):
        out = []
        for name, identity in sorted(self.ids.items()):
            info = ListPortInfo(str(self.folder / name), skip_link_detection=True)
            info.vid, info.pid, info.serial_number = identity.vid, identity.pid, identity.serial_number
            out.append(info)
        return out

    def close(self):
        for name in list(self.ids):
            self.unplug(name)


@pytest.fixture
def usb(tmp_path):
    folder = UsbFolder(tmp_path)
    yield folder
    folder.close()


@pytest.fixture
def holder():
    """Start a second process that opens a port with pyserial's exclusive lock and keeps it."""
    procs = []

    def start(path: str, seconds: float = 30.0) -> subprocess.Popen:
        code = ("import serial, sys, time\n"
                f"s = serial.Serial({path!r}, 115200, exclusive=True)\n"
                "print('open', flush=True)\n"
                f"time.sleep({seconds})\n")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "open"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_identity_from_arduino_cli_and_pyserial():
    assert PortIdentity.from_properties({"vid": "0x2341", "pid": "0x805A", "serialNumber": "8C3A1F2E5B6D7E90"}) \
        == NANO_SKETCH
    assert PortIdentity.from_properties({}) == PortIdentity()
    assert NANO_BOOT.matches(NANO_SKETCH)  # PID changes across the upload, serial number stays
    assert not PortIdentity(0x2341, 0x805A, "OTHER").matches(NANO_SKETCH)
    assert PortIdentity(0x2341, 0x0043).matches(PortIdentity(0x2341, 0x0043, "x"))
    assert not PortIdentity(0x2341, 0x0043).matches(PortIdentity(0x2341, 0x0001))
    assert not PortIdentity().matches(PortIdentity())
    assert str(NANO_SKETCH) == "2341:805a serial 8C3A1F2E5B6D7E90"


def test_port_comes_back_under_a_new_name(usb):
    """The board in its bootloader on ttyACM0 disappears; the sketch comes back on ttyACM1."""
    old = usb.plug("ttyACM0", NANO_BOOT)
    usb.unplug("ttyACM0")  # the upload is running: no port at all

    def reenumerate():
        time.sleep(0.4)
        usb.plug("ttyACM1", NANO_SKETCH)

    thread = threading.Thread(target=reenumerate)
    thread.start()
    start = time.monotonic()
    new = ports.wait_for_port(NANO_BOOT, port=old, timeout=5, lister=usb.lister, poll=0.05)
    thread.join()
    assert new == str(usb.folder / "ttyACM1") and time.monotonic() - start >= 0.3
    with ports.open_when_ready(old, identity=NANO_BOOT, lister=usb.lister, timeout=5) as link:
        assert link.port == new and link.baudrate == 115200
        os.write(usb.ptys["ttyACM1"].master, b"#tinyml ready\n")
        link.timeout = 2
        assert link.readline() == b"#tinyml ready\n"
        link.write(b"!1 i\n")
        assert usb.ptys["ttyACM1"].read() == b"!1 i\n"


def test_open_waits_for_a_port_that_appears_late(usb):
    def plug_later():
        time.sleep(0.4)
        usb.plug("ttyACM0", NANO_SKETCH)

    thread = threading.Thread(target=plug_later)
    thread.start()
    with ports.open_when_ready(None, identity=NANO_SKETCH, lister=usb.lister, timeout=5, poll=0.05) as link:
        assert link.port == str(usb.folder / "ttyACM0")
    thread.join()


def test_same_name_without_identity(usb, tmp_path):
    path = usb.plug("ttyACM0", PortIdentity())
    assert ports.wait_for_port(None, port=path, timeout=1) == path
    with ports.open_when_ready(path, timeout=1) as link:
        assert link.is_open


def test_board_that_never_comes_back(usb):
    with pytest.raises(LinkError) as info:
        ports.wait_for_port(NANO_SKETCH, timeout=0.3, lister=usb.lister, poll=0.05)
    assert "did not come back within 0 s" in str(info.value) and "replug" in str(info.value)
    with pytest.raises(LinkError, match="no serial port for the board"):
        ports.open_when_ready(None, identity=NANO_SKETCH, lister=usb.lister, timeout=0.3, poll=0.05)


def test_busy_port_names_the_process_holding_it(usb, holder):
    path = usb.plug("ttyACM0", NANO_SKETCH)
    proc = holder(path)
    assert (proc.pid, ) in [(pid,) for pid, _ in ports.port_holders(path)]
    start = time.monotonic()
    with pytest.raises(LinkError) as info:
        ports.open_when_ready(path, timeout=0.5, poll=0.05)
    text = str(info.value)
    assert time.monotonic() - start >= 0.45  # it retried before giving up
    assert text.startswith(f"{path} is busy (held by python") and f"pid {proc.pid})" in text
    assert "Serial Monitor" in text and "\n" not in text
    with pytest.raises(LinkError, match=f"pid {proc.pid}"):
        ports.ensure_free(path)


def test_open_succeeds_once_the_holder_lets_go(usb, holder):
    path = usb.plug("ttyACM0", NANO_SKETCH)
    holder(path, seconds=0.6)
    start = time.monotonic()
    with ports.open_when_ready(path, timeout=5, poll=0.05) as link:
        assert link.is_open
    assert time.monotonic() - start >= 0.3


def test_release_before_upload(usb):
    path = usb.plug("ttyACM0", NANO_SKETCH)
    link = ports.open_serial(path)
    with pytest.raises(LinkError, match="still open in this Python process"):
        ports.ensure_free(path)
    assert ports.describe_holders(path) == f" (held by this Python process, pid {os.getpid()})"
    ports.release(link)
    ports.release(None)
    assert not link.is_open
    ports.ensure_free(path)
    assert ports.port_holders(path) == []


def test_never_opens_at_1200_baud(usb):
    path = usb.plug("ttyACM0", NANO_SKETCH)
    with pytest.raises(LinkError, match="refusing to open a port at 1200 baud"):
        ports.open_serial(path, 1200)
    with pytest.raises(LinkError, match="1200 baud"):
        ports.open_when_ready(path, baudrate=1200, timeout=1)
    assert ports.port_holders(path) == []


def test_not_a_serial_port(tmp_path):
    plain = tmp_path / "not_a_tty"
    plain.write_text("")
    with pytest.raises(LinkError) as info:
        ports.open_when_ready(str(plain), timeout=0.2, poll=0.05)
    assert str(info.value).startswith(f"cannot open {plain}: ")
    assert isinstance(info.value.__cause__, (serial.SerialException, OSError))
