"""ipytinyml.link over real pyserial on real pseudo-terminals.

Two kinds of far end:
- the host board: the firmware's own protocol code and the fake model built
  with g++ (tests/fake_model/), serving a pty, optionally like an Uno (the
  banner 200 ms after each open, input before that lost);
- a scripted board: a Python thread on the master side of os.openpty(), for
  the failures a correct board never produces (silence, garbage, stale or
  garbled answers, another protocol version, slow answers).
"""
from __future__ import annotations

import os
import random
import select
import shutil
import struct
import subprocess
import sys
import threading
import time
import tty
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from fake_model import board, ref
from fake_model.ref import FakeModel
from ipytinyml import link as linkmod
from ipytinyml.errors import DataError, LinkError
from ipytinyml.link import Link, format_float32

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs host g++")

MODEL = FakeModel()
MULTI = FakeModel(n_in=2, n_out=3, input_scale_bits=0x3F800000, input_zero_point=0,
                  output_scale_bits=0x3DCCCCCD, output_zero_point=5, model_hash="abcdef012345",
                  cycles=False)


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    return board.build(MODEL, tmp_path_factory.mktemp("link") / "board")


@pytest.fixture(scope="module")
def multi_exe(tmp_path_factory):
    return board.build(MULTI, tmp_path_factory.mktemp("link_multi") / "board")


@pytest.fixture
def uno(exe):
    """The host board behaving like an Uno: it resets when the port opens."""
    with board.PtyBoard(exe, wait_open=True, boot_ms=50) as b:
        yield b


@pytest.fixture
def link(uno):
    with Link(uno.path, timeout=2.0) as lk:
        yield lk


class ScriptedBoard:
    """A far end scripted in Python: respond(line) -> bytes to send back (or None)."""

    def __init__(self, respond=None, delay: float = 0.0):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.respond = respond or (lambda line: None)
        self.delay = delay
        self.received: list[bytes] = []
        self.backlog: list[int] = []  # bytes waiting behind each request when it was answered
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def _run(self) -> None:
        buf = b""
        while not self._stop:
            if b"\n" not in buf:
                ready, _, _ = select.select([self.master], [], [], 0.02)
                if not ready:
                    continue
                try:
                    buf += os.read(self.master, 4096)
                except OSError:
                    return
                continue
            line, buf = buf.split(b"\n", 1)
            self.received.append(line)
            if self.delay:  # "inference": bytes arriving meanwhile queue up, as in an Uno's RX buffer
                time.sleep(self.delay)
                while select.select([self.master], [], [], 0)[0]:
                    buf += os.read(self.master, 4096)
                self.backlog.append(len(buf))
            out = self.respond(line)
            if out:
                try:
                    os.write(self.master, out)
                except OSError:
                    return

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def info_responder(model: FakeModel = MODEL, extra=None):
    """Answers info requests like a healthy board; other lines go to extra(line)."""

    def respond(line: bytes):
        parts = line.split()
        if not parts:
            return None
        if (len(parts) == 3 and parts[0].startswith(b"!") and parts[1] == b"i"
                and ref.strip_check(line.strip()) is not None):
            return (model.info(int(parts[0][1:])) + "\r\n").encode()
        return extra(line) if extra else None
    return respond


# ------------------------------------------------------------------ opening

def test_banner_then_info(uno):
    t0 = time.monotonic()
    with Link(uno.path) as lk:
        assert time.monotonic() - t0 < 2
        assert lk.banner == MODEL.banner()
        info = lk.last_info
    assert info.model == "0123456789ab" and (info.n_in, info.n_out) == (1, 1)
    assert info.input_scale == MODEL.input_scale == struct.unpack("<f", struct.pack("<I", 0x3CC99F2A))[0]
    assert (info.input_zero_point, info.output_zero_point) == (-128, -23)
    assert info.output_scale == MODEL.output_scale
    assert (info.arena, info.free, info.max, info.runtime, info.board) == (65, 0, 16, "native", "host")


def test_no_banner_falls_back_to_an_info_request(exe):
    """A board that printed its banner before the port was opened (USB CDC, simulator)."""
    with board.PtyBoard(exe) as b:
        time.sleep(0.1)
        t0 = time.monotonic()
        with Link(b.path, probe_after=0.3) as lk:
            assert 0.25 < time.monotonic() - t0 < 1.5
            assert lk.banner is None and lk.last_info.model == MODEL.model_hash


