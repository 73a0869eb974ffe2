"""Line endings and bursts on the virtual Uno's serial line (docs/protocol.md, Framing).

Real parts: the protocol and the native sketch template built for arduino:avr:uno with
avr-gcc and the Arduino core (tests/test_protocol_host.py's ``uno`` fixture, the fake
model inside), run in simavr paced to real time behind a pty, whose RX ring buffer of
64 bytes drops bytes exactly as a real Uno's does when it is sent more than it drains.

- The Arduino Serial Monitor sends one entry per write with one of four line-ending
  settings: none, NL, CR, NL+CR. Each one gets exactly one answer per entry, for a human
  line and for a sealed request, and ``12`` then ``130`` are two answers, not ``12130``;
  a one-character entry with no line ending is answered after about a second.
- A terminal that sends each key as typed (150 ms between keys): ``130`` and Enter is one
  line with one answer, also with a 400 ms pause inside it.
- A burst of sealed requests written much faster than the board drains them: every
  ``@<id> ok`` answer is exactly the answer to request ``<id>``; the requests that lost
  bytes get an error or no answer, never a wrong one. (Ids are consecutive, so a lost
  line end that glues the start of one request to an end of the same length of the next
  is caught by the check's id byte, not only by its CRC: the test is deterministic.)
"""
from __future__ import annotations

import random
import time

import pytest

from fake_model import ref
from fake_model.ref import FakeModel
from test_prestage_board import sim_harness  # noqa: F401  (fixture: the simavr harness)
from test_protocol_host import needs_avr, uno  # noqa: F401  (fixture: the Uno ELF)

serial = pytest.importorskip("serial")

MODEL = FakeModel(board="uno")
ENTRY_GAP = 0.3           # a person between two Serial Monitor entries
ENDINGS = {"none": b"", "NL": b"\n", "CR": b"\r", "NL+CR": b"\r\n"}


