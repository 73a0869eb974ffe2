"""Talk to an ipytinyml sketch over serial: the protocol of docs/protocol.md.

``Link`` opens a port (a device path, a pty, any pyserial URL, or a serial
object you made), waits for the sketch's banner, and sends requests::

    with Link("/dev/ttyACM0") as link:
        link.check_model("3f2a9c01d4e5")      # LinkError if the board runs another model
        result = link.predict([130, 150.5])   # floats; the board quantizes them
        result.outputs                        # [[17.93...], [15.2...]] (exact TFLite DEQUANTIZE)
        link.predict_raw([-128, 5]).raw       # int8 in, int8 out: bit-exact parity checks

Only pyserial is needed (no TensorFlow, numpy optional). Every read has a
deadline, lines that are not protocol lines (TFLM logs share the port) are
skipped, and every failure is a one-line ``LinkError``: port missing, port
busy, timeout, board gone, garbage on the line, an error answer, a board that
reset mid-session, a stale model. Values that cannot be sent (nan, a float32
overflow, int8 out of range, a wrong count) raise ``DataError`` before
anything is sent.

Requests are pipelined while it is safe on an Uno: the bytes sent but not
yet read by the sketch must fit its 64-byte receive buffer (see
``RX_WINDOW``).
"""
from __future__ import annotations

import errno
import math
import numbers
import struct
import time
from collections import deque
from decimal import Decimal
from dataclasses import dataclass

from .errors import DataError, LinkError

PROTO = 2                # 2: requests carry a check field (*LLCCII), see format_request
BAUDRATE = 115200
LINE_MAX = 79            # characters per request line, without the '\n'
RX_WINDOW = 63           # an Uno's Serial RX ring buffer holds 63 bytes
SEND_LIMIT = RX_WINDOW   # request lines up to this long (with '\n') pipeline
PROBE_ID = 0             # id of the info request sent when no banner comes
MAX_LINE_BYTES = 1024    # longer without a newline: garbage, unless it is an answer:
MAX_ANSWER_BYTES = 16384 # an info answer carries 22 characters per input for the
                         # pre-stage (imean/idiv): 700 inputs fit
GARBAGE_LINES = 3        # more non-text lines than this in one wait: garbage
READ_SLICE = 0.05        # seconds per blocking read; deadlines are checked between


@dataclass(frozen=True)
class BoardInfo:
    """The answer to an info request (``!<id> i``)."""

    proto: int
    runtime: str             # "native" or "tflm"
    board: str               # the board name the sketch was generated for
    model: str               # first 12 hex digits of the model's SHA-256
    n_in: int
    n_out: int
    input_scale: float       # exactly the float32 of the model
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    arena: int               # bytes of activation RAM / TFLM arena
    free: int                # free RAM on the board, bytes (0 where unknown)
    max: int                 # values per request the board accepts
    # The input pre-stage, per feature (float32 values, exact): the board quantizes typed x
    # of feature i as QUANTIZE(fl32(x - input_mean[i]) / input_div[i]). A board that does
    # not report them (older firmware) computes plain QUANTIZE: mean 0, the input scale.
    input_mean: tuple = ()
    input_div: tuple = ()

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> "BoardInfo":
        """Parse the key=value fields of an info answer; ValueError/KeyError if malformed."""
        n_in = int(fields["in"])
        input_scale = float32_from_hex(fields["iscale"])
        mean = _float32_list(fields.get("imean"), n_in, 0.0)
        div = _float32_list(fields.get("idiv"), n_in, input_scale)
        return cls(
            proto=int(fields["proto"]), runtime=fields["runtime"], board=fields["board"],
            model=fields["model"], n_in=n_in, n_out=int(fields["out"]),
            input_scale=input_scale, input_zero_point=int(fields["izp"]),
            output_scale=float32_from_hex(fields["oscale"]), output_zero_point=int(fields["ozp"]),
            arena=int(fields["arena"]), free=int(fields["free"]), max=int(fields["max"]),
            input_mean=mean, input_div=div)

    def quantize_input(self, x, feature: int) -> int:
        """The int8 the board makes of value x of the given feature (the pre-stage)."""
        return stage_quantize(x, self.input_mean[feature], self.input_div[feature],
                              self.input_zero_point)