def test_slow_boot_swallows_the_probe_and_the_banner_wins(exe):
    """Like an Uno whose bootloader eats the probe: the banner 0.8 s after open is used."""
    with board.PtyBoard(exe, wait_open=True, boot_ms=800) as b:
        with Link(b.path, probe_after=0.2) as lk:
            assert lk.banner == MODEL.banner()
            assert lk.predict_raw([5]).raw == [[5]]


def test_existing_serial_objects(uno):
    import serial

    ser = serial.serial_for_url(uno.path, do_not_open=True)
    with Link(ser) as lk:
        assert lk.last_info.model == MODEL.model_hash
    assert not ser.is_open
    ser = serial.Serial(uno.path, 115200, timeout=0.1)  # already open
    with Link(ser) as lk:
        assert lk.predict_raw([1, 2]).raw == [[1], [2]]


def test_refuses_1200_baud(uno):
    import serial

    with pytest.raises(LinkError, match="1200 baud"):
        Link(uno.path, baudrate=1200)
    with pytest.raises(LinkError, match="1200 baud"):
        Link(serial.serial_for_url(uno.path, baudrate=1200, do_not_open=True))


def test_missing_port():
    with pytest.raises(LinkError, match="not found"):
        Link("/dev/ttyNOPE_ipytinyml")


def test_bad_url():
    with pytest.raises(LinkError, match="cannot use port"):
        Link("nosuchscheme://x")


def test_busy_port(exe):
    with board.PtyBoard(exe) as b, Link(b.path, probe_after=0.05) as first:
        with pytest.raises(LinkError, match="busy"):
            Link(b.path)
        # unharmed here; a real Uno would reset on the second open (DTR), which the
        # first link then reports (test_second_banner_mid_session_is_a_reset)
        assert first.predict_raw([3]).raw == [[3]]


def test_silent_port_times_out_at_open():
    with ScriptedBoard() as sb:
        t0 = time.monotonic()
        with pytest.raises(LinkError, match=r"no banner and no answer .* within 0\.6 s"):
            Link(sb.path, banner_timeout=0.6, timeout=0.3, probe_after=0.2)
        assert time.monotonic() - t0 < 2
        assert b"!0 i *054400" in sb.received  # the probe carries its check too


def test_other_protocol_version():
    def respond(line):
        return b"#tinyml ready proto=3 runtime=native board=x model=0 in=1 out=1\r\n"
    with ScriptedBoard(respond) as sb:
        with pytest.raises(LinkError, match="protocol 3"):
            Link(sb.path, banner_timeout=1, probe_after=0.1)


@pytest.mark.parametrize("how", ["banner", "probe"])
def test_protocol_1_firmware_is_told_to_reflash(how):
    """A board flashed by an older ipytinyml: its banner says proto=1, or (no banner) it
    answers the checked probe as protocol 1 does, the check taken for an argument of 'i'."""
    def respond(line):
        if how == "banner":
            return b"#tinyml ready proto=1 runtime=native board=uno model=0 in=1 out=1\r\n"
        return b"@0 err 3 wrong count\r\n" if line.startswith(b"!0 i *") else None
    with ScriptedBoard(respond) as sb:
        with pytest.raises(LinkError, match=r"runs older ipytinyml firmware .*re-flash it") as exc:
            Link(sb.path, banner_timeout=1, probe_after=0.1)
        assert "\n" not in str(exc.value)


def test_every_request_carries_its_check(link):
    """The probe, info and value requests all end with a matching *LLCCII, within 63 bytes."""
    from ipytinyml.link import CHECK_BYTES, SEND_LIMIT, format_request

    assert CHECK_BYTES == 8
    for line in (format_request(0, "i", []), format_request(65535, "p", ["-1.2345678e-30"] * 3)):
        assert ref.strip_check(line.rstrip(b"\n")) is not None
    # the id byte: the id modulo 256, so that consecutive ids tell glued requests apart
    assert format_request(0, "i", []) == b"!0 i *054400\n"
    assert format_request(300, "i", []) == b"!300 i *07b42c\n"
    assert format_request(65535, "r", ["5"]).endswith(b"ff\n")
    plan = link._plan("p", [-123.456789] * 40)[1]
    sizes = [len(format_request(65535, "p", chunk)) for chunk in plan]
    assert max(sizes) <= SEND_LIMIT and all(len(c) <= link.last_info.max for c in plan)


