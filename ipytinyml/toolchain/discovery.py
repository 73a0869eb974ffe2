"""Which real board is attached, on which port, and which FQBN builds for it.

Two sources, best first:

1. ``arduino-cli board list --format json``. Since arduino-cli 1.0 the ports
   are wrapped as ``{"detected_ports": [...]}``; before that the answer was a
   bare array. Each entry has a ``port`` (``address``, ``protocol``,
   ``properties`` with ``vid``/``pid``/``serialNumber``) and, for boards the
   installed cores know, ``matching_boards`` (``name``, ``fqbn``). Unknown
   USB ids (CH340 Uno clones) have no ``matching_boards``.
2. ``serial.tools.list_ports`` when arduino-cli is not installed.

Either way, ports without a board match are identified by VID/PID with the
small table below. :func:`find_board` resolves the user's ``--board``
(``auto``, ``nano33ble``, ``uno`` or an FQBN) and ``--port`` to one
:class:`Target`; it returns None when ``--board auto`` finds nothing (the
caller then uses the virtual board and says so), and raises ToolchainError
with one line when the choice is ambiguous or impossible.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import ToolchainError
from ..ports import PortIdentity
from .arduino_cli import BOARD_ALIASES, check_port

__all__ = ["KNOWN_USB_IDS", "DetectedPort", "Target", "parse_board_list", "ports_from_pyserial",
           "list_ports", "resolve_fqbn", "find_board", "no_board_note"]

# (vid, pid) -> (alias, FQBN, name). PIDs of the Nano 33 BLE family from
# ArduinoCore-mbed boards.txt (bootloader 0x005a, sketch 0x805a; the
# 0x015a/0x025a pair is the Sense Rev2), Uno ids from ArduinoCore-avr.
KNOWN_USB_IDS: dict[tuple[int, int], tuple[str, str, str]] = {
    **{(0x2341, pid): ("nano33ble", BOARD_ALIASES["nano33ble"], "Arduino Nano 33 BLE")
       for pid in (0x005A, 0x805A, 0x015A, 0x025A)},
    **{(vid, pid): ("uno", BOARD_ALIASES["uno"], "Arduino Uno")
       for vid, pid in ((0x2341, 0x0043), (0x2341, 0x0001), (0x2A03, 0x0043), (0x2341, 0x0243))},
}
# USB-serial chips found on Uno clones: a likely Uno, but not certain.
CLONE_CHIPS = {(0x1A86, 0x7523): "CH340", (0x1A86, 0x7522): "CH340", (0x0403, 0x6001): "FTDI FT232R",
               (0x10C4, 0xEA60): "CP210x"}

_FQBN = re.compile(r"[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+(:[A-Za-z0-9_.,=-]+)?\Z")


@dataclass(frozen=True)
class DetectedPort:
    """One serial port and what is known of the board on it."""

    address: str
    protocol: str = "serial"
    label: str = ""
    identity: PortIdentity = PortIdentity()
    boards: tuple[tuple[str, str], ...] = ()  # (name, fqbn) matches from arduino-cli
    source: str = "arduino-cli"  # or "pyserial"

    @property
    def fqbns(self) -> tuple[str, ...]:
        return tuple(f for _, f in self.boards if f)

    def guess(self) -> tuple[str | None, str | None, str]:
        """``(alias, fqbn, name)`` for this port: arduino-cli's match, else the USB id table."""
        key = (self.identity.vid, self.identity.pid)
        known = KNOWN_USB_IDS.get(key) if None not in key else None
        for name, fqbn in self.boards:
            alias = next((a for a, f in BOARD_ALIASES.items() if f == fqbn), None)
            if alias:
                return alias, fqbn, name
        if self.boards:
            name, fqbn = self.boards[0]
            return None, fqbn, name
        if known:
            return known
        chip = CLONE_CHIPS.get(key) if None not in key else None
        if chip:
            return None, None, f"unknown board with a {chip} USB-serial chip (Uno clones use one)"
        return None, None, "unknown board"

    @property
    def is_board(self) -> bool:
        """True when this port is a board we can name (not a bare USB-serial chip or a modem)."""
        return self.guess()[1] is not None

    def describe(self) -> str:
        alias, fqbn, name = self.guess()
        ids = f", USB {self.identity}" if self.identity.known else ""
        return f"{name} on {self.address}" + (f" ({fqbn}{ids})" if fqbn else f" ({ids[2:] or 'no USB id'})")