class Line:
    """The virtual Uno's port: raw writes, answers read line by line."""

    def __init__(self, port: str):
        self.ser = serial.Serial(port, 115200, timeout=0.05, write_timeout=5)
        self.rx = bytearray()

    def read(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.rx:
            if time.monotonic() >= deadline:
                return None
            self.rx += self.ser.read(self.ser.in_waiting or 1)
        raw, _, rest = bytes(self.rx).partition(b"\n")
        self.rx = bytearray(rest)
        assert raw.endswith(b"\r"), raw
        return raw[:-1].decode("ascii")

    def quiet(self, seconds: float) -> list[str]:
        """Everything that arrives until nothing has for ``seconds``."""
        lines = []
        while (text := self.read(seconds)) is not None:
            lines.append(text)
        return lines


@pytest.fixture
def line(uno, sim_harness):  # noqa: F811
    from ipytinyml.toolchain.sim import VirtualBoard

    with VirtualBoard(uno["elf"], harness=sim_harness, speed=1) as vb:
        ln = Line(vb.port)
        try:
            assert ln.read(10) == MODEL.banner()
            yield ln
        finally:
            ln.ser.close()


@needs_avr
@pytest.mark.parametrize("setting", list(ENDINGS))
def test_every_serial_monitor_line_ending(line, setting):
    """Each entry in one write, a person's pause between entries: one answer each, no
    stray error for the second byte of NL+CR, no entry glued to the next."""
    end = ENDINGS[setting]
    entries = [b"130", ref.seal(b"!7 r 5 -6"), b"12", b"130", ref.seal(b"!8 i"), b"1.5, 2"]
    want = [ref.normalize(ref.answer(e, False, MODEL)) for e in entries]
    assert want[2] != want[3] and want[1] == "@7 ok 5 -6 us=* cyc=*"
    for entry, expected in zip(entries, want):
        line.ser.write(entry + end)
        got = line.read(3)
        assert got is not None, f"no answer to {entry + end!r}"
        got = ref.normalize(got)
        if expected.startswith("@8 ok"):
            got, expected = got.split(" free=")[0], expected.split(" free=")[0]
        assert got == expected, entry
        assert line.quiet(ENTRY_GAP) == [], f"an extra line after {entry + end!r}"


@needs_avr
def test_a_line_end_after_a_silence_ends_nothing(line):
    """A script that writes the value, then (late) its line end: one answer, no empty-line
    error; a CR LF pair split by a silence is one line end too."""
    for late in (b"\n", b"\r", b"\r\n"):
        line.ser.write(b"130")
        assert ref.normalize(line.read(3)) == "horsepower 130 -> mpg 22.93 (* us)"
        line.ser.write(late)
        assert line.quiet(ENTRY_GAP) == []
    line.ser.write(b"130\r")
    assert line.read(3).startswith("horsepower 130 ->")
    time.sleep(ENTRY_GAP)
    line.ser.write(b"\n")
    assert line.quiet(ENTRY_GAP) == []
    line.ser.write(b"\n")  # an empty line still gets its answer
    assert line.quiet(ENTRY_GAP) == ["#err 7 empty line"]


KEY_GAP = 0.15            # a person between two keys in a terminal that sends each key


def type_keys(line, keys: bytes, gaps=None) -> None:
    """One write per key, as screen, picocom, minicom or `pio device monitor` send them."""
    for i, key in enumerate(keys):
        if i:
            time.sleep(gaps[i - 1] if gaps else KEY_GAP)
        line.ser.write(bytes([key]))


@needs_avr
@pytest.mark.parametrize("enter", [b"\r", b"\n", b"\r\n"], ids=["CR", "LF", "CRLF"])
def test_a_person_typing_key_by_key_gets_one_answer(line, enter):
    """`130` then Enter, key by key: the gaps mark the line typed, so no silence cuts it
    into `1`, `3`, `0`; Enter ends it (CR LF as one end)."""
    type_keys(line, b"130" + enter)
    assert [ref.normalize(t) for t in line.quiet(1.5)] == ["horsepower 130 -> mpg 22.93 (* us)"]


@needs_avr
def test_a_typed_line_survives_a_long_pause(line):
    """A person who stops 400 ms in the middle of a line (past every burst silence)."""
    type_keys(line, b"1.5, 2\r", [KEY_GAP, KEY_GAP, 0.4, KEY_GAP, KEY_GAP, KEY_GAP])
    want = ref.normalize(ref.answer(b"1.5, 2", False, MODEL))
    assert [ref.normalize(t) for t in line.quiet(1.5)] == [want]


@needs_avr
def test_a_one_character_entry_without_line_ending(line):
    """The Serial Monitor with "No line ending": `7` alone is answered after about a
    second (a lone byte may be a person's first key), `12` and `130` right away."""
    want = ref.normalize(ref.answer(b"7", False, MODEL))
    start = time.monotonic()
    line.ser.write(b"7")
    assert line.read(0.5) is None, "a lone byte answered before half a second"
    got = line.read(2.5)
    took = time.monotonic() - start
    assert got is not None and ref.normalize(got) == want
    assert 0.5 <= took < 2.5, took
    assert line.quiet(ENTRY_GAP) == []
    for entry in (b"12", b"130"):
        line.ser.write(entry)
        assert ref.normalize(line.read(0.8)) == ref.normalize(ref.answer(entry, False, MODEL))
        assert line.quiet(ENTRY_GAP) == []


@needs_avr
def test_a_burst_never_gets_a_wrong_answer(line):
    """600 sealed raw requests of 1 to 4 values in one write, about 6 times what the
    board drains meanwhile: every ok answer is the right one for its id, some requests
    lost bytes (so the test saw drops), and the board serves on afterwards."""
    rng = random.Random(12)
    sent = {}
    for rid in range(1, 601):
        values = [rng.choice([v for v in range(-128, 128) if v != MODEL.fail_input])
                  for _ in range(rng.randint(1, 4))]
        sent[rid] = values
    data = b"".join(ref.seal(b"!%d r %s" % (rid, " ".join(map(str, v)).encode())) + b"\n"
                    for rid, v in sent.items())
    line.ser.write(data)
    answers = line.quiet(1.0)
    ok = errors = human = 0
    for text in answers:
        assert not text.startswith("#tinyml"), "the board reset"
        parts = text.split()
        if not text.startswith(("@", "#")):
            human += 1  # a line that lost its "!" and kept only numbers: a human line, rightly
            continue
        if parts[0] == "#err" or parts[1] == "err":
            errors += 1
            continue
        rid = int(parts[0][1:])
        assert parts[1] == "ok" and [int(p) for p in parts[2:] if "=" not in p] == sent[rid], text
        ok += 1
    lost = len(sent) - ok
    print(f"\nburst: {len(sent)} requests, {len(data)} bytes: {ok} ok, {errors} errors, "
          f"{human} human answers, {lost - errors - human} not answered at all")
    assert ok > 50 and lost > 50, (ok, errors, lost)
    line.ser.write(ref.seal(b"!9 r 3") + b"\n")
    assert ref.normalize(line.read(3)) == "@9 ok 3 us=* cyc=*"