def test_garbage_at_open():
    def respond(line):  # what a sketch at another baud rate looks like
        return b"".join(bytes(random.Random(k).randrange(128, 256) for _ in range(20)) + b"\n"
                        for k in range(10))
    with ScriptedBoard(respond) as sb:
        with pytest.raises(LinkError, match="garbage"):
            Link(sb.path, banner_timeout=1, probe_after=0.1)


# -------------------------------------------------------------- requests

def test_raw_round_trip_all_int8(link):
    values = [v for v in range(-128, 128) if v != MODEL.fail_input]
    result = link.predict_raw(values)
    assert result.raw == [[v] for v in values]
    assert result.timing.inferences == len(values) and result.timing.requests > 1
    assert result.cyc is not None and result.cyc > 0


def _ties_and_neighbours(scale: float) -> list[float]:
    out = []
    for k in range(-200, 200):
        tie = float(np.float32((k + 0.5) * scale))
        bits = struct.unpack("<I", struct.pack("<f", tie))[0]
        out += [struct.unpack("<f", struct.pack("<I", bits + d))[0] for d in (-2, -1, 0, 1, 2)]
    return out


def test_predict_is_bit_exact_with_numpy_quantize_and_dequantize(link):
    """Floats through the board == numpy QUANTIZE (float32 division, round half away),
    outputs == TFLite DEQUANTIZE (float32(float64(scale) * (q - zp)))."""
    xs = _ties_and_neighbours(MODEL.input_scale)
    xs += [0.0, -0.0, 130, 97.5, 1e-30, -1e30, 3.4e38, 0.1, 1 / 3]
    q = [ref.quantize(float(np.float32(x)), MODEL.input_scale, MODEL.input_zero_point) for x in xs]
    keep = [i for i, v in enumerate(q) if v != MODEL.fail_input]
    xs, q = [xs[i] for i in keep], [q[i] for i in keep]
    result = link.predict(xs)
    assert [row[0] for row in result.raw] == q
    scale, zp = np.float64(np.float32(MODEL.output_scale)), MODEL.output_zero_point
    assert [row[0] for row in result.outputs] == [float(np.float32(scale * (v - zp))) for v in q]


def test_predict_accepts_rows_numpy_and_scalars(multi_exe):
    with board.PtyBoard(multi_exe, wait_open=True, boot_ms=100) as b, Link(b.path) as lk:
        rows = np.array([[1.5, -2.5], [0.0, 7.0]], dtype=np.float32)
        r = lk.predict(rows)
        assert r.raw == [[2, 0, 8], [0, 10, 6]]  # round half away; y[j] = x[j % 2] + 3j
        assert r.outputs[0] == [float(np.float32(np.float64(np.float32(0.1)) * (v - 5)))
                                for v in (2, 0, 8)]
        assert r.cyc is None  # this board has no cycle counter
        assert lk.predict([1.5, -2.5]).raw == [[2, 0, 8]]
        with pytest.raises(DataError, match="multiple of 2"):
            lk.predict([1.0])
        with pytest.raises(DataError, match="each row needs 2"):
            lk.predict([[1.0, 2.0, 3.0]])
    with board.PtyBoard(board.build(MODEL, multi_exe.parent / "one"), wait_open=True,
                        boot_ms=100) as b, Link(b.path) as lk:
        assert lk.predict(0.0246124).raw == [[-127]]
        assert lk.predict(np.float32(130)).raw == [[127]]