def _float32_list(text: str | None, n: int, default: float) -> tuple:
    """n float32 values from ``0x3f800000,0x...`` (ValueError if malformed); default if absent."""
    if text is None:
        return (default,) * n
    values = tuple(float32_from_hex(part) for part in text.split(","))
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise ValueError(text)
    return values


@dataclass(frozen=True)
class Timing:
    """What a batch of requests cost."""

    device_us: int           # on-device time of all inferences, microseconds
    cycles: int | None       # CPU cycles of all inferences (AVR boards), else None
    inferences: int
    requests: int
    host_s: float            # wall time on the host, send to last answer
    tx_bytes: int            # request bytes sent
    rx_bytes: int            # answer bytes received (protocol answers only)


@dataclass(frozen=True)
class Result:
    """Outputs of ``predict``/``predict_raw``: one row per inference."""

    outputs: list            # rows of floats (predict) or of ints (predict_raw)
    raw: list                # rows of the int8 outputs
    timing: Timing

    @property
    def us(self) -> int:
        return self.timing.device_us

    @property
    def cyc(self) -> int | None:
        return self.timing.cycles

    @property
    def flat(self) -> list:
        return [v for row in self.outputs for v in row]


@dataclass(frozen=True)
class Answer:
    """One parsed answer line ``@<id> ok|err ...``."""

    rid: int
    ok: bool
    values: tuple = ()       # the bare integers of an ok answer
    fields: dict | None = None  # its key=value fields
    code: int = 0            # error code of an err answer
    text: str = ""           # its text


# ------------------------------------------------------------ framing

def float32(x) -> float:
    """x rounded to float32 (round to nearest even), as a Python float.

    Raises DataError for nan, infinities and values beyond float32 range.
    """
    try:
        v = float(x)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{x!r} is not a number") from exc
    if not math.isfinite(v):
        raise DataError(f"{x!r} cannot be sent: the board takes finite numbers only")
    try:
        return struct.unpack("<f", struct.pack("<f", v))[0]
    except OverflowError as exc:
        raise DataError(f"{x!r} is beyond float32 range (about 3.4e38)") from exc


def float32_from_hex(text: str) -> float:
    """The float32 whose bits are ``0x3cc99f2a``-style hex."""
    return struct.unpack("<f", struct.pack("<I", int(text, 16)))[0]


def _f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def _is_float32_midpoint(d: float) -> bool:
    """Whether the double d lies exactly halfway between two float32 values."""
    try:
        x = struct.unpack("<f", struct.pack("<f", d))[0]
    except OverflowError:
        return False
    if x == d or not math.isfinite(x):
        return False
    step = 1 if abs(d) > abs(x) else -1
    neighbour = struct.unpack("<f", struct.pack("<I", _f32_bits(x) + step))[0]
    return d == (x + neighbour) / 2


def format_float32(x: float) -> str:
    """The shortest decimal that the board parses back to the float32 x.

    The board rounds decimals to float32 correctly (ties to even), so the
    shortest string whose nearest float32 is x is enough; 9 significant
    digits always are. A candidate whose double value sits exactly on a
    float32 midpoint is skipped, since there double rounding could differ
    from the board's direct rounding.
    """
    if x == 0:
        return "0"
    text = f"{x:.9g}"
    for digits in range(1, 9):
        candidate = f"{x:.{digits}g}"
        d = float(candidate)
        try:
            if struct.unpack("<f", struct.pack("<f", d))[0] == x and not _is_float32_midpoint(d):
                text = candidate
                break
        except OverflowError:
            continue
    if "e" in text:  # 1.3e+02 -> 130 or 1.3e2, whichever is shorter; 1e-05 -> 1e-5
        mantissa, exponent = text.split("e")
        short = f"{mantissa}e{int(exponent)}"
        plain = format(Decimal(text), "f")
        text = plain if len(plain) <= len(short) else short
    return text


CHECK_BYTES = len(" *000000")  # what the check field adds to a request line


