"""A seeded fuzzer for the serial protocol, a byte framer, and the expected answer of every line.

The expected answers come from ``tests/fake_model/ref.py`` (the independent
Python model of docs/protocol.md) with the *real* model plugged in:
``RealModel.invoke`` is ``ipytinyml.quant.evaluate_plan`` on the plan read from
the ``.tflite`` the sketch was generated from. So every answer line of the
board, errors, ``ok`` answers and human lines alike, is compared with an exact
expectation (timings and the free-RAM figure aside).

Items are what the sender writes: a list of chunks (one ``write`` each, with
an optional pause before the next) that together hold zero or more complete
lines. A pause of ``SILENCE`` or more is a silence on the line, which ends the
line the board holds (the sender then waits for its answer); shorter pauses
(``SHORT_PAUSES``, far below the 20 ms gap that marks a line typed) split a
line across writes without ending it. A silence never follows a one-byte line
held (the board keeps it a second, see docs/protocol.md); typed lines are left
to tests/test_serial_bursts.py. ``Framer`` cuts the byte stream into lines
exactly as the board does, timing included.

Requests are mostly sealed with their check field (``ref.seal``), so the
parsers behind it are reached; a few lose a byte or carry none (error 9).
"""
from __future__ import annotations

import random
import re
import struct
from dataclasses import dataclass, field

import numpy as np

from fake_model import ref

LINE_MAX = ref.LINE_MAX
SILENCE = 2 * ref.SILENCE_MS / 1000   # seconds: a pause this long ends a burst line held
# Pauses inside a line: far below ref.TYPED_GAP_MS, so OS jitter cannot make them a gap
# that marks the line typed (a typed line then ignores the SILENCE that should end it).
SHORT_PAUSES = (0.0, 0.0005, 0.002)
CHECK = len(b" *000000")
SEPARATORS = (" ", ",", "\t")
ENDINGS = (b"\n", b"\r\n", b"\r")

# Number edge cases from the brief and docs/protocol.md.
EDGE_NUMBERS = (
    "-0", "+0", "0", "-0.0", "1e309", "-1e309", "nan", "NaN", "-nan", "inf", "-inf", "Infinity",
    "1" * 40, "0." + "0" * 37 + "1", "9" * 40, "0" * 39 + "1", "", "+", "-", ".", "-.", "1e", "1e+",
    "1e-", "e5", "--1", "+-1", "1-", "0x10", "1..2", "1.2.3", "1e2e3", "1e-400", "1e-45", "1e38",
    "1e39", "3.4028235e38", "3.4028236e38", "-3.4028235e38", "3.40282356779733661637539395458142568448e38",
    "1.17549435e-38", "99999999999999999999999", "123456789012345678901234567890",
    "0.000000000000000000000000000000000000000000001", "5.", ".5", "1E2", "-1.25E-3", "1e+0002",
    "256", "-256", "127", "128", "-128", "-129", "65535", "1,5", "١٢", "½", "0b1", "1_000",
    "12345678901234567890.5", "2147483648", "-2147483649", "4294967296",
)
EDGE_IDS = ("65536", "99999", "-1", "000001", "00000", "0", "65535", "007", "", "x", "1x", "1.5",
            "100000", "+1", " 1")
COMMANDS = ("i", "p", "r", "x", "I", "P", "info", "pp", "", "!", "?")


# ----------------------------------------------------------------------- the framer