def test_long_float_rows_are_quantized_on_the_host(tmp_path):
    """8 inputs of 9 significant digits do not fit a 79-character 'p' line: Link
    quantizes them itself (exactly) and sends 'r', with the same outputs."""
    many = FakeModel(n_in=8, n_out=2, cycles=False, fail_input=127)  # never reached here
    exe = board.build(many, tmp_path / "many")
    rng = random.Random(2)
    rows = [[rng.uniform(-3, 3) for _ in range(8)] for _ in range(20)]
    with board.PtyBoard(exe, wait_open=True, boot_ms=50) as b, Link(b.path) as lk:
        r = lk.predict(rows)
        q = [[ref.quantize(float(np.float32(x)), many.input_scale, -128) for x in row] for row in rows]
        assert r.raw == [many.invoke(row) for row in q]
        short = [[round(x, 1) for x in row] for row in rows]  # these fit: sent as 'p'
        assert lk.predict(short).raw == lk.predict_raw(
            [[linkmod.quantize(x, many.input_scale, -128) for x in row] for row in short]).raw


def test_host_quantize_matches_the_board(link):
    xs = _ties_and_neighbours(MODEL.input_scale) + [1e30, -1e30, 0.0, 3.4e38]
    want = [linkmod.quantize(x, MODEL.input_scale, MODEL.input_zero_point) for x in xs]
    assert want == [ref.quantize(float(np.float32(x)), MODEL.input_scale, -128) for x in xs]


def test_bad_values_raise_before_sending(link):
    for bad in (float("nan"), float("inf"), 1e39, "abc"):
        with pytest.raises(DataError):
            link.predict([bad])
    for bad in (128, -129, 1.5, "x"):
        with pytest.raises(DataError):
            link.predict_raw([bad])
    with pytest.raises(DataError):
        link.predict([])
    assert link.predict_raw([7]).raw == [[7]]


@pytest.mark.parametrize("args, code, text", [
    (("p", "nan"), 2, "bad number"), (("p",), 3, "wrong count"), (("x",), 4, "unknown command"),
    (("r", "300"), 5, "out of range"), (("p", "1\x01"), 6, "not text"), (("r", "-77"), 8, "model failed"),
    (("r",) + ("1",) * 40, 1, "line too long"),
])
def test_error_answers_name_code_and_text(link, args, code, text):
    with pytest.raises(LinkError, match=rf"error {code} \({text}\)"):
        link.request(*args)
    assert link.predict_raw([9]).raw == [[9]]  # and the board keeps serving


def test_check_model(link):
    assert link.check_model("0123456789AB").model == "0123456789ab"
    assert link.check_model("0123456789ab" + "f" * 52).n_in == 1  # a full SHA-256 works too
    with pytest.raises(LinkError, match="runs model 0123456789ab, but this model is ffffffffffff"):
        link.check_model("ffffffffffff")


def test_info_refreshes(link):
    assert link.info() == link.last_info


def test_human_line_over_the_pty(uno):
    import serial

    with serial.Serial(uno.path, 115200, timeout=2) as ser:
        assert ser.readline() == (MODEL.banner() + "\r\n").encode()
        ser.write(b"130\r\n")
        assert ser.readline().decode().startswith("horsepower 130 -> mpg 22.93 (")
        ser.write(b"\n")
        assert ser.readline() == b"#err 7 empty line\r\n"


# --------------------------------------------------------- robustness

def test_fuzz_interleaved_with_valid_requests(link):
    """3000 random, malformed, binary and overlong lines written straight to the port,
    interleaved with 150 valid requests: every request answered correctly, no reset."""
    rng = random.Random(7)
    ser = link._ser
    for round_ in range(150):
        junk = []
        for _ in range(20):
            kind = rng.random()
            if kind < 0.3:
                junk.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 90))))
            elif kind < 0.5:
                junk.append(b"!" + str(rng.randint(60000, 65535)).encode() + b" r" + b" 1" * rng.randint(1, 60))
            elif kind < 0.7:
                junk.append(b"".join(rng.choice([b"1", b".", b"e", b"-", b" ", b",", b"!", b"p", b"nan"])
                                     for _ in range(rng.randint(0, 40))))
            else:
                junk.append(b"x" * rng.randint(70, 300))
        ser.write(b"".join(j.replace(b"\n", b"").replace(b"\r", b"") + b"\n" for j in junk))
        values = [rng.choice([v for v in range(-128, 128) if v != -77]) for _ in range(rng.randint(1, 30))]
        assert link.predict_raw(values).raw == [[v] for v in values], round_
        xs = [rng.uniform(-4, 4) for _ in range(3)]
        want = [ref.quantize(float(np.float32(x)), MODEL.input_scale, -128) for x in xs]
        if MODEL.fail_input not in want:
            assert [r[0] for r in link.predict(xs).raw] == want
    assert link.banner == MODEL.banner()


