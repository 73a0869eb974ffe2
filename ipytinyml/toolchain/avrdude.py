"""avrdude: upload a sketch to an AVR board through its serial bootloader, no arduino-cli needed.

This is how the Arduino IDE uploads to an Uno (Debian's ``platform.txt`` of
``arduino-core-avr``: ``/usr/bin/avrdude -p{build.mcu} -c{upload.protocol}
-P{port} -b{upload.speed} -D -Uflash:w:{hex}:i``), and how the virtual Uno
takes its sketches: the same avrdude talks to optiboot in the simulator.

- The board's part, protocol and speed come from the core's ``boards.txt``
  (menu options in the FQBN, e.g. ``arduino:avr:nano:cpu=atmega328old``,
  else each menu's first option, as arduino-cli does).
- avrdude runs with an argument list, never a shell, and its written flash is
  verified (avrdude reads it back) unless ``verify=False``.
- What can go wrong is one line (:class:`~ipytinyml.errors.ToolchainError`
  with ``.log``, the avrdude output): avrdude missing (with the apt-get
  command), the port missing or busy, no answer from the bootloader (not in
  sync), a verify mismatch, a sketch too big.
- Opening the port resets an Uno into its bootloader (DTR); a pty carries no
  DTR, and avrdude prints a harmless ``ioctl("TIOCMGET")`` warning there. The
  virtual Uno resets when its port is opened, which is the same thing.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ToolchainError
from .avr_build import HARDWARE_DIR, install_command

__all__ = ["AvrdudeResult", "find_avrdude", "upload_settings", "upload", "read_flash", "upload_and_reacquire"]

UPLOAD_TIMEOUT = 120.0
BOARDS_TXT = HARDWARE_DIR / "arduino" / "avr" / "boards.txt"
TAIL_LINES = 12


@dataclass(frozen=True)
class AvrdudeResult:
    """A finished avrdude run: the port, the bytes written (and verified), the wall time."""

    port: str
    bytes_written: int | None
    seconds: float
    log: str


def find_avrdude(path: str | None = None) -> str | None:
    """The avrdude executable on ``path`` (default ``$PATH``), or None."""
    return shutil.which("avrdude", path=path)


def _avrdude(path: str | None) -> str:
    found = find_avrdude(path)
    if found is None:
        raise ToolchainError("avrdude is not installed, so the sketch cannot be uploaded; install it "
                             "with: " + install_command(["avrdude"]))
    return found


def _boards_txt(boards_txt: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    try:
        text = Path(boards_txt).read_text(errors="replace")
    except OSError as exc:
        raise ToolchainError(f"cannot read the Arduino AVR core's boards.txt ({exc}); install it "
                             "with: " + install_command(["arduino-core-avr"])) from exc
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


def upload_settings(fqbn: str, boards_txt: Path | str = BOARDS_TXT) -> dict[str, str]:
    """``{"mcu", "protocol", "speed"}`` for an ``arduino:avr`` FQBN, from ``boards.txt``.

    >>> upload_settings("arduino:avr:uno")
    {'mcu': 'atmega328p', 'protocol': 'arduino', 'speed': '115200'}
    """
    parts = str(fqbn).split(":")
    if len(parts) < 3 or parts[0] != "arduino" or parts[1] != "avr":
        raise ToolchainError(f"avrdude uploads only arduino:avr boards here, not {fqbn}",
                             hint="install arduino-cli for other boards")
    board = parts[2]
    props = _boards_txt(Path(boards_txt))
    if f"{board}.name" not in props:
        raise ToolchainError(f"{fqbn} is not a board of the installed Arduino AVR core")
    chosen = dict(opt.split("=", 1) for opt in (parts[3].split(",") if len(parts) > 3 else []) if "=" in opt)
    menus: dict[str, str] = {}
    prefix = f"{board}.menu."
    for key in props:  # each menu's first option is its default (file order)
        if key.startswith(prefix):
            menu, option = key[len(prefix):].split(".", 2)[:2]
            menus.setdefault(menu, option)
    menus.update(chosen)

    def prop(name: str) -> str | None:
        for menu, option in menus.items():
            value = props.get(f"{board}.menu.{menu}.{option}.{name}")
            if value:
                return value
        return props.get(f"{board}.{name}")

    settings = {"mcu": prop("build.mcu"), "protocol": prop("upload.protocol"), "speed": prop("upload.speed")}
    if (prop("upload.tool") not in (None, "avrdude") or prop("upload.use_1200bps_touch") == "true"
            or not all(settings.values())):
        raise ToolchainError(f"{fqbn} is not uploaded with avrdude through a serial bootloader "
                             "reached by a plain open of its port",
                             hint="install arduino-cli for this board")
    return settings  # type: ignore[return-value]


def _tail(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not set(ln.strip()) <= set("#|")]
    return "\n".join(lines[-TAIL_LINES:])


def _failure(log: str, port: str, what: str) -> ToolchainError:
    text = log.lower()
    if "not in sync" in text or "not responding" in text or "getsync" in text or "protocol error" in text:
        err = ToolchainError(f"{what} failed: no bootloader answered on {port} (avrdude: not in sync)",
                             hint="is it an Uno (or another board with this FQBN) and the right "
                                  "port? Press its reset button just before uploading if it "
                                  "does not reset on its own")
    elif "busy" in text or "resource temporarily unavailable" in text:
        from ..ports import describe_holders
        err = ToolchainError(f"{what} failed: {port} is busy{describe_holders(port)}",
                             hint="close the Serial Monitor or the program using the port, then try again")
    elif "no such file" in text or "can't open device" in text or "cannot open port" in text:
        err = ToolchainError(f"{what} failed: port {port} not found",
                             hint="plug the board in or pick another port")
    elif "permission denied" in text:
        err = ToolchainError(f"{what} failed: no permission to open {port}",
                             hint="add your user to the dialout group (Linux) and log in again")
    elif "verification mismatch" in text or "verification error" in text or "mismatch at" in text:
        err = ToolchainError(f"{what} failed: the flash read back differs from the sketch",
                             hint="upload again; if it persists the chip's flash may be worn")
    elif "out of range" in text or "exceeds" in text or "too big" in text:
        err = ToolchainError(f"{what} failed: the sketch does not fit in the board's flash")
    else:
        last = next((ln.strip() for ln in reversed(log.splitlines())
                     if "error" in ln.lower() and "tiocmget" not in ln.lower()), None)
        err = ToolchainError(f"{what} failed: {last or 'avrdude gave no reason'}")
    err.log = log
    return err


_WRITTEN = re.compile(r"(\d+) bytes of flash (?:verified|written)")


def _run(args: list[str], port: str, what: str, timeout: float, path: str | None) -> tuple[str, float]:
    from .arduino_cli import check_port

    check_port(port)
    argv = [_avrdude(path), *args]
    start = time.perf_counter()
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL, env=dict(os.environ, LC_ALL="C"))
    except subprocess.TimeoutExpired as exc:
        err = ToolchainError(f"{what} did not finish within {timeout:g} s",
                             hint="check the board and the port")
        err.log = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                          for x in (exc.stdout, exc.stderr))
        raise err from None
    except OSError as exc:
        raise ToolchainError(f"cannot run avrdude: {exc}") from exc
    seconds = time.perf_counter() - start
    log = run.stdout + run.stderr
    if run.returncode != 0:
        raise _failure(log, port, what)
    return log, seconds


def _hex_arg(path: Path) -> str:
    # avrdude splits -U on ':'; an absolute POSIX path without one is unambiguous
    text = str(Path(path).absolute())
    if ":" in text:
        raise ToolchainError(f"avrdude cannot take a file whose path contains ':' ({text})")
    return text


def upload(hexfile: Path | str, port: str, fqbn: str = "arduino:avr:uno", *, verify: bool = True,
           timeout: float = UPLOAD_TIMEOUT, path: str | None = None) -> AvrdudeResult:
    """Write ``hexfile`` to the board on ``port`` through its bootloader (``avrdude -D -U flash:w``).

    The caller must have closed its own handle on ``port``. Raises
    ToolchainError with one line (``.log`` has avrdude's output).
    """
    hexfile = Path(hexfile)
    if not hexfile.is_file():
        raise ToolchainError(f"no sketch to upload at {hexfile}: build it first")
    s = upload_settings(fqbn)
    args = ["-p", s["mcu"], "-c", s["protocol"], "-P", str(port), "-b", s["speed"], "-D",
            "-U", f"flash:w:{_hex_arg(hexfile)}:i"]
    if not verify:
        args.insert(0, "-V")
    log, seconds = _run(args, str(port), f"avrdude upload to {port}", timeout, path)
    found = _WRITTEN.findall(log)
    return AvrdudeResult(port=str(port), bytes_written=int(found[-1]) if found else None,
                         seconds=seconds, log=_tail(log))


def read_flash(port: str, out_hex: Path | str, fqbn: str = "arduino:avr:uno", *,
               timeout: float = UPLOAD_TIMEOUT, path: str | None = None) -> Path:
    """Read the board's flash back through its bootloader into ``out_hex`` (Intel HEX)."""
    s = upload_settings(fqbn)
    out_hex = Path(out_hex)
    _run(["-p", s["mcu"], "-c", s["protocol"], "-P", str(port), "-b", s["speed"], "-D",
          "-U", f"flash:r:{_hex_arg(out_hex)}:i"], str(port), f"avrdude read from {port}", timeout, path)
    return out_hex


def upload_and_reacquire(hexfile: Path | str, port: str, fqbn: str = "arduino:avr:uno", *,
                         identity=None, release=None, timeout: float = 10.0, lister=None,
                         progress=None) -> tuple[AvrdudeResult, str]:
    """Free the port, upload with avrdude, wait until the port is there again; ``(result, port)``.

    The avrdude counterpart of ``arduino_cli.upload_and_reacquire``: ``release``
    (the host's own Link/Board/serial on the port) is closed first; another
    process holding the port stops it before avrdude runs (LinkError naming
    it). An Uno keeps its port name across an upload; ``identity`` (USB
    VID/PID/serial) finds it again if it does not. Open the returned port with
    ``ports.open_when_ready``: the sketch starts about a second after the
    open resets the board.
    """
    from .. import ports

    port = str(port)
    ports.release(release)
    if os.path.exists(port):
        ports.ensure_free(port)
    if progress:
        progress("upload")
    result = upload(hexfile, port, fqbn)
    if os.path.exists(port):
        return result, port
    return result, ports.wait_for_port(identity, port=port, timeout=timeout, lister=lister)