class Framer:
    """The board's line framing, fed incrementally: '\\n', '\\r' and '\\r\\n' end a line;
    bytes past LINE_MAX are dropped and the line is marked overflowed. Pauses follow the
    rule of ref.split_lines: a silence ends a line held unless the line is typed (a pause
    of more than TYPED_GAP_MS fell inside it); a one-byte line needs SILENCE1_MS."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.overflow = False
        self.after_cr = False
        self.after_gap = False
        self.typed = False
        self.quiet_ms = 0.0   # pause since the last byte

    def silence(self, seconds: float = SILENCE) -> list[tuple[bytes, bool]]:
        """A pause on the line: it ends the line held, if any and the rule says so."""
        self.quiet_ms += 1000 * seconds
        if not self.partial or self.typed or self.quiet_ms < (
                ref.SILENCE1_MS if len(self.buf) == 1 else ref.SILENCE_MS):
            return []
        line = (bytes(self.buf), self.overflow)
        self.buf, self.overflow, self.after_cr, self.after_gap = bytearray(), False, False, True
        return [line]

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        if data:
            self.typed = self.typed or self.partial and self.quiet_ms > ref.TYPED_GAP_MS
            self.quiet_ms = 0.0
        lines = []
        for b in data:
            if b in (10, 13):
                if self.after_gap or (b == 10 and self.after_cr):
                    self.after_cr, self.after_gap = b == 13, False
                    continue
                lines.append((bytes(self.buf), self.overflow))
                self.buf, self.overflow, self.after_cr = bytearray(), False, b == 13
                self.typed = False
                continue
            self.after_cr = self.after_gap = False
            if len(self.buf) < LINE_MAX:
                self.buf.append(b)
            else:
                self.overflow = True
        return lines

    @property
    def partial(self) -> bool:
        return bool(self.buf) or self.overflow


def segments(chunk: bytes) -> list[bytes]:
    """A chunk cut after each line end ('\\r\\n' kept together), so the sender can wait for
    each line's answer before the next line's bytes go out (the Uno's 64-byte RX buffer)."""
    out, start, i = [], 0, 0
    while i < len(chunk):
        if chunk[i] in (10, 13):
            end = i + 2 if chunk[i] == 13 and chunk[i + 1:i + 2] == b"\n" else i + 1
            out.append(chunk[start:end])
            start = i = end
            continue
        i += 1
    if start < len(chunk):
        out.append(chunk[start:])
    return out


# ------------------------------------------------------------------ the expectation

@dataclass(frozen=True)
class RealModel(ref.FakeModel):
    """The spec model of tests/fake_model/ref.py with the real int8 model inside."""

    plan: object = field(default=None, compare=False, hash=False)
    table: dict = field(default_factory=dict, compare=False, hash=False)  # int8 inputs -> outputs

    def invoke(self, x):
        key = tuple(x)
        if key not in self.table:
            from ipytinyml.quant import evaluate_plan
            self.table[key] = [int(v) for v in
                               evaluate_plan(self.plan, np.asarray([x], dtype=np.int8))[0]]
        return self.table[key]


def f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def real_model(plan, model_hash: str, input_label: str, output_label: str) -> RealModel:
    stage = plan.input_stage
    return RealModel(
        n_in=plan.n_inputs, n_out=plan.n_outputs, model_hash=model_hash, runtime="native",
        mean_bits=tuple(f32_bits(v) for v in stage.mean), div_bits=tuple(f32_bits(v) for v in stage.div),
        input_scale_bits=f32_bits(plan.input.scale), input_zero_point=int(plan.input.zero_point),
        output_scale_bits=f32_bits(plan.output.scale), output_zero_point=int(plan.output.zero_point),
        input_label=input_label, output_label=output_label, board="uno", cycles=True,
        fail_input=10_000, plan=plan, table=_all_outputs(plan))


def _all_outputs(plan) -> dict:
    """Every int8 input's outputs at once, for a one-input model (evaluate_plan per call is slow)."""
    if plan.n_inputs != 1:
        return {}
    from ipytinyml.quant import evaluate_plan
    x = np.arange(-128, 128, dtype=np.int8).reshape(-1, 1)
    return {(int(v),): [int(o) for o in row] for v, row in zip(x[:, 0], evaluate_plan(plan, x))}


_FREE = re.compile(r" free=\d+")
_ARENA = re.compile(r" arena=\d+")


def normalize(line: str) -> str:
    """Timings, free RAM and arena bytes as '*' (the spec model cannot know them)."""
    return _ARENA.sub(" arena=*", _FREE.sub(" free=*", ref.normalize(line)))


def expected(line: bytes, overflow: bool, model: RealModel) -> str:
    return normalize(ref.answer(line, overflow, model))


# ------------------------------------------------------------------------ the fuzzer

@dataclass
class Item:
    """What to write: chunks (each one write), pauses (seconds, after each chunk), a kind."""

    kind: str
    chunks: list[bytes]
    pauses: list[float]


class Fuzzer:
    """Seeded generator of protocol input: valid requests and human lines interleaved with
    random bytes, binary, overlong and partial lines, and number and id edge cases."""

    def __init__(self, seed: int, *, max_values: int = 16, n_in: int = 1, input_scale: float = 1.0):
        self.rng = random.Random(seed)
        self.max_values = max_values
        self.n_in = n_in
        self.input_scale = input_scale
        self.kinds = [
            (self.raw, 14), (self.predict, 14), (self.info, 4), (self.human, 8),
            (self.printable, 6), (self.binary, 6), (self.overlong, 5), (self.boundary, 4),
            (self.edge_number, 14), (self.edge_id, 6), (self.empty, 3), (self.separators_only, 2),
            (self.glued, 3), (self.utf8, 2),
        ]
        self._weights = [w for _, w in self.kinds]

    # -- pieces
    def sep(self) -> str:
        r = self.rng.random()
        if r < 0.7:
            return " "
        return "".join(self.rng.choice(SEPARATORS) for _ in range(self.rng.randint(1, 3)))

    def ending(self) -> bytes:
        return self.rng.choices(ENDINGS, weights=(6, 3, 2))[0]

    def rid(self) -> str:
        value = self.rng.choice((self.rng.randint(0, 65535), self.rng.randint(0, 99), 0, 65535))
        text = str(value)
        if self.rng.random() < 0.1 and len(text) < 5:
            text = "0" * self.rng.randint(1, 5 - len(text)) + text
        return text

    def int8_token(self) -> str:
        v = self.rng.randint(-128, 127)
        text = str(v)
        r = self.rng.random()
        if r < 0.05 and v >= 0:
            text = "+" + text
        elif r < 0.1:
            text = ("-" if v < 0 else "") + "0" * self.rng.randint(1, 3) + str(abs(v))
        return text

    def decimal_token(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.3:
            return str(rng.randint(0, 300))
        if r < 0.5:
            return f"{rng.uniform(-50, 400):.{rng.randint(0, 6)}f}"
        if r < 0.65:
            x = float(np.float32(rng.uniform(-1e3, 1e3)))
            return repr(x)
        if r < 0.75:
            return f"{rng.uniform(1, 9.99):.{rng.randint(0, 4)}f}e{rng.randint(-5, 3)}"
        if r < 0.85:
            return rng.choice(("-0", "0", ".5", "5.", "0.0", "-.25", "1E2", "+7", "1e-45",
                               "3.4028235e38", "-1e30", "1e6", "-1e4", "0.000001"))
        # multiples of the scale and half-way points: QUANTIZE rounding edges
        k = rng.randint(-140, 140) + rng.choice((0, 0.5, -0.5))
        return repr(float(np.float32(k * self.input_scale)))

    def seal(self, line: str) -> bytes:
        """A request with its check field; now and then one that lost a byte or has none."""
        data = line.encode("utf-8")
        r = self.rng.random()
        if r < 0.03:
            return data
        data = ref.seal(data)
        if r < 0.08:
            k = self.rng.randrange(len(data))
            data = data[:k] + data[k + 1:]
        return data

    def values_line(self, make, prefix: str) -> str:
        """Up to max_values tokens, kept within LINE_MAX characters (with the check
        field for a request)."""
        count = self.rng.randint(1, self.max_values // self.n_in) * self.n_in
        line = prefix
        used = 0
        limit = LINE_MAX - (CHECK if prefix else 0)
        for _ in range(count):
            token = make()
            piece = (self.sep() if (line or self.rng.random() < 0.2) else "") + token
            if len(line) + len(piece) > limit:
                break
            line += piece
            used += 1
        if used % self.n_in:  # keep whole inferences (a few lines still get 'wrong count')
            pass
        if self.rng.random() < 0.1 and len(line) < limit:
            line += self.sep()[: limit - len(line)]
        return line

    # -- kinds
    def raw(self) -> tuple[str, bytes]:
        return "raw", self.seal(self.values_line(self.int8_token, f"!{self.rid()}{self.sep()}r"))

    def predict(self) -> tuple[str, bytes]:
        return "predict", self.seal(self.values_line(self.decimal_token, f"!{self.rid()}{self.sep()}p"))

    def info(self) -> tuple[str, bytes]:
        lead = self.sep() if self.rng.random() < 0.1 else ""
        tail = self.sep() if self.rng.random() < 0.1 else ""
        return "info", self.seal(f"{lead}!{self.rid()}{self.sep()}i{tail}")

    def human(self) -> tuple[str, bytes]:
        return "human", self.values_line(self.decimal_token, "").encode()

    def printable(self) -> tuple[str, bytes]:
        n = self.rng.randint(1, 90)
        alphabet = "".join(chr(c) for c in range(32, 127)) + "\t"
        text = "".join(self.rng.choice(alphabet) for _ in range(n))
        if self.rng.random() < 0.3:
            text = "!" + text
        return "printable", text.encode()

    def binary(self) -> tuple[str, bytes]:
        n = self.rng.randint(1, 100)
        data = bytearray(self.rng.randrange(256) for _ in range(n))
        for _ in range(self.rng.randint(0, 3)):  # make NUL and 0xFF common
            data.insert(self.rng.randint(0, len(data)), self.rng.choice((0, 0xFF, 0x80, 0x7F, 0x1B)))
        if self.rng.random() < 0.3:
            data = bytearray(f"!{self.rid()} r 1 ".encode()) + data
        return "binary", bytes(data)

    def overlong(self) -> tuple[str, bytes]:
        n = self.rng.choice((80, 81, 100, 200, self.rng.randint(80, 600), 2000))
        head = self.rng.choice(("", f"!{self.rid()} p ", f"!{self.rid()} r ", "!", "!65536 i "))
        body = "".join(self.rng.choice(" 0123456789-.,e") for _ in range(max(0, n - len(head))))
        data = (head + body).encode()
        if self.rng.random() < 0.2:
            pos = self.rng.randint(0, len(data))
            data = data[:pos] + b"\x00" + data[pos:]
        return "overlong", data

    def boundary(self) -> tuple[str, bytes]:
        """Lines of exactly 78, 79 and 80 characters."""
        n = self.rng.choice((78, 79, 80))
        head = self.rng.choice((f"!{self.rid()} r 1", f"!{self.rid()} p 130", "130", f"!{self.rid()} i"))
        if head.startswith("!"):  # the check field counts
            return "boundary", ref.seal((head + " " * (n - CHECK - len(head))).encode())
        return "boundary", (head + " " * (n - len(head))).encode()

    def edge_number(self) -> tuple[str, bytes]:
        tokens = [self.rng.choice(EDGE_NUMBERS)]
        for _ in range(self.rng.randint(0, 3)):
            tokens.insert(self.rng.randint(0, len(tokens)),
                          self.rng.choice((self.decimal_token(), self.int8_token(),
                                           self.rng.choice(EDGE_NUMBERS))))
        head = self.rng.choice((f"!{self.rid()} p", f"!{self.rid()} r", "", f"!{self.rid()} i"))
        text = head + "".join((self.sep() if (head or i) else "") + t for i, t in enumerate(tokens))
        if head:
            return "edge_number", self.seal(text)[:200]
        return "edge_number", text.encode("utf-8")[:200]

    def edge_id(self) -> tuple[str, bytes]:
        rid = self.rng.choice(EDGE_IDS)
        cmd = self.rng.choice(COMMANDS)
        args = self.rng.choice(("", " 1", " 130", " -128 127", " x"))
        glue = self.rng.choice((" ", "", ",", "\t"))
        return "edge_id", self.seal(f"!{rid}{glue}{cmd}{args}")

    def empty(self) -> tuple[str, bytes]:
        return "empty", b""

    def separators_only(self) -> tuple[str, bytes]:
        return "separators", "".join(self.rng.choice(SEPARATORS) for _ in range(self.rng.randint(1, 20))).encode()

    def glued(self) -> tuple[str, bytes]:
        """Two requests without a separator between value and next command, and similar;
        two sealed requests merged (a lost line end), whole or as the start of one and an
        end of the next with consecutive ids (as Link sends them), often of the same
        length, which keeps the count and leaves the check's id byte to catch it."""
        r = self.rng.random()
        if r < 0.2:
            return "glued", self.seal(f"!{self.rid()} r 1") + self.seal(f"!{self.rid()} i")
        if r < 0.6:
            rid = self.rng.choice((self.rng.randint(0, 65534), self.rng.randint(0, 99),
                                   self.rng.choice((9, 99, 255, 999, 9999))))
            a, b = (ref.seal(self.values_line(self.int8_token, f"!{k} r").encode())
                    for k in (rid, rid + 1))
            i = self.rng.randint(0, len(a))
            j = i if self.rng.random() < 0.7 else self.rng.randint(0, len(b))
            return "glued", a[:i] + b[j:]
        return "glued", self.rng.choice((
            f"!{self.rid()} r 1!{self.rid()} r 2", f"!{self.rid()} p 1 p 2", "130!1 i",
            f"!{self.rid()} i!{self.rid()} i", "!!1 i", "!1 r 1 - 2", "!1 r - 1", "!1 p 1 e5",
        )).encode()

    def utf8(self) -> tuple[str, bytes]:
        return "utf8", self.rng.choice(("130 µs", "é", "１３０", "!1 p ٣", "\u00a0130")).encode("utf-8")

    # -- items
    def item(self) -> Item:
        make = self.rng.choices([k for k, _ in self.kinds], weights=self._weights)[0]
        kind, body = make()
        data = body + self.ending()
        chunks, pauses = [data], [0.0]
        r = self.rng.random()
        if r < 0.12 and len(data) > 1:  # a partial line: the rest arrives later, in pieces
            cuts = sorted(self.rng.sample(range(1, len(data)), min(len(data) - 1, self.rng.randint(1, 3))))
            chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
            pauses = [self.rng.choices((*SHORT_PAUSES, SILENCE), weights=(4, 3, 3, 2))[0]
                      for _ in chunks]
            pauses = self._no_lone_byte_silence(chunks, pauses)
        elif r < 0.15:  # a line end arriving alone (an '\r' then '\n' pair split across writes)
            if data.endswith(b"\r\n"):
                chunks, pauses = [data[:-1], b"\n"], [self.rng.choice((0.0, 0.005, SILENCE)), 0.0]
        elif r < 0.2:  # no line end (the Serial Monitor's default): a silence ends the line,
            # sometimes followed by a late line end, which then ends nothing
            late = self.rng.choice((b"", b"", self.ending()))
            if self._no_lone_byte_silence([body], [SILENCE]) == [SILENCE]:
                chunks, pauses = [body, late] if late else [body], [SILENCE, 0.0] if late else [SILENCE]
        return Item(kind, chunks, pauses)

    @staticmethod
    def _no_lone_byte_silence(chunks: list[bytes], pauses: list[float]) -> list[float]:
        """Pauses with no SILENCE after a one-byte line held: the board keeps such a byte
        for a second, and the next byte after the pause would make the line typed. Timing
        that exact is left to the dedicated tests; the fuzzer's pauses stay unambiguous."""
        framer, out = Framer(), []
        for chunk, pause in zip(chunks, pauses):
            framer.feed(chunk)
            if pause >= SILENCE and framer.partial and len(framer.buf) == 1:
                pause = SHORT_PAUSES[-1]
            out.append(pause)
            if pause >= SILENCE:
                framer.silence(pause)
        return out