def crc8(data: bytes) -> int:
    """CRC-8 with polynomial 0x07 and initial value 0 (the request check)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc << 1 ^ 0x07 if crc & 0x80 else crc << 1) & 0xFF
    return crc


def format_request(rid: int, cmd: str, tokens) -> bytes:
    """``!<id> <cmd> <tokens...> *LLCCII\\n`` as bytes.

    The check field ``*LLCCII`` carries the count of the bytes before the
    ``*``, their CRC-8 and the id modulo 256, all in hex: a board whose
    receive buffer overflowed answers ``err 9 bad check`` instead of running
    what was left. The id byte catches a lost line end that glued the start
    of one request to an end of the same length of the next (the count
    cannot), provided requests in flight have different ids modulo 256:
    ours are consecutive.
    """
    head = (f"!{rid} {cmd}" + "".join(" " + t for t in tokens) + " ").encode("ascii")
    return head + b"*%02x%02x%02x\n" % (len(head), crc8(head), rid % 256)


def parse_fields(tokens) -> tuple[tuple, dict]:
    """Split ok-answer tokens into bare integers and key=value fields."""
    values, fields = [], {}
    for tok in tokens:
        key, eq, val = tok.partition("=")
        if eq:
            fields[key] = val
        else:
            values.append(int(tok))
    return tuple(values), fields


def parse_answer(line: str) -> Answer:
    """Parse ``@<id> ok ...`` or ``@<id> err <code> <text>``; ValueError if malformed."""
    parts = line.split()
    if len(parts) < 2 or not parts[0].startswith("@") or not parts[0][1:].isdigit():
        raise ValueError(line)
    rid = int(parts[0][1:])
    if parts[1] == "ok":
        values, fields = parse_fields(parts[2:])
        return Answer(rid, True, values, fields)
    if parts[1] == "err" and len(parts) >= 3:
        return Answer(rid, False, code=int(parts[2]), text=" ".join(parts[3:]))
    raise ValueError(line)


def parse_banner(line: str) -> dict[str, str]:
    """The key=value fields of ``#tinyml ready proto=2 ...``."""
    parts = line.split()
    if parts[:2] != ["#tinyml", "ready"]:
        raise ValueError(line)
    return parse_fields(parts[2:])[1]


def dequantize(q: int, scale: float, zero_point: int) -> float:
    """TFLite DEQUANTIZE: float32(float64(scale) * (q - zero_point)), exactly."""
    return struct.unpack("<f", struct.pack("<f", scale * (q - zero_point)))[0]


def class_index(scores, scale: float, zero_point: int) -> int:
    """The class ``metrics.top_class`` picks for one inference's int8 scores (numpy-free
    here): the first highest score, or for one sigmoid output whether p > 0.5."""
    if len(scores) == 1:
        return int(dequantize(scores[0], scale, zero_point) > 0.5)
    return max(range(len(scores)), key=lambda k: (scores[k], -k))


def quantize(x: float, scale: float, zero_point: int) -> int:
    """TFLite QUANTIZE float -> int8, exactly as the board does it.

    ``round_half_away(float32(float32(x) / scale)) + zero_point``, clamped.
    Dividing two float32 values in float64 and rounding to float32 gives the
    correctly rounded float32 quotient (53 >= 2 * 24 + 2: double rounding is
    innocuous for division), so this matches an IEEE float32 division.
    """
    x32 = float32(x)
    try:
        t = struct.unpack("<f", struct.pack("<f", x32 / scale))[0]
    except OverflowError:
        t = math.copysign(math.inf, x32)
    if abs(t) >= 256:
        r = 256 if t > 0 else -256
    else:
        r = int(math.floor(abs(t) + 0.5))
        r = -r if t < 0 else r
    return max(-128, min(127, r + zero_point))


def stage_quantize(x: float, mean: float, div: float, zero_point: int) -> int:
    """The input pre-stage on the host, exactly as the board computes it.

    ``clamp(round_half_away(fl32(fl32(x - mean) / div)) + zero_point, -128, 127)``
    (``ipytinyml.prestage.InputStage.quantize``, numpy-free). x is rounded to
    float32 and flushed to 0 below 2**-126, as the board's parser does.
    Subtracting two float32 values in float64 and rounding to float32 is the
    correctly rounded float32 difference (53 >= 2 * 24 + 2, as for the
    division in ``quantize``); a difference beyond float32 range is infinite
    and saturates.
    """
    x32 = float32(x)
    if abs(x32) < 2.0 ** -126:
        x32 = 0.0
    try:
        diff = struct.unpack("<f", struct.pack("<f", x32 - mean))[0]
    except OverflowError:
        return 127 if x32 > mean else -128
    return quantize(diff, div, zero_point)


