"""Serial ports around an upload: free them first, find them again, open them safely.

The rules come from how real boards behave (brief sections 6 and 7):

* Close the host's own handle before uploading. The Nano 33 BLE enters its
  bootloader when arduino-cli opens the port at 1200 baud (the "1200-bps
  touch"), which fails while another handle holds the port.
* Never open a port at 1200 baud ourselves: on the Nano that *is* the
  bootloader request, and the sketch would vanish.
* After an upload the board re-enumerates. The port can come back under
  another name, and it may refuse to open for a moment (udev, ModemManager
  probing a new ttyACM). So the port is found again by its USB identity
  (VID, PID, serial number) and opening is retried for up to about 10 s.
* A busy port gets one line naming the process that holds it, found by
  scanning ``/proc/*/fd`` for the device (Linux; elsewhere the line just
  says it is busy).

Everything that lists ports takes a ``lister`` (default
``serial.tools.list_ports.comports``), so tests can point it at ptys.
"""
from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import LinkError

__all__ = [
    "FORBIDDEN_BAUD",
    "REOPEN_TIMEOUT",
    "PortIdentity",
    "release",
    "port_holders",
    "describe_holders",
    "ensure_free",
    "find_port",
    "wait_for_port",
    "open_serial",
    "open_when_ready",
]

FORBIDDEN_BAUD = 1200  # the Nano 33 BLE (and other native-USB boards) reboot into the bootloader
DEFAULT_BAUD = 115200
REOPEN_TIMEOUT = 10.0
POLL = 0.1


def _as_int(value) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 16)  # arduino-cli writes "0x2341"; base 16 accepts the prefix
    except ValueError:
        return None


@dataclass(frozen=True)
class PortIdentity:
    """The USB identity of a serial port: what stays the same when its name changes."""

    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None

    @classmethod
    def from_properties(cls, properties: dict | None) -> "PortIdentity":
        """From arduino-cli's port ``properties`` (``"vid": "0x2341"``, ``"serialNumber"``).

        >>> PortIdentity.from_properties({"vid": "0x2341", "pid": "0x805A", "serialNumber": "ABC"})
        PortIdentity(vid=9025, pid=32858, serial_number='ABC')
        """
        p = properties or {}
        return cls(vid=_as_int(p.get("vid")), pid=_as_int(p.get("pid")),
                   serial_number=(p.get("serialNumber") or p.get("serial_number") or None))

    @classmethod
    def from_port_info(cls, info) -> "PortIdentity":
        """From a ``serial.tools.list_ports`` entry (``vid``, ``pid``, ``serial_number``)."""
        return cls(vid=getattr(info, "vid", None), pid=getattr(info, "pid", None),
                   serial_number=getattr(info, "serial_number", None) or None)

    @property
    def known(self) -> bool:
        return self.vid is not None

    def matches(self, other: "PortIdentity") -> bool:
        """Same board: same VID and, when both know it, the same serial number; else the same PID.

        The serial number decides when it is known, because a board's PID can
        change across an upload (the Nano 33 BLE's bootloader is 0x005a, its
        sketch 0x805a) while its serial number stays.
        """
        if not self.known or self.vid != other.vid:
            return False
        if self.serial_number and other.serial_number:
            return self.serial_number == other.serial_number
        return self.pid is None or self.pid == other.pid

    def __str__(self) -> str:
        text = f"{self.vid or 0:04x}:{self.pid or 0:04x}" if self.known else "unknown USB id"
        return text + (f" serial {self.serial_number}" if self.serial_number else "")


def _default_lister():
    from serial.tools import list_ports
    return list_ports.comports()


# ------------------------------------------------------------------------------ holders


def _pty_index(target: str) -> str | None:
    """``"3"`` for ``/dev/pts/3``, else None."""
    head, _, tail = target.rpartition("/")
    return tail if head == "/dev/pts" and tail.isdigit() else None


def _owns_pty(fd_dir: Path, fds: list[str], index: str) -> bool:
    """True if the process holds the master side (``/dev/ptmx``) of pty ``index``."""
    for fd in fds:
        try:
            if os.readlink(fd_dir / fd) != "/dev/ptmx":
                continue
            info = (fd_dir.parent / "fdinfo" / fd).read_text()
        except OSError:
            continue
        if f"tty-index:\t{index}\n" in info:
            return True
    return False


def port_holders(device: str | os.PathLike, *, proc: str | os.PathLike = "/proc") -> list[tuple[int, str]]:
    """``(pid, command name)`` of every process with ``device`` open (Linux ``/proc`` scan).

    Symlinks (``/dev/serial/by-id/...``) are resolved first. Processes whose
    file descriptors we may not read are skipped, so the list can be
    incomplete for other users' processes; empty where there is no ``/proc``.

    For a pseudo-terminal, another process that also holds its master side
    is the device itself (the virtual Uno's simulator keeps its end of the
    line open, as the USB-serial chip of a real board is always there), not
    a user of the port, and is left out. This Python process is always
    listed: its own handles are the ones to release before an upload.
    """
    try:
        target = os.path.realpath(device)
    except OSError:
        return []
    holders = []
    proc = Path(proc)
    pty_index = _pty_index(target)
    try:
        entries = [e for e in os.listdir(proc) if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        fd_dir = proc / entry / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd_dir / fd) == target:
                    break
            except OSError:
                continue
        else:
            continue
        if pty_index is not None and int(entry) != os.getpid() and _owns_pty(fd_dir, fds, pty_index):
            continue
        try:
            name = (proc / entry / "comm").read_text().strip()
        except OSError:
            name = "?"
        holders.append((int(entry), name))
    return sorted(holders)