@dataclass(frozen=True)
class Target:
    """The board to build for and flash."""

    fqbn: str
    port: str
    alias: str | None  # "nano33ble", "uno" or None for another FQBN
    name: str
    identity: PortIdentity
    note: str | None = None  # one line worth showing the user (how the choice was made)

    @property
    def runtime(self) -> str:
        """The default runtime: TFLM on the mbed (32-bit) cores, native C elsewhere."""
        return "tflm" if ":mbed" in self.fqbn else "native"


# ------------------------------------------------------------------------------ parsing


def _port_entry(entry: dict) -> DetectedPort | None:
    port = entry.get("port") if isinstance(entry.get("port"), dict) else entry  # pre-0.20: flat
    address = port.get("address")
    if not address:
        return None
    props = dict(port.get("properties") or {})
    for key in ("vid", "pid"):  # very old versions put these at the top level
        if key not in props and port.get(key):
            props[key] = port[key]
    if "serialNumber" not in props and port.get("serial_number"):
        props["serialNumber"] = port["serial_number"]
    matches = entry.get("matching_boards") or entry.get("boards") or []
    boards = tuple((str(b.get("name") or ""), str(b.get("fqbn") or "")) for b in matches
                   if isinstance(b, dict) and not b.get("is_hidden"))
    return DetectedPort(address=str(address), protocol=str(port.get("protocol") or "serial"),
                        label=str(port.get("label") or address),
                        identity=PortIdentity.from_properties(props), boards=boards)


def parse_board_list(data) -> list[DetectedPort]:
    """Ports from ``board list --format json``: the 1.x ``detected_ports`` wrapper or a bare array.

    Only serial ports are kept (network ports cannot run the protocol).
    """
    if isinstance(data, dict):
        entries = data.get("detected_ports") or data.get("ports") or []
    elif isinstance(data, list):
        entries = data
    elif data is None:
        entries = []
    else:
        raise ToolchainError("arduino-cli board list printed unexpected JSON",
                             hint="update arduino-cli")
    ports = [p for p in (_port_entry(e) for e in entries if isinstance(e, dict)) if p]
    return [p for p in ports if p.protocol == "serial"]


def ports_from_pyserial(lister=None) -> list[DetectedPort]:
    """Ports from ``serial.tools.list_ports`` (or ``lister()``), identified by VID/PID only."""
    if lister is None:
        from serial.tools import list_ports
        lister = list_ports.comports
    out = []
    for info in lister():
        identity = PortIdentity.from_port_info(info)
        if not identity.known:
            continue  # legacy UARTs (/dev/ttyS*) are never an Arduino here
        out.append(DetectedPort(address=str(info.device), label=str(getattr(info, "description", "") or ""),
                                identity=identity, source="pyserial"))
    return sorted(out, key=lambda p: p.address)


def list_ports(cli=None, *, lister=None) -> list[DetectedPort]:
    """Every serial port with a USB id: from arduino-cli when given, else pyserial."""
    if cli is not None:
        return parse_board_list(cli.board_list())
    return ports_from_pyserial(lister)


# ------------------------------------------------------------------------------ resolving


def resolve_fqbn(board: str) -> tuple[str | None, str]:
    """``(alias or None, FQBN)`` for ``nano33ble``, ``uno`` or an FQBN.

    >>> resolve_fqbn("uno")
    ('uno', 'arduino:avr:uno')
    >>> resolve_fqbn("arduino:mbed_nano:nano33ble")
    ('nano33ble', 'arduino:mbed_nano:nano33ble')
    """
    key = str(board).strip()
    if key in BOARD_ALIASES:
        return key, BOARD_ALIASES[key]
    if _FQBN.match(key) and not key.startswith("-"):
        base = ":".join(key.split(":")[:3])
        alias = next((a for a, f in BOARD_ALIASES.items() if f == base), None)
        return alias, key
    import difflib
    close = difflib.get_close_matches(key, list(BOARD_ALIASES), n=1)
    raise ToolchainError(f"unknown board {board!r}",
                         hint=f"did you mean {close[0]!r}?" if close else
                         "use nano33ble, uno or an FQBN like arduino:avr:uno")


def _same_board(port: DetectedPort, fqbn: str) -> bool:
    base = ":".join(fqbn.split(":")[:3])
    if base in port.fqbns:
        return True
    return port.guess()[1] == base


