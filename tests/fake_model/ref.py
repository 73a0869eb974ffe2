"""A Python model of the board side of docs/protocol.md, for the tests.

Written from the spec, independently of the C code, with exact arithmetic
(``fractions.Fraction``) for number parsing and numpy float32 for the input
pre-stage (``ipytinyml.prestage.InputStage.quantize``, the reference), so
comparing the board's bytes with :func:`board_output` checks the firmware
line by line. Timing fields are replaced by ``*`` on both sides
(:func:`normalize`).
"""
from __future__ import annotations

import functools
import math
import re
import struct
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ipytinyml.prestage import InputStage, f32_bits

LINE_MAX = 79
SILENCE_MS = 50          # no byte read for this long ends a line of 2 bytes or more
SILENCE1_MS = 1000       # ... a line of one byte
TYPED_GAP_MS = 20        # a longer gap inside a line marks it typed: no silence ends it
SEPS = b" ,\t"
ERRORS = {
    1: "line too long",
    2: "bad number",
    3: "wrong count",
    4: "unknown command",
    5: "out of range",
    6: "not text",
    7: "empty line",
    8: "model failed",
    9: "bad check",
}
PROTO = 2
FLT_MAX = Fraction(struct.unpack("<f", struct.pack("<I", 0x7F7FFFFF))[0])
NUMBER = re.compile(rb"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def bits_to_f32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


@dataclass(frozen=True)
class FakeModel:
    """The constants of tests/fake_model/tinyml_model.h (as -D overrides)."""

    n_in: int = 1
    n_out: int = 1
    model_hash: str = "0123456789ab"
    runtime: str = "native"
    input_scale_bits: int = 0x3CC99F2A
    input_zero_point: int = -128
    output_scale_bits: int = 0x3E1C8F11
    output_zero_point: int = -23
    input_label: str = "horsepower"
    output_label: str = "mpg"
    arena: int = 65
    fail_input: int = -77
    board: str = "host"
    cycles: bool = True
    # the input pre-stage, float32 bits per feature; None: the identity stage
    # (mean 0, divisor the input scale)
    mean_bits: tuple[int, ...] | None = None
    div_bits: tuple[int, ...] | None = None
    step: int = 3            # y[j] = x[j % n_in] + step * j (0: an echo when n_out == n_in)
    # a classifier: its class names as in report.json (None: a regression); the header
    # gets them through ipytinyml.codegen.classes, as a generated sketch does
    classes: tuple[str, ...] | None = None

    @functools.cached_property
    def stage(self) -> InputStage:
        """The pre-stage as ipytinyml.prestage's reference (numpy float32)."""
        mean = self.mean_bits or (0,) * self.n_in
        div = self.div_bits or (self.input_scale_bits,) * self.n_in
        return InputStage(mean=tuple(bits_to_f32(b) for b in mean),
                          div=tuple(bits_to_f32(b) for b in div), zero_point=self.input_zero_point)

    def _table(self) -> str:
        """The TINYML_INPUT_STAGE_BITS initializer: {mean, div} bits per feature."""
        st = self.stage
        return "{" + ", ".join(f"{{{f32_bits(m):#010x}UL, {f32_bits(d):#010x}UL}}"
                               for m, d in zip(st.mean, st.div)) + "}"

    def header(self) -> str:
        """#defines that configure tests/fake_model/tinyml_model.h (for builds without -D)."""
        return "".join(f"#define {d[2:].replace('=', ' ', 1)}\n" for d in self.defines())

    def defines(self) -> list[str]:
        return [
            f"-DTINYML_INPUT_STAGE_BITS={self._table()}",
            f"-DFAKE_STEP={self.step}",
            f"-DTINYML_N_INPUTS={self.n_in}",
            f"-DTINYML_N_OUTPUTS={self.n_out}",
            f'-DTINYML_MODEL_HASH="{self.model_hash}"',
            f'-DTINYML_RUNTIME="{self.runtime}"',
            f"-DTINYML_INPUT_SCALE_BITS={self.input_scale_bits:#x}UL",
            f"-DTINYML_INPUT_ZERO_POINT=({self.input_zero_point})",
            f"-DTINYML_OUTPUT_SCALE_BITS={self.output_scale_bits:#x}UL",
            f"-DTINYML_OUTPUT_ZERO_POINT=({self.output_zero_point})",
            f'-DTINYML_INPUT_LABEL="{self.input_label}"',
            f'-DTINYML_OUTPUT_LABEL="{self.output_label}"',
            f"-DTINYML_ARENA_BYTES={self.arena}",
            f"-DFAKE_FAIL_INPUT=({self.fail_input})",
            f"-DTINYML_PORT_HAS_CYCLES={int(self.cycles)}",
            *self._class_defines(),
        ]

    def _class_defines(self) -> list[str]:
        if not self.classes:
            return []
        from ipytinyml.codegen.classes import header_context
        ctx = header_context(self.classes, self.output_quant, self.n_out)["classes"]
        names = " ".join(line.strip().rstrip("\\").strip() for line in ctx["names"].splitlines())
        out = [f"-DTINYML_N_CLASSES={ctx['n']}", f"-DTINYML_CLASS_NAMES={names}"]
        if ctx["min_q"] is not None:
            out += [f"-DTINYML_CLASS_MIN_Q={ctx['min_q']}", f"-DTINYML_CLASS_ONE_K={ctx['one_k']}"]
        return out

    @property
    def output_quant(self):
        from ipytinyml.quant import TensorQuant
        return TensorQuant(scale=self.output_scale, zero_point=self.output_zero_point)

    @property
    def input_scale(self) -> float:
        return bits_to_f32(self.input_scale_bits)

    @property
    def output_scale(self) -> float:
        return bits_to_f32(self.output_scale_bits)

    @property
    def max_values(self) -> int:
        inferences = 1 if self.n_out >= 16 else 16 // self.n_out
        raw = inferences * self.n_in
        if raw <= 40:
            return raw
        return (40 // self.n_in) * self.n_in if self.n_in <= 40 else self.n_in

    def invoke(self, x: list[int]) -> list[int] | None:
        if x[0] == self.fail_input:
            return None
        return [max(-128, min(127, x[j % self.n_in] + self.step * j)) for j in range(self.n_out)]

    def quantize(self, x: float, k: int = 0) -> int:
        """Feature k's int8: the pre-stage reference (InputStage.quantize)."""
        row = [0.0] * self.n_in
        row[k] = x
        return int(self.stage.quantize(row)[0, k])

    def identity(self) -> str:
        return (f"proto={PROTO} runtime={self.runtime} board={self.board} model={self.model_hash} "
                f"in={self.n_in} out={self.n_out}")

    def banner(self) -> str:
        return "#tinyml ready " + self.identity()

    def info(self, rid: int) -> str:
        return (f"@{rid} ok {self.identity()} iscale={self.input_scale_bits:#010x} "
                f"izp={self.input_zero_point} oscale={self.output_scale_bits:#010x} "
                f"ozp={self.output_zero_point} arena={self.arena} free=0 max={self.max_values} "
                f"imean={self._hex(self.stage.mean)} idiv={self._hex(self.stage.div)}")

    @staticmethod
    def _hex(values) -> str:
        return ",".join(f"{f32_bits(v):#010x}" for v in values)


# ---------------------------------------------------------------- numbers

def fraction_to_f32(v: Fraction) -> float | None:
    """Round v to float32, ties to even; None when it rounds to infinity.

    Values below 2**-126 give 0.0 (the firmware flushes subnormals to zero,
    which changes no QUANTIZE result for scales >= 2**-125).
    """
    if v == 0:
        return 0.0
    sign = -1.0 if v < 0 else 1.0
    a = abs(v)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    # 2**e <= a < 2**(e+1); 24 significant bits
    m = round(a / Fraction(2) ** (e - 23))  # round() on a Fraction: ties to even
    if m == 1 << 24:
        m >>= 1
        e += 1
    if e > 127:
        return None
    if e < -126:
        return 0.0 * sign
    return sign * math.ldexp(m, e - 23)


def parse_decimal(tok: bytes) -> tuple[int, float | None]:
    """(0, float32 value) or (error code, None) for a 'p'/human value token."""
    if not NUMBER.fullmatch(tok):
        return 2, None
    text = tok.decode()
    neg = text.startswith("-")
    text = text.lstrip("+-")
    mant, _, exp = text.lower().partition("e")
    ip, _, fp = mant.partition(".")
    e10 = (int(exp) if exp else 0) - len(fp)
    sig = (ip + fp).lstrip("0")
    # the firmware keeps 20 significant digits and a sticky 21st
    if len(sig) > 20:
        sticky = any(c != "0" for c in sig[20:])
        e10 += len(sig) - 20
        sig = sig[:20]
        if sticky:
            sig += "1"
            e10 -= 1
    nd = len(sig)
    if nd and nd + e10 > 39:
        return 5, None
    if not nd or nd + e10 <= -39:
        return 0, -0.0 if neg else 0.0
    v = Fraction(int(sig)) * Fraction(10) ** e10
    f = fraction_to_f32(-v if neg else v)
    if f is None:
        return 5, None
    return 0, f


def parse_int8(tok: bytes) -> tuple[int, int | None]:
    if not NUMBER.fullmatch(tok) or not re.fullmatch(rb"[+-]?\d+", tok):
        return 2, None
    v = int(tok)
    if not -128 <= v <= 127:
        return 5, None
    return 0, v


def quantize(x: float, scale: float, zero_point: int) -> int:
    """TFLite QUANTIZE float -> int8: the division in float32, round half away."""
    with np.errstate(over="ignore"):
        t = float(np.float32(x) / np.float32(scale))
    if math.isinf(t) or abs(t) >= 256:
        r = 256 if t > 0 else -256
    else:
        r = int(math.floor(abs(t) + 0.5))  # exact in float64 for |t| < 256
        r = -r if t < 0 else r
    return max(-128, min(127, r + zero_point))


def display(q: int, scale_bits: int, zero_point: int) -> str:
    """The human answer's value: scale * (q - zp) with two decimals, as the
    firmware computes it (exact for scales >= 2**-1; below that bits under
    2**-24 of the fraction are folded into a sticky bit)."""
    k = q - zero_point
    mant = (scale_bits & 0x7FFFFF) | 0x800000
    shift = ((scale_bits >> 23) & 0xFF) - 127 - 23
    v = mant * abs(k)
    if shift > 0:
        return "ovf"
    while shift < -24:
        v = (v >> 1) | (v & 1)
        shift += 1
    hundredths = 0
    if shift:
        s = -shift
        frac = v & ((1 << s) - 1)
        v >>= s
        frac = (frac * 100 + (1 << (s - 1))) >> s
        if frac == 100:
            v, frac = v + 1, 0
        hundredths = frac
    sign = "-" if k < 0 and (v or hundredths) else ""
    return f"{sign}{v}.{hundredths:02d}"


def scientific(v: Fraction, digits: int) -> str:
    """v written with `digits` significant digits, truncated, as d.ddd...e<exp>: a long
    decimal for the parser tests (exact when v has that many digits or fewer)."""
    if v == 0:
        return "0"
    a, e = abs(v), 0
    while a >= 10:
        a /= 10
        e += 1
    while a < 1:
        a *= 10
        e -= 1
    s = str(int(a * 10 ** (digits - 1)))
    return f"{'-' if v < 0 else ''}{s[0]}.{s[1:]}e{e}"


def two_decimals(x: Fraction) -> str:
    """x rounded half away from zero to two decimals, exactly."""
    n = math.floor(abs(x) * 100 + Fraction(1, 2))
    return f"{'-' if x < 0 and n else ''}{n // 100}.{n % 100:02d}"


def class_index(scores: list[int], model: FakeModel) -> int:
    """The class the notebook's rule (ipytinyml.metrics.top_class) picks for one inference's
    int8 scores, on the float32 dequantized scores."""
    from ipytinyml.metrics import top_class
    from ipytinyml.quant import dequantize
    return top_class(dequantize(scores, model.output_quant))[0]


def class_answer(scores: list[int], model: FakeModel) -> str:
    """One inference of a classifier's human answer, "<class> (<p>)", decided by the
    notebook's own rule (ipytinyml.metrics.top_class) on the float32 dequantized scores."""
    from ipytinyml.codegen.classes import board_names
    from ipytinyml.metrics import top_class
    from ipytinyml.quant import dequantize

    probs = dequantize(scores, model.output_quant)
    c, _ = top_class(probs)
    p = Fraction(float(probs[c if len(scores) > 1 else 0]))
    if len(scores) == 1 and c == 0:
        p = 1 - p  # what top_class returns: 1.0 - p, exact in float64
    return f"{board_names(model.classes)[c]} ({two_decimals(p)})"


# ------------------------------------------------------------------ lines

def split_lines(data, pauses_ms=None) -> list[tuple[bytes, bool]]:
    """Complete lines of a byte stream as the board frames them: (stored
    bytes, overflowed). '\\n', '\\r' and '\\r\\n' end a line. ``data`` is bytes,
    or a list of byte strings with a pause between each two: ``pauses_ms[k]``
    ms after chunk k (default 2 * SILENCE_MS between each two, none after the
    last), the bytes of a chunk back to back. A pause is silence: with the silences before it (no byte between)
    it ends the line held if that line is not typed and the silence reaches
    SILENCE_MS (2 bytes or more) or SILENCE1_MS (one byte); a line end right
    after a line so ended ends nothing ('\\r\\n' counting as one). A line is
    typed once a pause of more than TYPED_GAP_MS falls between two of its
    bytes (a line end counts as one of them)."""
    chunks = [data] if isinstance(data, (bytes, bytearray)) else list(data)
    if pauses_ms is None:
        pauses_ms = [2 * SILENCE_MS] * (len(chunks) - 1) + [0]
    lines, buf, overflow, after_cr, after_gap = [], bytearray(), False, False, False
    typed, quiet = False, 0.0
    for chunk, pause in zip(chunks, pauses_ms):
        if chunk:
            typed = typed or bool(buf or overflow) and quiet > TYPED_GAP_MS
            quiet = 0.0
        for b in chunk:
            if b in (10, 13):
                if after_gap or (b == 10 and after_cr):
                    after_cr, after_gap = b == 13, False
                    continue
                lines.append((bytes(buf), overflow))
                buf, overflow, after_cr, typed = bytearray(), False, b == 13, False
                continue
            after_cr = after_gap = False
            if len(buf) < LINE_MAX:
                buf.append(b)
            else:
                overflow = True
        quiet += pause
        if (buf or overflow) and not typed and quiet >= (SILENCE1_MS if len(buf) == 1 else SILENCE_MS):
            lines.append((bytes(buf), overflow))
            buf, overflow, after_cr, after_gap = bytearray(), False, False, True
    return lines


def crc8(data: bytes) -> int:
    """CRC-8, polynomial x^8 + x^2 + x + 1 (0x07), initial value 0, no reflection."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def id_byte(request: bytes) -> int:
    """What the check's II names: the value of the digits right after the request's
    '!' modulo 256, 0 when there are none (for a valid id, the id modulo 256)."""
    m = re.match(rb"[ ,\t]*!(\d*)", request)
    return int(m.group(1)) % 256 if m and m.group(1) else 0


def seal(request: bytes) -> bytes:
    """A request with its check field: ``request + b" *LLCCII"`` (no line end)."""
    covered = request + b" "
    return covered + b"*%02x%02x%02x" % (len(covered), crc8(covered), id_byte(covered))


def seal_lines(data: bytes) -> bytes:
    """data with every request line (one starting with '!') sealed, line ends kept."""
    parts = re.split(rb"(\r\n|\r|\n)", data)
    return b"".join(seal(p) if i % 2 == 0 and p.lstrip(SEPS).startswith(b"!") else p
                    for i, p in enumerate(parts))


def strip_check(line: bytes) -> bytes | None:
    """The request without its check field, or None if the field is missing or wrong
    (count, CRC, or the id byte II)."""
    m = re.fullmatch(rb"(.*)\*([0-9a-fA-F]{2})([0-9a-fA-F]{2})([0-9a-fA-F]{2})",
                     line.rstrip(SEPS), re.S)
    if not m:
        return None
    covered = m.group(1)
    if int(m.group(2), 16) != len(covered) or int(m.group(3), 16) != crc8(covered):
        return None
    if int(m.group(4), 16) != id_byte(covered):
        return None
    return covered


def _tokens(s: bytes) -> list[bytes]:
    return [t for t in re.split(rb"[ ,\t]+", s) if t]


def answer(line: bytes, overflow: bool, model: FakeModel) -> str:
    """The board's answer to one line, with us=/cyc= values as '*'."""
    scan = line.split(b"\0", 1)[0]  # C string functions stop at a NUL
    s = scan.lstrip(SEPS)
    is_request = s.startswith(b"!")
    code = 0
    if overflow:
        code = 1
    elif any((c < 0x20 and c != 9) or c > 0x7E for c in line):
        code = 6
    elif is_request:
        body = strip_check(line)
        if body is None:
            code = 9
        else:
            s = body.lstrip(SEPS)
    rid = None
    rest = s
    if is_request:
        m = re.match(rb"!(\d*)", s)
        digits = m.group(1)
        after = s[m.end():m.end() + 1]
        if 1 <= len(digits) <= 5 and int(digits) <= 65535 and (after == b"" or after in SEPS):
            rid = int(digits)
        rest = s[m.end():]

    def err(code: int) -> str:
        head = f"@{rid} err" if rid is not None else "#err"
        return f"{head} {code} {ERRORS[code]}"

    if code:
        return err(code)
    cmd = None
    if is_request:
        rest = rest.lstrip(SEPS)
        cmd = rest[:1]
        if rid is None or cmd not in (b"i", b"p", b"r") or rest[1:2] not in (b"",) + tuple(
                bytes([c]) for c in SEPS):
            return err(4)
        rest = rest[1:]
    elif not s:
        return err(7)
    toks = _tokens(rest)
    if cmd == b"i":
        return err(3) if toks else model.info(rid)
    values = []
    for t in toks:
        code, v = parse_int8(t) if cmd == b"r" else parse_decimal(t)
        if code:
            return err(code)
        values.append(v if cmd == b"r" else model.quantize(v, len(values) % model.n_in))
    if not values or len(values) > model.max_values or len(values) % model.n_in:
        return err(3)
    outs = []
    for i in range(0, len(values), model.n_in):
        y = model.invoke(values[i:i + model.n_in])
        if y is None:
            return err(8)
        outs += y
    if cmd is not None:
        text = f"@{rid} ok" + "".join(f" {o}" for o in outs)
        if model.classes:
            text += " class=" + ",".join(str(class_index(outs[i:i + model.n_out], model))
                                         for i in range(0, len(outs), model.n_out))
        text += " us=*"
        return text + (" cyc=*" if model.cycles else "")
    if model.classes:
        shown = ", ".join(class_answer(outs[i:i + model.n_out], model)
                          for i in range(0, len(outs), model.n_out))
        return (f"{model.input_label} " + " ".join(t.decode() for t in toks)
                + f" -> {model.output_label}: {shown} (* us)")
    shown = " ".join(display(o, model.output_scale_bits, model.output_zero_point) for o in outs)
    return (f"{model.input_label} " + " ".join(t.decode() for t in toks)
            + f" -> {model.output_label} {shown} (* us)")


def board_output(data, model: FakeModel) -> list[str]:
    """Every line the board prints for input data (see split_lines), banner first."""
    return [model.banner()] + [answer(line, ov, model) for line, ov in split_lines(data)]


_TIMING = [(re.compile(r" us=\d+"), " us=*"), (re.compile(r" cyc=\d+"), " cyc=*"),
           (re.compile(r" \(\d+ us\)$"), " (* us)")]


def normalize(text: str) -> str:
    for pattern, repl in _TIMING:
        text = pattern.sub(repl, text)
    return text
