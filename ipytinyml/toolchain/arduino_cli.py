"""arduino-cli for real boards: find it, check the core and library, compile, upload.

Every call runs arduino-cli as a subprocess with an argument list (never a
shell) and ``--format json``, and reads the JSON, never the text output.
What a failure means comes from the JSON (``success``, ``error``,
``builder_result.diagnostics``), not from the exit code: the codes above 7
changed meaning between arduino-cli versions (brief section 6), so the code
only says "failed or not". With ``--format json`` a failed command still
prints JSON: ``compile`` the full result with ``success: false`` on stdout;
most others ``{"error": ..., "output": {"stdout", "stderr"}}`` on stderr.

Failures raise :class:`~ipytinyml.errors.ToolchainError` with one line (what
failed and what to do), and two attributes for the curious:
``stderr_tail`` (the last lines arduino-cli or the tool it ran printed) and
``diagnostics`` (one ``file:line:col: severity: message`` line per compiler
diagnostic).

The executable is ``IPYTINYML_ARDUINO_CLI`` when set, else ``arduino-cli`` on
``PATH``; an explicit path wins over both. Each resolved executable is
version-checked once per process.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ToolchainError

__all__ = [
    "ENV_VAR",
    "BOARD_ALIASES",
    "ArduinoCli",
    "CompileResult",
    "UploadResult",
    "find_arduino_cli",
    "arduino_cli",
    "platform_of",
    "check_fqbn",
    "check_port",
    "install_commands",
    "upload_and_reacquire",
]

ENV_VAR = "IPYTINYML_ARDUINO_CLI"
BOARD_ALIASES = {
    "nano33ble": "arduino:mbed_nano:nano33ble",  # Nano 33 BLE and BLE Sense
    "uno": "arduino:avr:uno",
}
TIMEOUT = 120.0  # version, lists
COMPILE_TIMEOUT = 1800.0  # a first TFLM build compiles the whole library
UPLOAD_TIMEOUT = 300.0
INSTALL_TIMEOUT = 3600.0  # the mbed core is a large download
TAIL_LINES = 15

_INSTALL_DOC = ("install arduino-cli (see the arduino-cli installation guide) and put it on PATH, "
                f"or set {ENV_VAR} to its path")


def _error(message: str, hint: str | None = None, *, stderr: str = "",
           diagnostics: list[str] | None = None) -> ToolchainError:
    err = ToolchainError(message, hint=hint)
    err.stderr_tail = _tail(stderr)
    err.diagnostics = list(diagnostics or [])
    return err


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(str(text or "").rstrip().splitlines()[-lines:])


# vendor:architecture:board, then optional menu options (key=value, comma-separated).
FQBN_PATTERN = re.compile(r"[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+(:[A-Za-z0-9_=,.-]+)?\Z")


def check_fqbn(fqbn) -> str:
    """``fqbn`` if it is a well-formed FQBN, else ToolchainError (before it reaches a command line).

    >>> check_fqbn("arduino:avr:uno")
    'arduino:avr:uno'
    """
    text = str(fqbn)
    if not FQBN_PATTERN.match(text) or text.startswith("-"):
        raise ToolchainError(f"{text!r} is not an FQBN; use vendor:architecture:board, "
                             "e.g. arduino:avr:uno")
    return text


def check_port(port) -> str:
    """``port`` if it can be a serial port address, else ToolchainError.

    Refused before anything runs: an empty name, one starting with ``-``
    (a command-line option), and control characters or surrounding spaces.
    """
    text = str(port) if port is not None else ""
    if (not text or text.startswith("-") or text != text.strip()
            or any(ord(c) < 32 or ord(c) == 127 for c in text)):
        raise ToolchainError(f"{text!r} is not a serial port",
                             hint="give a device such as /dev/ttyACM0 or COM3")
    return text


def platform_of(fqbn: str) -> str:
    """The platform (core) id of an FQBN: ``vendor:architecture``.

    >>> platform_of("arduino:mbed_nano:nano33ble")
    'arduino:mbed_nano'
    """
    return ":".join(check_fqbn(fqbn).split(":")[:2])


def install_commands(platform: str | None = None, library: str | None = None) -> list[str]:
    """The shell commands that install a core and/or a library, for messages.

    >>> install_commands("arduino:avr", "Chirale_TensorFLowLite")
    ['arduino-cli core update-index', 'arduino-cli core install arduino:avr', 'arduino-cli lib install Chirale_TensorFLowLite']
    """
    commands = []
    if platform:
        commands += ["arduino-cli core update-index", f"arduino-cli core install {platform}"]
    if library:
        commands.append(f"arduino-cli lib install {library}")
    return commands


def find_arduino_cli(path: str | os.PathLike | None = None) -> Path | None:
    """The arduino-cli executable: ``path``, else ``$IPYTINYML_ARDUINO_CLI``, else ``PATH``.

    Returns None when none is found. A ``path`` or environment value that
    names no executable file is an error (it was asked for explicitly).
    """
    for source, value in (("path", path), (ENV_VAR, os.environ.get(ENV_VAR))):
        if value:
            found = shutil.which(str(value))
            if not found:
                raise ToolchainError(f"arduino-cli not found at {value} (from {source})",
                                     hint=f"point {ENV_VAR} at the arduino-cli executable")
            return Path(found)
    found = shutil.which("arduino-cli")
    return Path(found) if found else None


@functools.lru_cache(maxsize=8)
def _cached(executable: str) -> "ArduinoCli":
    cli = ArduinoCli(executable)
    cli.version()  # fails early, once, if the file is not a working arduino-cli
    return cli


def arduino_cli(path: str | os.PathLike | None = None) -> "ArduinoCli":
    """A checked :class:`ArduinoCli` (cached per executable); ToolchainError when missing."""
    found = find_arduino_cli(path)
    if found is None:
        raise ToolchainError("arduino-cli is not installed, so real boards cannot be built or "
                             "flashed", hint=_INSTALL_DOC + "; --board sim needs no arduino-cli")
    return _cached(str(found))


@dataclass(frozen=True)
class CompileResult:
    """What ``arduino-cli compile`` reported for a successful build."""

    fqbn: str
    output_dir: Path
    build_path: str | None
    flash_bytes: int | None  # the "text" section (program storage)
    flash_max: int | None
    ram_bytes: int | None  # the "data" section (static RAM)
    ram_max: int | None
    warnings: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()  # "name version" of the libraries used
    log: str = ""

    def to_dict(self) -> dict:
        return {"fqbn": self.fqbn, "flash_bytes": self.flash_bytes, "flash_max": self.flash_max,
                "ram_bytes": self.ram_bytes, "ram_max": self.ram_max,
                "libraries": list(self.libraries), "warnings": list(self.warnings)}


@dataclass(frozen=True)
class UploadResult:
    """What ``arduino-cli upload`` reported: the port to use from now on."""

    port: str  # updated_upload_port's address when given, else the port uploaded to
    uploaded_to: str
    port_properties: dict = field(default_factory=dict)  # vid, pid, serialNumber, ...
    log: str = ""

    @property
    def port_changed(self) -> bool:
        return self.port != self.uploaded_to


@dataclass(frozen=True)
class _Run:
    data: object  # parsed JSON (dict or list), None if there was none
    returncode: int
    stdout: str
    stderr: str


def _parse_json(text: str):
    text = (text or "").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start > 0:  # text before the JSON (a stray log line)
        try:
            return json.loads(text[start:])
        except ValueError:
            return None
    return None


def _diagnostic_line(d: dict, sketch: Path | None) -> str:
    file = str(d.get("file") or "?")
    if sketch is not None:
        try:
            file = str(Path(file).resolve().relative_to(sketch.resolve()))
        except (ValueError, OSError):
            pass
    where = file
    if d.get("line"):
        where += f":{d['line']}"
        if d.get("column"):
            where += f":{d['column']}"
    severity = str(d.get("severity") or "error").lower()
    message = " ".join(str(d.get("message") or "").split())
    return f"{where}: {severity}: {message}"


def _sections(builder: dict) -> dict[str, dict]:
    return {str(s.get("name")): s for s in builder.get("executable_sections_size") or [] if isinstance(s, dict)}


def _missing_header(diagnostics: list[dict]) -> str | None:
    for d in diagnostics:
        message = str(d.get("message") or "")
        if "No such file or directory" in message:
            return message.split(":")[0].strip()
    return None


class ArduinoCli:
    """One arduino-cli executable. Methods raise ToolchainError with one line on failure."""

    def __init__(self, executable: str | os.PathLike, *, env: dict | None = None):
        self.executable = str(executable)
        self.env = env
        self._version: str | None = None

    def __repr__(self) -> str:
        return f"ArduinoCli({self.executable!r})"

    # -- running -----------------------------------------------------------------------
    def run(self, args: list[str], *, timeout: float = TIMEOUT, what: str | None = None) -> _Run:
        """Run ``arduino-cli ARGS --format json``; the parsed JSON and the raw streams."""
        argv = [self.executable, *map(str, args), "--format", "json"]
        what = what or f"arduino-cli {' '.join(map(str, args[:2]))}"
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, env=self.env)
        except FileNotFoundError as exc:
            raise _error(f"arduino-cli not found at {self.executable}", hint=_INSTALL_DOC) from exc
        except PermissionError as exc:
            raise _error(f"{self.executable} is not executable", hint=_INSTALL_DOC) from exc
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            raise _error(f"{what} did not finish within {timeout:.0f} s",
                         hint="check the board connection and that arduino-cli works in a terminal",
                         stderr=stderr) from exc
        data = _parse_json(proc.stdout)
        if data is None:
            data = _parse_json(proc.stderr)
        return _Run(data=data, returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)

    def _check(self, run: _Run, what: str, hint: str | None = None) -> object:
        """The JSON of a command that must succeed; ToolchainError otherwise."""
        data = run.data
        error = data.get("error") if isinstance(data, dict) else None
        if run.returncode == 0 and data is not None and not error:
            return data
        if error:
            message = " ".join(str(error).split())
        elif data is None:
            message = "printed no JSON" + (f" (exit code {run.returncode})" if run.returncode else "")
        else:
            message = f"exit code {run.returncode}"
        raise _error(f"{what} failed: {message}", hint=hint,
                     stderr=_output_streams(data) or run.stderr or run.stdout)

    # -- facts ---------------------------------------------------------------------------
    def version(self) -> str:
        """``VersionString`` of ``arduino-cli version`` (cached)."""
        if self._version is None:
            run = self.run(["version"])
            if run.data is None:
                raise _error(f"{self.executable} does not look like arduino-cli (its version command "
                             "printed no JSON)", hint=_INSTALL_DOC, stderr=run.stderr or run.stdout)
            data = self._check(run, f"{self.executable} version", hint=_INSTALL_DOC)
            version = data.get("VersionString") if isinstance(data, dict) else None
            if not version:
                raise _error(f"{self.executable} does not look like arduino-cli (no VersionString)",
                             hint=_INSTALL_DOC)
            self._version = str(version)
        return self._version

    def installed_platforms(self) -> dict[str, str]:
        """Installed cores: platform id -> version (``core list``; 1.x and 0.x shapes)."""
        data = self._check(self.run(["core", "list"]), "arduino-cli core list")
        items = data.get("platforms") if isinstance(data, dict) else data
        found = {}
        for item in items or []:
            if not isinstance(item, dict) or not item.get("id"):
                continue
            version = item.get("installed_version") or item.get("installed") or ""
            listed_as_installed = "installed_version" not in item and "installed" not in item
            if version or listed_as_installed:  # plain `core list` shows installed cores only
                found[str(item["id"])] = str(version)
        return found

    def installed_libraries(self) -> dict[str, dict]:
        """Installed libraries: name -> ``{"version", "includes", "location"}`` (``lib list``)."""
        data = self._check(self.run(["lib", "list"]), "arduino-cli lib list")
        items = data.get("installed_libraries") if isinstance(data, dict) else data
        found = {}
        for item in items or []:
            lib = item.get("library") if isinstance(item, dict) else None
            if not isinstance(lib, dict) or not lib.get("name"):
                continue
            found[str(lib["name"])] = {"version": str(lib.get("version") or ""),
                                       "includes": list(lib.get("provides_includes") or []),
                                       "location": str(lib.get("location") or "")}
        return found

    def missing(self, fqbn: str, *, library: str | None = None, header: str | None = None) -> list[str]:
        """Install commands for what ``fqbn`` (and ``library``, found by name or by ``header``) lacks."""
        platform = platform_of(fqbn)
        commands = []
        if platform not in self.installed_platforms():
            commands += install_commands(platform)
        if library:
            libs = self.installed_libraries()
            if library not in libs and not (header and any(header in v["includes"] for v in libs.values())):
                commands += install_commands(library=library)
        return commands

    def check_ready(self, fqbn: str, *, library: str | None = None, header: str | None = None) -> None:
        """Raise ToolchainError (one line, the exact commands) if the core or library is missing."""
        commands = self.missing(fqbn, library=library, header=header)
        if not commands:
            return
        what = []
        if any(" core install " in c for c in commands):
            what.append(f"the Arduino core {platform_of(fqbn)}")
        if any(" lib install " in c for c in commands):
            what.append(f"the Arduino library {library}")
        raise _error(f"{' and '.join(what)} {'is' if len(what) == 1 else 'are'} not installed; run: "
                     + " && ".join(commands),
                     hint="or call ipytinyml.toolchain.arduino_cli.arduino_cli().install(...)")

    def install(self, fqbn: str, *, library: str | None = None, progress=None) -> list[str]:
        """Opt-in: install the core of ``fqbn`` and ``library`` if missing (downloads).

        Returns the commands that were run (empty when nothing was missing).
        """
        commands = self.missing(fqbn, library=library)
        for command in commands:
            if progress:
                progress(command)
            args = command.split()[1:]
            self._check(self.run(args, timeout=INSTALL_TIMEOUT, what=command), command,
                        hint="check the network connection, then run the command in a terminal")
        return commands

    # -- build and upload ----------------------------------------------------------------------
    def compile(self, sketch: str | os.PathLike, fqbn: str, output_dir: str | os.PathLike, *,
                libraries=(), build_properties=(), clean: bool = False,
                timeout: float = COMPILE_TIMEOUT) -> CompileResult:
        """``arduino-cli compile --fqbn FQBN --output-dir OUT --format json SKETCH``.

        Returns flash ("text") and RAM ("data") use from
        ``builder_result.executable_sections_size``. A failed build raises
        ToolchainError whose message is the first error as ``file:line:col``
        (``.diagnostics`` has them all).
        """
        sketch = Path(sketch)
        output_dir = Path(output_dir)
        platform_of(fqbn)
        if not sketch.is_dir():
            raise ToolchainError(f"sketch folder {sketch} does not exist")
        output_dir.mkdir(parents=True, exist_ok=True)
        args = ["compile", "--fqbn", fqbn, "--output-dir", str(output_dir)]
        for lib in libraries:
            args += ["--library", str(lib)]
        for prop in build_properties:
            args += ["--build-property", str(prop)]
        if clean:
            args.append("--clean")
        # absolute, so a folder named like an option (-x) can never read as one
        run = self.run([*args, str(sketch.absolute())], timeout=timeout,
                       what=f"arduino-cli compile for {fqbn}")
        data = run.data if isinstance(run.data, dict) else {}
        builder = data.get("builder_result") or {}
        diags = [d for d in builder.get("diagnostics") or [] if isinstance(d, dict)]
        lines = [_diagnostic_line(d, sketch) for d in diags]
        errors = [ln for d, ln in zip(diags, lines) if str(d.get("severity", "")).upper() in ("ERROR", "FATAL")]
        warnings = tuple(ln for d, ln in zip(diags, lines) if str(d.get("severity", "")).upper() == "WARNING")
        log = "\n".join(x for x in (data.get("compiler_out"), data.get("compiler_err")) if x)
        if data.get("success") is True and run.returncode == 0:
            sections = _sections(builder)
            text, ram = sections.get("text", {}), sections.get("data", {})
            libs = tuple(f"{lib.get('name')} {lib.get('version', '')}".strip()
                         for lib in builder.get("used_libraries") or [] if isinstance(lib, dict))
            return CompileResult(fqbn=fqbn, output_dir=output_dir, build_path=builder.get("build_path"),
                                 flash_bytes=text.get("size"), flash_max=text.get("max_size"),
                                 ram_bytes=ram.get("size"), ram_max=ram.get("max_size"),
                                 warnings=warnings, libraries=libs, log=log)
        raise self._compile_error(run, data, fqbn, errors, diags)

    def _compile_error(self, run: _Run, data: dict, fqbn: str, errors: list[str],
                       diags: list[dict]) -> ToolchainError:
        stderr = data.get("compiler_err") or _output_streams(data) or run.stderr or run.stdout
        error = " ".join(str(data.get("error") or "").split())
        header = _missing_header(diags)
        if header:
            from ..codegen.tflm import HEADERS
            library = HEADERS.get(header)
            hint = (f"run: arduino-cli lib install {library}" if library
                    else f"install the Arduino library that provides {header}")
            return _error(f"compile failed for {fqbn}: {header} not found ({errors[0] if errors else ''})",
                          hint=hint, stderr=stderr, diagnostics=errors)
        if "platform not installed" in error or "not found: platform" in error.lower():
            platform = platform_of(fqbn)
            return _error(f"compile failed: the Arduino core {platform} is not installed; run: "
                          + " && ".join(install_commands(platform)), stderr=stderr)
        if errors:
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            return _error(f"compile failed for {fqbn}: {errors[0]}{more}",
                          hint="the generated sketch should compile; please report this with the "
                               "error's .diagnostics", stderr=stderr, diagnostics=errors)
        if not data:
            return _error(f"arduino-cli compile printed no JSON (exit code {run.returncode})",
                          hint="check that arduino-cli works in a terminal", stderr=stderr)
        return _error(f"compile failed for {fqbn}: {error or f'exit code {run.returncode}'}",
                      stderr=stderr)

    def upload(self, port: str, fqbn: str, input_dir: str | os.PathLike, *, verify: bool = False,
               timeout: float = UPLOAD_TIMEOUT) -> UploadResult:
        """``arduino-cli upload -p PORT --fqbn FQBN --input-dir DIR --format json``.

        The caller must have closed its own handle on ``port`` first: boards
        with the 1200-bps touch (Nano 33 BLE) need the port free. Returns the
        port to use afterwards: ``updated_upload_port`` when arduino-cli
        reports one (the board may come back under another name).
        """
        platform_of(fqbn)
        port = check_port(port)
        input_dir = Path(input_dir)
        if not input_dir.is_dir():
            raise ToolchainError(f"build folder {input_dir} does not exist; compile first")
        args = ["upload", "-p", str(port), "--fqbn", fqbn, "--input-dir", str(input_dir)]
        if verify:
            args.append("--verify")
        run = self.run(args, timeout=timeout, what=f"arduino-cli upload to {port}")
        data = run.data if isinstance(run.data, dict) else {}
        log = "\n".join(x for x in (data.get("stdout"), data.get("stderr")) if x)
        if run.returncode == 0 and data and not data.get("error"):
            updated = data.get("updated_upload_port") or {}
            new_port = str(updated.get("address") or port)
            return UploadResult(port=new_port, uploaded_to=str(port),
                                port_properties=dict(updated.get("properties") or {}), log=log)
        error = " ".join(str(data.get("error") or "").split()) or f"exit code {run.returncode}"
        stderr = _output_streams(data) or run.stderr or run.stdout
        if "busy" in (error + " " + stderr).lower():
            from ..ports import describe_holders
            raise _error(f"upload to {port} failed: the port is busy{describe_holders(port)}",
                         hint="close the Serial Monitor or any program using the port, then flash again",
                         stderr=stderr)
        raise _error(f"upload to {port} failed: {error}",
                     hint="check the cable and the port; for a Nano 33 BLE, double-press its reset "
                          "button (bootloader mode) and flash again", stderr=stderr)

    def board_list(self, *, timeout: float = 60.0):
        """The raw JSON of ``board list`` (see ``toolchain.discovery.parse_board_list``)."""
        return self._check(self.run(["board", "list"], timeout=timeout), "arduino-cli board list")


def _output_streams(data) -> str:
    """The ``output`` streams of a fatal-error JSON, or "" when it has none."""
    if not isinstance(data, dict):
        return ""
    out = data.get("output")
    if isinstance(out, dict):
        return "\n".join(str(out.get(k)) for k in ("stdout", "stderr") if out.get(k))
    return ""


def upload_and_reacquire(cli: ArduinoCli, port: str, fqbn: str, build_dir, *, identity=None,
                         release=None, timeout: float = 10.0, lister=None,
                         progress=None) -> tuple[UploadResult, str]:
    """Free the port, upload, and wait until the board's port is back; returns (result, port).

    ``release`` is the host's open handle on the board (a Link, a Board, a
    serial object or None): it is closed first, because the 1200-bps touch
    needs the port. If another process holds the port the upload is not
    attempted (LinkError naming it). ``identity`` (a ``ports.PortIdentity``,
    e.g. ``Target.identity``) finds the port again when it re-enumerates
    under another name; arduino-cli's ``updated_upload_port`` is used first.
    The returned port exists; open it with ``ports.open_when_ready``, which
    retries while the board is still starting.
    """
    from .. import ports

    ports.release(release)
    if os.path.exists(port):
        ports.ensure_free(port)
    if progress:
        progress("upload")
    result = cli.upload(port, fqbn, build_dir)
    reported = ports.PortIdentity.from_properties(result.port_properties)
    if identity is None or not identity.known:
        identity = reported if reported.known else None
    if os.path.exists(result.port):
        return result, result.port
    return result, ports.wait_for_port(identity, port=result.port, timeout=timeout, lister=lister)