def _target(port: DetectedPort, fqbn: str, alias: str | None, note: str | None = None) -> Target:
    name = port.guess()[2] if _same_board(port, fqbn) else fqbn
    return Target(fqbn=fqbn, port=port.address, alias=alias, name=name, identity=port.identity, note=note)


def _listing(ports: list[DetectedPort]) -> str:
    return "; ".join(p.describe() for p in ports) if ports else "no serial ports with a USB id"


def _same_path(a: str, b: str) -> bool:
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def find_board(board: str = "auto", port: str | None = None, *, cli=None, ports=None,
               lister=None) -> Target | None:
    """Resolve ``--board`` and ``--port`` to the board to flash.

    Parameters
    ----------
    board : ``"auto"``, ``"nano33ble"``, ``"uno"`` or an FQBN
    port : a serial device, or None to find it
    cli : an ``ArduinoCli`` to list boards with; None uses pyserial
    ports : already listed ports (skips listing; for tests and callers that listed)

    Returns
    -------
    Target, or None when ``board="auto"`` finds no board (use the virtual board).

    Raises
    ------
    ToolchainError
        Several candidate boards (the line lists them and says how to
        choose), a named board that is not attached, an unidentified board
        on the given port, or a port that does not exist.
    """
    auto = str(board or "auto").strip() == "auto"
    alias, fqbn = (None, None) if auto else resolve_fqbn(board)
    port = check_port(port) if port else port
    found = list(ports) if ports is not None else list_ports(cli, lister=lister)

    if port:
        here = [p for p in found if _same_path(p.address, port)]
        if here:
            chosen = here[0]
        elif os.path.exists(port):
            chosen = DetectedPort(address=port, source="given")
        else:
            raise ToolchainError(f"port {port} does not exist", hint=f"ports found: {_listing(found)}")
        if not auto:
            seen = chosen.guess()
            mismatch = seen[1] is not None and not _same_board(chosen, fqbn)
            return _target(chosen, fqbn, alias, note=(f"The board on {port} looks like {seen[2]} "
                                                      f"({seen[1]}); building for {fqbn} as asked."
                                                      if mismatch else None))
        guess_alias, guess_fqbn, name = chosen.guess()
        if guess_fqbn is None:
            raise ToolchainError(f"the board on {port} is not identified ({name}"
                                 f"{', USB ' + str(chosen.identity) if chosen.identity.known else ''})",
                                 hint="say which it is: --board uno, --board nano33ble or an FQBN")
        return _target(chosen, guess_fqbn, guess_alias, note=f"Found {name} on {port}.")

    if auto:
        candidates = [p for p in found if p.is_board]
        if not candidates:
            return None
        if len(candidates) > 1:
            raise ToolchainError(f"found {len(candidates)} boards: {_listing(candidates)}",
                                 hint="choose one with --port (and --board)")
        chosen = candidates[0]
        guess_alias, guess_fqbn, name = chosen.guess()
        return _target(chosen, guess_fqbn, guess_alias, note=f"Found {name} on {chosen.address}.")

    candidates = [p for p in found if _same_board(p, fqbn)]
    note = None
    if not candidates and alias == "uno":
        # CH340/FTDI clones: no arduino-cli match and no Arduino USB id
        candidates = [p for p in found if not p.is_board and (p.identity.vid, p.identity.pid) in CLONE_CHIPS]
        if len(candidates) == 1:
            note = f"Using the {CLONE_CHIPS[(candidates[0].identity.vid, candidates[0].identity.pid)]} " \
                   f"board on {candidates[0].address} as an Uno (clone)."
    if not candidates:
        raise ToolchainError(f"no {fqbn} board found; ports: {_listing(found)}",
                             hint="connect the board, or give its port with --port")
    if len(candidates) > 1:
        raise ToolchainError(f"found {len(candidates)} {fqbn} boards: {_listing(candidates)}",
                             hint="choose one with --port")
    return _target(candidates[0], fqbn, alias, note=note)


def no_board_note(ports) -> str:
    """The line to show when ``find_board("auto")`` returned None (the virtual board is used).

    Mentions USB-serial devices that could be an Uno clone, so the user
    knows how to pick one.
    """
    unknown = [p for p in ports if not p.is_board and (p.identity.vid, p.identity.pid) in CLONE_CHIPS]
    if not unknown:
        return "No board found: using the virtual Arduino Uno (simavr)."
    return ("No identified board found (" + "; ".join(p.describe() for p in unknown)
            + ": use --board uno if it is an Uno clone): using the virtual Arduino Uno (simavr).")