def test_second_banner_mid_session_is_a_reset(link, uno):
    assert link.predict_raw([1]).raw == [[1]]
    uno.reset()
    time.sleep(0.05)
    with pytest.raises(LinkError, match="reset during the session"):
        link.predict_raw([1])


def test_far_end_exits_mid_session(exe):
    with board.PtyBoard(exe, wait_open=True, boot_ms=50) as b:
        lk = Link(b.path)
        assert lk.predict_raw([1]).raw == [[1]]
        b.kill()
        with pytest.raises(LinkError, match="lost the board"):
            lk.predict_raw(list(range(10)))
        lk.close()
        lk.close()  # idempotent
        assert lk.closed
        with pytest.raises(LinkError, match="closed"):
            lk.predict_raw([1])


def test_far_end_exits_while_waiting(exe):
    with board.PtyBoard(exe, wait_open=True, boot_ms=50) as b, Link(b.path, timeout=3) as lk:
        killer = threading.Timer(0.2, b.kill)
        killer.start()
        t0 = time.monotonic()
        with pytest.raises(LinkError, match="lost the board"):
            lk.request("p", "1")  # answered before the kill; then wait for a line that never comes
            lk._await(12345, "nothing")
        assert time.monotonic() - t0 < 2.5
        killer.join()


def _scripted_link(extra, **kw) -> tuple[ScriptedBoard, Link]:
    sb = ScriptedBoard(info_responder(extra=extra))
    return sb, Link(sb.path, banner_timeout=1, probe_after=0.05, **kw)


def test_answer_timeout_names_the_request_and_port():
    sb, lk = _scripted_link(lambda line: b"#err 2 bad number\r\n", timeout=0.3)
    with sb, lk:
        t0 = time.monotonic()
        with pytest.raises(LinkError) as exc:
            lk.predict_raw([1])
        assert 0.25 < time.monotonic() - t0 < 1.5
        msg = str(exc.value)
        assert "!1 r 1" in msg and sb.path in msg and "0.3 s" in msg and "#err 2" in msg


def test_logs_stale_ids_and_split_lines_are_handled():
    def extra(line):
        rid = line.split()[0][1:].decode()
        return (b"TFLM: arena used 65 bytes\r\n@999 ok 5 us=1\r\n" +
                f"@{rid} ok 1".encode() + b" us=3 cyc=48\r\n")
    sb, lk = _scripted_link(extra)
    with sb, lk:
        r = lk.predict_raw([1])
        assert r.raw == [[1]] and r.us == 3 and r.cyc == 48
        assert "TFLM: arena used 65 bytes" in lk.log


def test_partial_lines_are_assembled():
    def extra(line):
        rid = line.split()[0][1:].decode()
        text = f"@{rid} ok -5 us=7\r\n".encode()
        def dribble():
            for k in range(0, len(text), 3):
                sb.send(text[k:k + 3])
                time.sleep(0.01)
        threading.Thread(target=dribble).start()
        return None
    sb, lk = _scripted_link(extra)
    with sb, lk:
        assert lk.predict_raw([1]).raw == [[-5]]


def test_partial_line_then_silence_times_out():
    sb, lk = _scripted_link(lambda line: b"@1 ok 5 us", timeout=0.3)
    with sb, lk:
        with pytest.raises(LinkError, match="no answer"):
            lk.predict_raw([1])


@pytest.mark.parametrize("reply, match", [
    (b"@1 ok 5 five us=3\r\n", "garbled answer"),
    (b"@1 ok 5 6 us=3\r\n", "expected 1 int8 outputs"),
    (b"@1 ok 500 us=3\r\n", "expected 1 int8 outputs"),
    (b"@1 ok 5\r\n", "expected 1 int8 outputs"),
    (b"@1 maybe\r\n", "garbled answer"),
    (bytes(range(128, 200)) + b"\n" + bytes(range(1, 9)) + b"\n" + b"\xff\n\xfe\n", "garbage"),
    (b"y" * 2000, "garbage"),
], ids=["not-int", "too-many", "not-int8", "no-us", "not-ok-err", "binary", "endless"])
def test_garbled_answers_and_garbage(reply, match):
    sb, lk = _scripted_link(lambda line: reply, timeout=1)
    with sb, lk:
        with pytest.raises(LinkError, match=match):
            lk.predict_raw([1])