def _int8(v) -> int:
    try:
        i = int(v) if isinstance(v, numbers.Integral) else None
        if i is None and float(v).is_integer():
            i = int(v)
    except (TypeError, ValueError, OverflowError):
        i = None
    if i is None or not -128 <= i <= 127:
        raise DataError(f"{v!r} is not an int8 (-128..127)")
    return i


def _flatten(values, n_in: int) -> list:
    """A scalar, a flat sequence (a multiple of n_in) or rows of n_in -> flat list."""
    if hasattr(values, "tolist"):
        values = values.tolist()
    if isinstance(values, (numbers.Number, str)):
        values = [values]
    flat = []
    for v in values:
        if hasattr(v, "tolist"):
            v = v.tolist()
        if isinstance(v, (list, tuple)):
            if len(v) != n_in:
                raise DataError(f"each row needs {n_in} value(s), got {len(v)}")
            flat.extend(v)
        else:
            flat.append(v)
    if not flat or len(flat) % n_in:
        raise DataError(f"give a multiple of {n_in} value(s) (the model's inputs), got {len(flat)}")
    return flat


# --------------------------------------------------------------- link

class Link:
    """An open connection to an ipytinyml sketch.

    Parameters
    ----------
    port_or_serial : str, os.PathLike or serial.Serial
        A device (``/dev/ttyACM0``, ``COM3``), a pty path, any pyserial URL
        (``socket://host:port``, ``rfc2217://...``), or a serial object
        (opened or not; the Link owns it from then on and closes it).
    baudrate : int
        115200, as the sketch uses. 1200 is refused: opening a Nano 33 BLE at
        1200 baud reboots it into its bootloader.
    timeout : float
        Seconds to wait for each answer.
    banner_timeout : float
        Seconds to wait at open for the sketch's banner (an Uno resets when
        the port opens and prints it 1-2 s later). If none has come after
        ``probe_after`` seconds, an info request is sent too and its answer
        accepted instead (a native-USB board or the simulator may have
        printed the banner before the port was opened).
    probe_after : float
        See ``banner_timeout``.
    exclusive : bool
        Lock the port (POSIX), so a second program gets "port busy".

    Raises
    ------
    LinkError
        Port missing or busy, no banner and no info answer, garbage, a
        sketch speaking another protocol version.
    """

    def __init__(self, port_or_serial, baudrate: int = BAUDRATE, timeout: float = 2.0,
                 banner_timeout: float = 5.0, *, probe_after: float = 0.5,
                 exclusive: bool = True):
        if baudrate == 1200:
            raise LinkError("refusing to open the port at 1200 baud: that reboots a Nano 33 BLE "
                            "into its bootloader; use 115200")
        self.timeout = float(timeout)
        self.banner_timeout = float(banner_timeout)
        self.probe_after = float(probe_after)
        self.banner: str | None = None       # the banner line, if one was seen at open
        self.log: deque[str] = deque(maxlen=50)  # skipped non-protocol lines (TFLM logs)
        self._rx = bytearray()
        self._next_id = 1
        self._garbage = 0
        self._garbage_sample = b""
        self._last_err: str | None = None
        self._info: BoardInfo | None = None
        self._ser = None
        self._answer_bytes = (0, 0, 0)       # (bytes, answers, outputs) of the last batch
        self._ser = self._open(port_or_serial, baudrate, exclusive)
        self.port = str(getattr(self._ser, "port", None) or port_or_serial)
        try:
            self._handshake()
        except BaseException:
            self.close()
            raise

    # -- opening ------------------------------------------------------------------------------
    def _open(self, port, baudrate, exclusive):
        import serial

        if isinstance(port, serial.SerialBase):
            ser = port
            if ser.baudrate == 1200:
                raise LinkError("refusing a serial port set to 1200 baud: that reboots a Nano 33 "
                                "BLE into its bootloader; use 115200")
            if not ser.is_open:
                self._configure(ser, baudrate, exclusive)
                self._open_serial(ser, str(ser.port))
            else:
                ser.timeout = READ_SLICE
                ser.write_timeout = self.timeout
                if ser.baudrate != baudrate:
                    ser.baudrate = baudrate
            return ser
        name = str(port)
        try:
            ser = serial.serial_for_url(name, do_not_open=True)
        except (ValueError, serial.SerialException) as exc:
            raise LinkError(f"cannot use port {name!r}: {exc}") from exc
        self._configure(ser, baudrate, exclusive)
        self._open_serial(ser, name)
        return ser

    def _configure(self, ser, baudrate, exclusive):
        ser.baudrate = baudrate
        ser.timeout = READ_SLICE
        ser.write_timeout = self.timeout
        if exclusive:
            try:
                ser.exclusive = True
            except (AttributeError, ValueError):
                pass

    def _open_serial(self, ser, name):
        import serial

        try:
            ser.open()
        except (serial.SerialException, OSError) as exc:
            text = str(exc)
            code = getattr(exc, "errno", None)
            if code == errno.ENOENT or "No such file" in text or "FileNotFoundError" in text:
                raise LinkError(f"port {name} not found: plug the board in or pick another port "
                                "(python -m serial.tools.list_ports)") from exc
            if (code == errno.EBUSY or "exclusively lock" in text or "busy" in text.lower()
                    or "Access is denied" in text):
                raise LinkError(f"port {name} is busy: another program holds it (Serial Monitor, "
                                "an upload, another notebook); close it and retry") from exc
            if code == errno.EACCES or "Permission denied" in text:
                raise LinkError(f"no permission to open {name}: add your user to the dialout "
                                "group (Linux) and log in again") from exc
            raise LinkError(f"cannot open port {name}: {text}") from exc

    def _handshake(self) -> None:
        start = time.monotonic()
        banner_deadline = start + self.banner_timeout
        probe_at = start + min(self.probe_after, self.banner_timeout)
        probe_deadline = None
        self._garbage = 0
        while True:
            if probe_deadline is None and time.monotonic() >= probe_at:
                # the leading "\n" ends whatever partial line the board may hold
                self._write(b"\n" + format_request(PROBE_ID, "i", []), "sending an info request")
                probe_deadline = max(banner_deadline, time.monotonic() + self.timeout)
            text = self._line(probe_at if probe_deadline is None else probe_deadline)
            if text is None:
                if probe_deadline is not None and time.monotonic() >= probe_deadline:
                    raise LinkError(
                        f"no banner and no answer to an info request from {self.port} within "
                        f"{max(self.banner_timeout, self.timeout):g} s: is an ipytinyml sketch "
                        "running on it, at 115200 baud?")
                continue
            if text.startswith("#tinyml"):
                self.banner = text
                try:
                    fields = parse_banner(text)
                except ValueError as exc:
                    raise LinkError(f"garbled banner {text[:80]!r} on {self.port}") from exc
                self._check_proto(fields.get("proto"), text)
                self._flush_input()
                self._info = self._query_info()
                return
            if text.startswith("@"):
                try:
                    ans = parse_answer(text)
                except ValueError:
                    continue  # noise from before the board was ready
                if ans.rid == PROBE_ID and probe_deadline is not None:
                    if not ans.ok and ans.code == 3:  # protocol 1 takes the check for an argument
                        raise self._older_firmware()
                    if not ans.ok:
                        raise LinkError(f"the sketch on {self.port} rejected an info request "
                                        f"(error {ans.code} {ans.text}): not an ipytinyml "
                                        f"protocol {PROTO} sketch?")
                    self._check_proto(ans.fields.get("proto"), text)
                    self._info = self._info_from(ans, text)
                    return
                continue
            if text.startswith("#err"):
                continue
            self.log.append(text)

    def _check_proto(self, proto, text):
        if proto == "1":
            raise self._older_firmware()
        if proto != str(PROTO):
            raise LinkError(f"the sketch on {self.port} speaks protocol {proto or '?'}, this "
                            f"ipytinyml speaks {PROTO}: re-flash the board or update ipytinyml")

    def _older_firmware(self) -> LinkError:
        return LinkError(f"the board on {self.port} runs older ipytinyml firmware (protocol 1, "
                         f"requests without a check field): re-flash it (%tinyml_flash)")

    # -- reading and writing -----------------------------------------------------------------
    def _gone(self, exc, doing: str) -> LinkError:
        return LinkError(f"lost the board on {self.port} while {doing} ({exc}): unplugged or "
                         "reset? reconnect it")

    def _write(self, data: bytes, doing: str) -> None:
        import serial

        if self._ser is None:
            raise LinkError(f"the link to {self.port} is closed")
        try:
            self._ser.write(data)
        except serial.SerialTimeoutException as exc:
            raise LinkError(f"timed out after {self.timeout:g} s {doing} on {self.port}: the "
                            "board does not read its serial port") from exc
        except (serial.SerialException, OSError) as exc:
            raise self._gone(exc, doing) from exc

    def _read_line(self, deadline: float) -> bytes | None:
        """The next raw line (without \\r\\n), or None at the deadline."""
        import serial

        if self._ser is None:
            raise LinkError(f"the link to {self.port} is closed")
        while True:
            nl = self._rx.find(b"\n")
            if nl >= 0:
                raw = bytes(self._rx[:nl])
                del self._rx[:nl + 1]
                return raw[:-1] if raw.endswith(b"\r") else raw
            if len(self._rx) > (MAX_ANSWER_BYTES if self._rx[:1] == b"@" else MAX_LINE_BYTES):
                sample = bytes(self._rx[:40])
                self._rx.clear()
                raise LinkError(f"garbage from {self.port} ({sample!r}...): is it an ipytinyml "
                                "sketch at 115200 baud?")
            if time.monotonic() >= deadline:
                return None
            try:
                chunk = self._ser.read(self._ser.in_waiting or 1)
            except (serial.SerialException, OSError) as exc:
                raise self._gone(exc, "reading") from exc
            self._rx += chunk

    def _line(self, deadline: float) -> str | None:
        """The next text line, skipping a few non-text (garbage) lines."""
        while True:
            raw = self._read_line(deadline)
            if raw is None:
                return None
            try:
                text = raw.decode("ascii")
            except UnicodeDecodeError:
                text = None
            if text is None or any(ord(c) < 32 and c != "\t" for c in text):
                self._garbage += 1
                self._garbage_sample = raw[:40]
                if self._garbage > GARBAGE_LINES:
                    raise LinkError(f"garbage from {self.port} ({self._garbage_sample!r}): is it "
                                    "an ipytinyml sketch at 115200 baud?")
                continue
            cut = text.find("#tinyml ")
            if cut > 0:  # a reset cut the previous line short
                text = text[cut:]
            return text

    def _flush_input(self) -> None:
        import serial

        try:
            self._ser.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            raise self._gone(exc, "flushing input") from exc
        self._rx.clear()

    def _take_id(self) -> int:
        rid = self._next_id
        self._next_id = rid % 65535 + 1  # 1..65535; 0 is the open-time probe
        return rid

    def _await(self, rid: int, what: str) -> tuple[Answer, int]:
        """The answer with id rid (and its size in bytes); LinkError on an err answer."""
        deadline = time.monotonic() + self.timeout
        self._garbage = 0
        while True:
            text = self._line(deadline)
            if text is None:
                said = f" (its last error line: {self._last_err!r})" if self._last_err else ""
                raise LinkError(f"no answer from {self.port} within {self.timeout:g} s to "
                                f"{what}{said}: is the ipytinyml sketch still running?")
            if text.startswith("#tinyml"):
                raise LinkError(f"the board on {self.port} reset during the session (a new banner "
                                f"came while waiting for the answer to {what}): power, cable or "
                                "another program opening the port? reconnect")
            if text.startswith("#err"):
                self._last_err = text
                continue
            if not text.startswith("@"):
                self.log.append(text)
                continue
            try:
                ans = parse_answer(text)
            except ValueError as exc:
                raise LinkError(f"garbled answer {text[:80]!r} from {self.port}") from exc
            if ans.rid != rid:
                continue  # a late answer to an earlier, abandoned request
            if not ans.ok:
                raise LinkError(f"the board on {self.port} answered error {ans.code} "
                                f"({ans.text}) to {what}")
            return ans, len(text) + 2

    def _info_from(self, ans: Answer, text: str) -> BoardInfo:
        try:
            return BoardInfo.from_fields(ans.fields)
        except (KeyError, ValueError) as exc:
            raise LinkError(f"garbled info answer {text[:80]!r} from {self.port}") from exc

    def _query_info(self) -> BoardInfo:
        rid = self._take_id()
        self._write(format_request(rid, "i", []), "sending an info request")
        ans, _ = self._await(rid, f"!{rid} i")
        info = self._info_from(ans, f"@{rid} ok ...")
        self._check_proto(str(info.proto), "")
        return info

    # -- public API ---------------------------------------------------------------------------
    def info(self) -> BoardInfo:
        """Ask the board (``i``): model, quantization, RAM, limits. Cached in ``last_info``."""
        self._info = self._query_info()
        return self._info

    @property
    def last_info(self) -> BoardInfo:
        """The info from open time or the last ``info()``, without asking the board."""
        return self._info

    def check_model(self, expected_hash: str) -> BoardInfo:
        """LinkError unless the board runs the model with this hash (12+ hex digits)."""
        want = str(expected_hash).strip().lower()[:12]
        info = self.info()
        if info.model.lower() != want:
            raise LinkError(f"the board on {self.port} runs model {info.model}, but this model is "
                            f"{want}: re-flash the board (%tinyml_flash)")
        return info

    def request(self, command: str, *args) -> Answer:
        """Send ``!<id> <command> <args...>`` as given and return the ok answer.

        No checks on the host side: for debugging and tests. LinkError names
        the board's error code and text.
        """
        rid = self._take_id()
        line = format_request(rid, command, [str(a) for a in args])
        self._write(line, "sending a request")
        return self._await(rid, line.decode().strip())[0]

    def _chunks(self, tokens: list[str], n_in: int, max_values: int) -> list[list[str]] | None:
        """Split tokens into requests of whole inferences, at most max_values each,
        short enough to pipeline (SEND_LIMIT) or at least within LINE_MAX; None
        if one inference does not fit in a line."""
        head = len("!65535 p") + CHECK_BYTES + 1  # worst-case id width, the check, "\n"
        chunks, i = [], 0
        while i < len(tokens):
            size, count = head, 0
            while i + count < len(tokens) and count + n_in <= max_values:
                add = sum(1 + len(t) for t in tokens[i + count:i + count + n_in])
                if count and size + add > SEND_LIMIT:
                    break
                if size + add > LINE_MAX + 1:
                    return None
                size += add
                count += n_in
            chunks.append(tokens[i:i + count])
            i += count
        return chunks

    def _plan(self, command: str, values) -> tuple[str, list[list[str]], int]:
        """(command, request chunks, token count) for values.

        Floats for which one inference's decimals do not fit in a 79-character
        line (many inputs with many digits) are quantized on the host, exactly
        as the board would (the pre-stage, ``stage_quantize``), and sent as a
        raw request.
        """
        info = self._info
        flat = _flatten(values, info.n_in)
        limit = max(info.n_in, info.max)
        if command == "p":
            tokens = [format_float32(float32(v)) for v in flat]
            chunks = self._chunks(tokens, info.n_in, limit)
            if chunks is not None:
                return "p", chunks, len(tokens)
            command = "r"
            flat = [info.quantize_input(v, i % info.n_in) for i, v in enumerate(flat)]
        if command != "r":
            raise ValueError(f"command must be 'p' or 'r', not {command!r}")
        tokens = [str(_int8(v)) for v in flat]
        chunks = self._chunks(tokens, info.n_in, limit)
        if chunks is None:
            raise DataError(f"the model's {info.n_in} inputs do not fit in one "
                            f"{LINE_MAX}-character request line even as int8 values")
        return "r", chunks, len(tokens)

    def request_values(self, command: str, values) -> tuple[list[int], Timing]:
        """Run values through the model: ``p`` floats (quantized on the board) or ``r`` int8s.

        Values are split into requests of at most ``max`` values and sent
        pipelined. Returns the flat int8 outputs (n_out per inference) and the
        timing of the whole batch. (Floats too long to fit one inference in a
        line are quantized on the host and sent as ``r``, with the same result.)
        """
        info = self._info
        command, chunks, n_tokens = self._plan(command, values)
        start = time.monotonic()
        pending: deque = deque()   # (rid, line, n_values)
        window = 0                 # bytes of pending requests but the oldest
        outputs: list[int] = []
        us = cycles = tx = rx = 0
        have_cycles = True
        i = 0
        while i < len(chunks) or pending:
            while i < len(chunks):
                rid = self._next_id
                line = format_request(rid, command, chunks[i])
                if pending and window + len(line) > RX_WINDOW:
                    break
                self._take_id()
                self._write(line, "sending a request")
                if pending:
                    window += len(line)
                pending.append((rid, line, len(chunks[i])))
                tx += len(line)
                i += 1
            rid, line, n = pending.popleft()
            if pending:
                window -= len(pending[0][1])
            what = line.decode().strip()
            ans, size = self._await(rid, what if len(what) < 60 else what[:57] + "...")
            rx += size
            want = n // info.n_in * info.n_out
            if (len(ans.values) != want or "us" not in ans.fields
                    or not all(-128 <= v <= 127 for v in ans.values)):
                raise LinkError(f"garbled answer from {self.port}: expected {want} int8 outputs "
                                f"and us=, got {len(ans.values)} values {ans.fields}")
            try:
                us += int(ans.fields["us"])
                if "cyc" in ans.fields:
                    cycles += int(ans.fields["cyc"])
                else:
                    have_cycles = False
            except ValueError as exc:
                raise LinkError(f"garbled timing in an answer from {self.port}: {ans.fields}") \
                    from exc
            if "class" in ans.fields:
                self._check_classes(ans)
            outputs.extend(ans.values)
        inferences = n_tokens // info.n_in
        self._answer_bytes = (rx, len(chunks), len(outputs))
        return outputs, Timing(device_us=us, cycles=cycles if have_cycles else None,
                               inferences=inferences, requests=len(chunks),
                               host_s=time.monotonic() - start, tx_bytes=tx, rx_bytes=rx)

    def _check_classes(self, ans: Answer) -> None:
        """A classifier's board names each inference's class (``class=``); it must be the
        class its own scores give by the notebook's rule, or the firmware is not ours."""
        info = self._info
        rows = self._rows(list(ans.values), info.n_out)
        want = ",".join(str(class_index(r, info.output_scale, info.output_zero_point)) for r in rows)
        if ans.fields["class"] != want:
            raise LinkError(f"the board on {self.port} names class(es) {ans.fields['class']} for "
                            f"scores whose class is {want}; re-flash it (%tinyml_flash)")

    def _rows(self, flat: list, n: int) -> list[list]:
        return [flat[k:k + n] for k in range(0, len(flat), n)]

    def predict_raw(self, values) -> Result:
        """int8 inputs (``n_in`` per inference) straight into the model -> int8 outputs."""
        out, timing = self.request_values("r", values)
        rows = self._rows(out, self._info.n_out)
        return Result(outputs=rows, raw=rows, timing=timing)

    def predict(self, values) -> Result:
        """Float inputs, quantized on the board exactly like TFLite's QUANTIZE; outputs
        dequantized exactly like TFLite's DEQUANTIZE (float32 values as Python floats)."""
        out, timing = self.request_values("p", values)
        info = self._info
        rows = self._rows(out, info.n_out)
        floats = [[dequantize(q, info.output_scale, info.output_zero_point) for q in row]
                  for row in rows]
        return Result(outputs=floats, raw=rows, timing=timing)

    def wire_bound_per_s(self, values, command: str = "p") -> float:
        """Predictions per second the 115200-baud wire allows for these values.

        Request bytes are exact (the lines ``predict`` would send); answer
        bytes come from the last batch when there was one, else an estimate
        (5 bytes per output, 28 per answer). 10 bits per byte (8N1).
        """
        info = self._info
        command, chunks, n_tokens = self._plan(command, values)
        tx = sum(len(format_request(self._next_id, command, c)) for c in chunks)
        n = n_tokens // info.n_in
        rx_bytes, answers, outputs = self._answer_bytes
        if answers and outputs:
            per_answer = 28.0
            per_output = max(1.0, (rx_bytes - per_answer * answers) / outputs)
        else:
            per_answer, per_output = 28.0, 5.0
        rx = per_answer * len(chunks) + per_output * n * info.n_out
        return n * (BAUDRATE / 10) / max(tx, rx)

    def close(self) -> None:
        """Close the port (idempotent)."""
        ser, self._ser = self._ser, None
        if ser is not None:
            try:
                ser.close()
            except Exception:  # noqa: BLE001 - closing must not fail
                pass

    @property
    def closed(self) -> bool:
        return self._ser is None

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        info = self._info
        model = f" model={info.model} board={info.board}" if info else ""
        return f"<Link {self.port}{model}{' closed' if self.closed else ''}>"
