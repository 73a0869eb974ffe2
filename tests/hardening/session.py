"""Drive a fuzzing run against a board on a serial port, checking every line it prints.

The sender is valid for a real Uno too: it writes one line at a time (a
chunk is cut after each line end) and waits for that line's answer before
the next line's bytes go out, so no more than one line is ever in the 64-byte
receive buffer while the board is busy. Partial lines (no end yet) are
written without waiting: they get no answer until their end arrives.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from fake_model import ref

from .fuzz import SILENCE, Framer, Item, expected, normalize, segments

ANSWER_TIMEOUT = 5.0


class BoardFailure(AssertionError):
    """A hang, a reset, a wrong or extra answer."""


@dataclass
class Stats:
    lines: int = 0                    # complete lines sent (each must get one answer)
    bytes_sent: int = 0
    seconds: float = 0.0
    kinds: collections.Counter = field(default_factory=collections.Counter)
    errors: collections.Counter = field(default_factory=collections.Counter)  # error code -> count
    ok: int = 0
    human: int = 0
    free: set = field(default_factory=set)   # free RAM values the info answers reported
    cycles: list = field(default_factory=list)
    predict_pairs: list = field(default_factory=list)  # (float32 inputs, int8 outputs) of ok 'p'
    raw_pairs: list = field(default_factory=list)      # (int8 inputs, int8 outputs) of ok 'r'
    worst_answer_s: float = 0.0

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


class LineReader:
    """Lines from a pyserial port (CR LF stripped), with deadlines; every line is kept."""

    def __init__(self, ser):
        self.ser = ser
        self.rx = bytearray()
        self.banners = 0
        self.transcript: collections.deque = collections.deque(maxlen=40)

    def line(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while True:
            nl = self.rx.find(b"\n")
            if nl >= 0:
                raw = bytes(self.rx[:nl + 1])
                del self.rx[:nl + 1]
                if not raw.endswith(b"\r\n"):
                    raise BoardFailure(f"a board line not ended by CR LF: {raw!r}")
                text = raw[:-2]
                self.transcript.append(("<", text))
                if text.startswith(b"#tinyml"):
                    self.banners += 1
                return text
            if time.monotonic() >= deadline:
                return None
            self.rx += self.ser.read(self.ser.in_waiting or 1)

    def write(self, data: bytes) -> None:
        self.transcript.append((">", data))
        self.ser.write(data)
        self.ser.flush()


def _ok_values(answer: str) -> list[int]:
    return [int(t) for t in answer.split()[2:] if "=" not in t]


class FuzzSession:
    """Owns an open port whose board has printed its banner (checked here)."""

    def __init__(self, ser, model, *, banner_timeout: float = 10.0, paced: bool = True):
        # paced: the board's clock follows the wall clock, so a short pause between writes
        # does not end a line. An unpaced simulator may live through any silence in a short
        # pause: there, chunks split by short pauses go out in one write.
        self.paced = paced
        self.reader = LineReader(ser)
        self.model = model
        self.framer = Framer()
        self.stats = Stats()
        first = self.reader.line(banner_timeout)
        if first is None or not first.startswith(b"#tinyml ready "):
            raise BoardFailure(f"no boot banner, got {first!r}")
        if first.decode() != model.banner():
            raise BoardFailure(f"banner {first!r} is not {model.banner()!r}")

    def fail(self, message: str) -> BoardFailure:
        tail = "\n".join(f"  {d} {t!r}" for d, t in self.reader.transcript)
        return BoardFailure(f"{message}\nlast bytes on the wire:\n{tail}")

    def send_item(self, item) -> None:
        chunks, pauses = list(item.chunks), list(item.pauses)
        if not self.paced:
            joined = [(bytearray(), 0.0)]
            for chunk, pause in zip(chunks, pauses):
                joined[-1][0].extend(chunk)
                if pause >= SILENCE:
                    joined[-1] = (joined[-1][0], pause)
                    joined.append((bytearray(), 0.0))
            chunks, pauses = [bytes(c) for c, _ in joined], [p for _, p in joined]
        for chunk, pause in zip(chunks, pauses):
            for seg in segments(chunk):
                self.reader.write(seg)
                self.stats.bytes_sent += len(seg)
                for line, overflow in self.framer.feed(seg):
                    self._check_answer(line, overflow)
                    self.stats.kinds[item.kind] += 1
            if pause >= SILENCE:  # the board ends the line held once it has heard nothing
                ended = self.framer.silence(pause)
                for line, overflow in ended:
                    self._check_answer(line, overflow)
                    self.stats.kinds[item.kind] += 1
                if not ended and self.framer.partial:  # a line the board keeps: pause anyway
                    time.sleep(pause)
            elif pause:
                time.sleep(pause)

    def _check_answer(self, line: bytes, overflow: bool) -> None:
        want = expected(line, overflow, self.model)
        start = time.monotonic()
        got = self.reader.line(ANSWER_TIMEOUT)
        took = time.monotonic() - start
        self.stats.worst_answer_s = max(self.stats.worst_answer_s, took)
        self.stats.lines += 1
        if got is None:
            raise self.fail(f"hang: no answer within {ANSWER_TIMEOUT} s to {line!r}"
                            f"{' (overlong)' if overflow else ''}")
        if got.startswith(b"#tinyml"):
            raise self.fail(f"reset: a second banner {got!r} instead of the answer to {line!r}")
        try:
            text = got.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"non-ASCII answer {got!r} to {line!r}") from None
        if any(ord(c) < 32 for c in text):
            raise self.fail(f"control characters in the answer {got!r} to {line!r}")
        if normalize(text) != want:
            raise self.fail(f"answer to {line!r}{' (overlong)' if overflow else ''}:\n"
                            f"  board: {text!r}\n  spec:  {want!r}")
        self._record(line, text)

    def _record(self, line: bytes, text: str) -> None:
        parts = text.split()
        if parts[0].endswith("err") or (len(parts) > 1 and parts[1] == "err"):
            code = int(parts[1] if parts[0] == "#err" else parts[2])
            self.stats.errors[code] += 1
            return
        if not text.startswith("@"):
            self.stats.human += 1
            return
        self.stats.ok += 1
        fields = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
        if "free" in fields:
            self.stats.free.add(int(fields["free"]))
            return
        self.stats.cycles.append(int(fields["cyc"]))
        outputs = _ok_values(text)
        body = ref.strip_check(line).lstrip(b" ,\t")
        tokens = ref._tokens(body[1:])[1:]  # drop the id
        command, values = tokens[0], tokens[1:]
        if command == b"r":
            self.stats.raw_pairs.append(([int(v) for v in values], outputs))
        elif command == b"p":
            self.stats.predict_pairs.append(([ref.parse_decimal(v)[1] for v in values], outputs))

    def sync(self, rid: int = 4242) -> str:
        """An info request: the board still serves (and nothing stray is pending)."""
        if self.framer.partial:  # end whatever partial line the board holds
            self.send_item(Item("sync", [b"\n"], [0.0]))
        self.send_item(Item("sync", [ref.seal(f"!{rid} i".encode()) + b"\n"], [0.0]))
        stray = self.reader.line(0.3)
        if stray is not None:
            raise self.fail(f"an extra line from the board: {stray!r}")
        return self.reader.transcript[-1][1].decode()

    def run(self, items) -> Stats:
        start = time.monotonic()
        for item in items:
            self.send_item(item)
        self.sync()
        self.stats.seconds = time.monotonic() - start
        if self.reader.banners != 1:
            raise self.fail(f"{self.reader.banners} banners seen: the board reset")
        return self.stats