def test_pipelining_keeps_the_uno_rx_buffer_from_overflowing():
    """A slow board (3 ms per request): bytes queued behind the request being
    processed never exceed the Uno's 63-byte RX buffer, and requests do overlap."""
    def extra(line):
        parts = line.split()
        rid, n = parts[0][1:].decode(), len(parts) - 3  # id, command, check
        return f"@{rid} ok {' '.join(['1'] * n)} us=1\r\n".encode()
    sb = ScriptedBoard(info_responder(extra=extra), delay=0.003)
    with sb, Link(sb.path, banner_timeout=1, probe_after=0.05) as lk:
        r = lk.predict([123.456] * 300)
        assert r.timing.inferences == 300 and r.raw == [[1]] * 300
        assert max(sb.backlog) <= 63  # SERIAL_RX_BUFFER_SIZE 64 holds 63 bytes
        assert max(sb.backlog) > 20  # pipelined: the next request was already waiting
        assert all(len(line) + 1 <= linkmod.SEND_LIMIT for line in sb.received[1:])


def test_requests_respect_max_and_line_length(link):
    r = link.predict([0.123456789] * 100)  # 9 significant digits each
    assert r.timing.requests >= 100 // 16
    assert len(r.raw) == 100


# ------------------------------------------------------------- framing

def test_format_float32_is_shortest_and_round_trips():
    rng = random.Random(3)
    for _ in range(20000):
        bits = rng.randrange(0x00800000, 0x7F800000) | rng.choice([0, 0x80000000])
        x = struct.unpack("<f", struct.pack("<I", bits))[0]
        text = format_float32(x)
        code, back = ref.parse_decimal(text.encode())
        assert code == 0 and back == x, (x, text)
        assert len(Decimal(text).normalize().as_tuple().digits) <= 9, text
    assert [format_float32(v) for v in (0.0, 130.0, 97.5, 0.1, 1e-5, 1e20, -2.5)] == \
        ["0", "130", "97.5", "0.1", "1e-5", "1e20", "-2.5"]


def test_import_is_light():
    code = ("import sys, ipytinyml.link; "
            "sys.exit(1 if {'tensorflow', 'numpy', 'keras'} & set(sys.modules) else 0)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_link_scalar_quantize_is_the_twin_of_quant():
    """link.py stays numpy-free, so it keeps scalar QUANTIZE/DEQUANTIZE; they must never drift
    from ipytinyml.quant, the implementation checked against tflite-micro."""
    from ipytinyml import link as linkmod
    from ipytinyml import quant
    rng = np.random.default_rng(7)
    for scale, zp in ((0.8823529481887817, -128), (0.001, 3), (6 / 255, -128)):
        tq = quant.TensorQuant(float(np.float32(scale)), zp)
        ties = (np.arange(-300, 300) + 0.5) * np.float32(scale)
        xs = np.concatenate([ties, np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf),
                             rng.normal(0, 200 * scale, 2000), [0.0, -0.0, 1e30, -1e30]]).astype(np.float32)
        assert [linkmod.quantize(float(x), tq.scale, zp) for x in xs] == quant.quantize(xs, tq).tolist()
        qs = np.arange(-128, 128)
        assert [linkmod.dequantize(int(q), tq.scale, zp) for q in qs] == quant.dequantize(qs, tq).tolist()


def test_info_without_prestage_fields_is_the_identity_stage():
    """Firmware from before the pre-stage sends no imean/idiv: it computes plain QUANTIZE,
    so BoardInfo reports mean 0 and the input scale per input. Malformed lists are errors."""
    fields = dict(f.split("=") for f in ("proto=1 runtime=native board=uno model=0123456789ab in=3 "
                                         "out=1 iscale=0x3cc99f2a izp=-128 oscale=0x3e1c8f11 ozp=-23 "
                                         "arena=65 free=0 max=15").split())
    info = linkmod.BoardInfo.from_fields(fields)
    scale = struct.unpack("<f", struct.pack("<I", 0x3CC99F2A))[0]
    assert info.input_mean == (0.0, 0.0, 0.0) and info.input_div == (scale,) * 3
    good = dict(fields, imean="0x42d0f0a4,0x00000000,0xc1200000", idiv="0x3f800000,0x3cc99f2a,0x40000000")
    info = linkmod.BoardInfo.from_fields(good)
    assert info.input_mean == (104.47000122070312, 0.0, -10.0) and info.input_div == (1.0, scale, 2.0)
    for bad in (dict(good, imean="0x42d0f0a4,0x00000000"), dict(good, idiv="0x3f800000,x,0x40000000"),
                dict(good, imean="0x7f800000,0x0,0x0")):
        with pytest.raises(ValueError):
            linkmod.BoardInfo.from_fields(bad)