def describe_holders(device: str | os.PathLike) -> str:
    """``" (held by screen, pid 4242)"`` for a busy port, or ``""`` when no holder is visible."""
    holders = port_holders(device)
    if not holders:
        return ""
    names = [("this Python process" if pid == os.getpid() else name) + f", pid {pid}"
             for pid, name in holders]
    return " (held by " + "; ".join(names) + ")"


def ensure_free(device: str | os.PathLike) -> None:
    """Raise LinkError, naming the holder, if any process (this one included) has ``device`` open."""
    holders = port_holders(device)
    if not holders:
        return
    if all(pid == os.getpid() for pid, _ in holders):
        raise LinkError(f"{device} is still open in this Python process; close the board "
                        "(board.close()) before flashing")
    raise LinkError(f"{device} is busy{describe_holders(device)}",
                    hint="close the Serial Monitor or the program using the port, then try again")


def release(link) -> None:
    """Close the host's handle on a port (a Link, a Board, a serial.Serial or None) before upload."""
    if link is None:
        return
    close = getattr(link, "close", None)
    if callable(close):
        close()


# ------------------------------------------------------------------------------ finding


def find_port(identity: PortIdentity, *, prefer: str | None = None, lister=None) -> str | None:
    """The device of the port whose identity matches, or None. ``prefer`` breaks ties."""
    lister = lister or _default_lister
    matches = sorted(str(info.device) for info in lister()
                     if identity.matches(PortIdentity.from_port_info(info)))
    if not matches:
        return None
    if prefer in matches:
        return prefer
    return matches[0]


def wait_for_port(identity: PortIdentity | None = None, *, port: str | None = None,
                  timeout: float = REOPEN_TIMEOUT, lister=None, poll: float = POLL) -> str:
    """Wait until the board is back after an upload and return its (possibly new) device.

    With a known ``identity`` the port is searched by VID/PID/serial number;
    otherwise ``port`` must exist again. Raises LinkError after ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    while True:
        if identity is not None and identity.known:
            found = find_port(identity, prefer=port, lister=lister)
            if found:
                return found
        elif port and os.path.exists(port):
            return port
        if time.monotonic() >= deadline:
            what = f"{identity}" if identity is not None and identity.known else str(port)
            raise LinkError(f"the board ({what}) did not come back within {timeout:.0f} s after the upload",
                            hint="unplug and replug the board, then connect again (the sketch is flashed)")
        time.sleep(poll)


# ------------------------------------------------------------------------------ opening


def _check_baudrate(baudrate: int) -> int:
    baudrate = int(baudrate)
    if baudrate == FORBIDDEN_BAUD:
        raise LinkError("refusing to open a port at 1200 baud: that resets native-USB boards "
                        "(Nano 33 BLE) into their bootloader", hint="use 115200")
    if baudrate <= 0:
        raise LinkError(f"baud rate {baudrate} is not valid", hint="use 115200")
    return baudrate


def _is_busy(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.EBUSY, errno.EAGAIN):
        return True
    text = str(exc).lower()
    return any(word in text for word in ("busy", "exclusively lock", "temporarily unavailable"))


def open_serial(device: str, baudrate: int = DEFAULT_BAUD, *, timeout: float = 0.1,
                write_timeout: float = 2.0, exclusive: bool = True):
    """Open ``device`` the careful way: create unopened, configure, then open.

    ``exclusive`` takes an advisory lock (POSIX), so two notebooks cannot
    talk to one board at once. Never at 1200 baud. Raises the pyserial error
    on failure (see :func:`open_when_ready` for retries and messages).
    """
    import serial
    port = serial.Serial()
    port.port = str(device)
    port.baudrate = _check_baudrate(baudrate)
    port.timeout = timeout
    port.write_timeout = write_timeout
    if os.name == "posix":
        port.exclusive = exclusive
    port.dtr = True  # native-USB Serial is "connected" only while DTR is up (brief 7)
    port.open()
    return port


def open_when_ready(device: str | None = None, *, identity: PortIdentity | None = None,
                    baudrate: int = DEFAULT_BAUD, timeout: float = REOPEN_TIMEOUT,
                    lister=None, poll: float = POLL, **kwargs):
    """Open the board's port, retrying for ``timeout`` s while it re-enumerates or is busy.

    The device is looked up again on every try from ``identity`` (when
    known), so a port that came back under a new name is found. Returns an
    open ``serial.Serial``. Raises LinkError with one line; for a busy port
    the line names the process holding it.
    """
    import serial
    _check_baudrate(baudrate)
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    current = device
    while True:
        if identity is not None and identity.known:
            current = find_port(identity, prefer=device, lister=lister) or current
        if current and os.path.exists(current):
            try:
                return open_serial(current, baudrate, **kwargs)
            except (serial.SerialException, OSError) as exc:
                last = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(poll)
    if current is None or not os.path.exists(current):
        what = f"{identity}" if identity is not None and identity.known else str(device)
        raise LinkError(f"no serial port for the board ({what}) within {timeout:.0f} s",
                        hint="check the cable; unplug and replug the board")
    if last is not None and _is_busy(last):
        err = LinkError(f"{current} is busy{describe_holders(current)}",
                        hint="close the Serial Monitor or the program using the port, then try again")
    else:
        err = LinkError(f"cannot open {current}: {' '.join(str(last).split())}",
                        hint="check the port name and your permissions (Linux: the dialout group)")
    raise err from last