def test_link_stage_quantize_is_the_twin_of_prestage():
    """link.stage_quantize (numpy-free, float64 then float32) == InputStage.quantize, the
    reference, on ties of the int8 grid, their neighbours, overflow, subnormals, zeros."""
    from ipytinyml.prestage import InputStage

    rng = np.random.default_rng(11)
    for mean, std in ((104.47, 38.49), (-0.00123, 0.000417), (-7.5e20, 3e19), (3e38, 1e28), (0.0, 1e-20)):
        stage = InputStage.standardize([mean], [std], 1 / 25.5, -5)
        m, d = np.float32(stage.mean[0]), np.float32(stage.div[0])
        with np.errstate(over="ignore"):
            ties = (m + (np.arange(-135, 135) + 0.5).astype(np.float32) * d).astype(np.float32)
        xs = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
                             rng.normal(mean, 100 * std, 1000), [0.0, -0.0, 1e-39, -1e-40, 1e30, -1e30,
                                                                 3.4e38, -3.4e38]]).astype(np.float32)
        xs = xs[np.isfinite(xs)]
        want = stage.quantize(xs).ravel().tolist()
        assert [linkmod.stage_quantize(float(x), stage.mean[0], stage.div[0], -5) for x in xs] == want


def test_long_info_answer_of_many_inputs_is_not_garbage():
    """200 inputs: the info answer's imean/idiv lists make it ~4.6 KB on one line."""
    wide = FakeModel(n_in=200, n_out=1, mean_bits=tuple(0x3F800000 + i for i in range(200)),
                     div_bits=(0x3CC99F2A,) * 200)
    assert len(wide.info(0)) > 4000
    sb = ScriptedBoard(info_responder(wide))
    with sb, Link(sb.path, banner_timeout=1, probe_after=0.05) as lk:
        info = lk.last_info
        assert info.n_in == 200 and info.input_mean == wide.stage.mean and info.input_div == wide.stage.div


@pytest.mark.parametrize("named, ok", [("1", True), ("0", False), ("2", False)])
def test_a_classifier_board_must_name_the_class_of_its_scores(named, ok):
    """A classifier's answer carries ``class=``: the link accepts it only when it is the
    class the scores themselves give (the first highest; here scores 4 9 9 -> class 1)."""
    model = FakeModel(n_out=3, classes=("a", "b", "c"))
    sb = ScriptedBoard(info_responder(model, extra=lambda line: f"@1 ok 4 9 9 class={named} us=3\r\n".encode()))
    with sb, Link(sb.path, banner_timeout=1, probe_after=0.05, timeout=1) as lk:
        if ok:
            assert lk.predict_raw([1]).raw == [[4, 9, 9]]
        else:
            with pytest.raises(LinkError, match=f"names class\\(es\\) {named} for scores whose class is 1"):
                lk.predict_raw([1])


def test_class_index_is_the_notebook_rule():
    """The link's numpy-free rule against metrics.top_class on the dequantized scores: every
    int8 value of a sigmoid output, and softmax rows with ties."""
    from ipytinyml.metrics import top_class
    scale, zp = 1 / 256, -128
    for q in range(-128, 128):
        assert linkmod.class_index([q], scale, zp) == top_class([linkmod.dequantize(q, scale, zp)])[0]
    rng = random.Random(5)
    for _ in range(2000):
        row = [rng.randint(-3, 3) for _ in range(rng.randint(2, 6))]
        deq = [linkmod.dequantize(q, scale, zp) for q in row]
        assert linkmod.class_index(row, scale, zp) == top_class(deq)[0], row
