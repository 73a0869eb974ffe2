"""Tiny pure helpers that render C fragments: checked identifiers, exact
integer and float32 literals, string literals and wrapped arrays.

Every function returns a string and has no side effects; the generators in
this package compute values and let Jinja templates place these fragments.
Literals are exact and valid for a 16-bit ``int`` (AVR): anything outside
int16 gets an ``L``/``UL`` suffix, so it is a ``long`` (32 bits) everywhere.
"""
from __future__ import annotations

import re
import struct
from typing import Iterable

from ..errors import ConvertError

# C99 and C++ keywords (and a few macros that act like them): never usable as names.
C_KEYWORDS = frozenset("""
    auto break case char const continue default do double else enum extern float for goto if
    inline int long register restrict return short signed sizeof static struct switch typedef
    union unsigned void volatile while _Bool _Complex _Imaginary
    alignas alignof and and_eq asm bitand bitor bool catch char16_t char32_t class compl
    constexpr const_cast decltype delete dynamic_cast explicit export false friend mutable
    namespace new noexcept not not_eq nullptr operator or or_eq private protected public
    reinterpret_cast static_assert static_cast template this thread_local throw true try
    typeid typename using virtual wchar_t xor xor_eq NULL
""".split())

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Integer C types the generators emit, with their ranges.
INT_RANGES = {
    "int8_t": (-2**7, 2**7 - 1),
    "uint8_t": (0, 2**8 - 1),
    "int16_t": (-2**15, 2**15 - 1),
    "uint16_t": (0, 2**16 - 1),
    "tinyml_int24_t": (-2**23, 2**23 - 1),
    "int32_t": (-2**31, 2**31 - 1),
    "uint32_t": (0, 2**32 - 1),
}

# How many array items go on one line, by element type (fixed, so output is stable).
ITEMS_PER_LINE = {"int8_t": 16, "uint8_t": 16, "int16_t": 12, "uint16_t": 12}
DEFAULT_ITEMS_PER_LINE = 6


def identifier(name: str) -> str:
    """Return ``name`` if it is a usable C/C++ identifier, else raise ConvertError.

    >>> identifier("tinyml_l0_weights")
    'tinyml_l0_weights'
    >>> identifier("2fast")
    Traceback (most recent call last):
    ...
    ipytinyml.errors.ConvertError: '2fast' is not a C identifier (letters, digits and _, not starting with a digit)
    >>> identifier("class")
    Traceback (most recent call last):
    ...
    ipytinyml.errors.ConvertError: 'class' is a C/C++ keyword and cannot name a symbol
    """
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ConvertError(f"{name!r} is not a C identifier (letters, digits and _, "
                           "not starting with a digit)")
    if name in C_KEYWORDS:
        raise ConvertError(f"{name!r} is a C/C++ keyword and cannot name a symbol")
    return name


def fits(value: int, ctype: str) -> bool:
    """True if the integer ``value`` is representable in ``ctype``.

    >>> fits(127, "int8_t"), fits(128, "int8_t"), fits(-1, "uint16_t")
    (True, False, False)
    """
    lo, hi = INT_RANGES[ctype]
    return lo <= int(value) <= hi


def int_literal(value: int, ctype: str = "int32_t") -> str:
    """An exact C literal for ``value`` as a ``ctype``, correct with 16-bit ``int``.

    Values outside int16 get ``L`` (signed) or ``UL`` (unsigned); negative values
    are parenthesised, and INT32_MIN is spelled so that no literal overflows.

    >>> int_literal(5), int_literal(-5), int_literal(40000), int_literal(-40000)
    ('5', '(-5)', '40000L', '(-40000L)')
    >>> int_literal(2**31 - 1), int_literal(-2**31)
    ('2147483647L', '(-2147483647L - 1)')
    >>> int_literal(2087729786, "uint32_t"), int_literal(7, "uint16_t")
    ('2087729786UL', '7U')
    >>> int_literal(300, "int8_t")
    Traceback (most recent call last):
    ...
    ValueError: 300 does not fit in int8_t
    """
    value = int(value)
    if ctype not in INT_RANGES:
        raise ValueError(f"unknown C integer type {ctype!r}")
    if not fits(value, ctype):
        raise ValueError(f"{value} does not fit in {ctype}")
    if ctype.startswith("u"):
        return f"{value}U" if value <= 0xFFFF else f"{value}UL"
    if value == -2**31:
        return "(-2147483647L - 1)"
    text = str(abs(value)) + ("" if -2**15 <= value <= 2**15 - 1 else "L")
    return f"(-{text})" if value < 0 else text


def float32_bits(value: float) -> str:
    """The IEEE-754 bits of ``value`` rounded to float32, as an exact hex literal.

    >>> float32_bits(1.0), float32_bits(-2.5)
    ('0x3f800000UL', '0xc0200000UL')
    >>> float32_bits(0.0246115)
    '0x3cc99e0eUL'
    """
    (bits,) = struct.unpack("<I", struct.pack("<f", float(value)))
    return f"0x{bits:08x}UL"


def string_literal(text: str) -> str:
    """A C string literal for ``text``: printable ASCII kept, everything else escaped.

    Non-ASCII characters become the octal escapes of their UTF-8 bytes (always
    three digits, so a following digit is never swallowed).

    >>> print(string_literal('mpg "city"'))
    "mpg \\"city\\""
    >>> print(string_literal("km/h\\n°"))
    "km/h\\n\\302\\260"
    """
    out = []
    for byte in str(text).encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif 0x20 <= byte < 0x7F and ch != "?":  # '?' avoids trigraphs
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def int_array(values: Iterable[int], ctype: str, *, indent: str = "    ",
              per_line: int | None = None) -> str:
    """The body of an integer array initializer, wrapped at a fixed item count.

    Items are right-aligned to the widest literal, so columns line up.

    >>> print(int_array([1, -2, 300, 4], "int16_t", per_line=3))
           1, (-2),  300,
           4
    >>> int_array([], "int8_t")
    ''
    """
    literals = [int_literal(v, ctype) for v in values]
    if not literals:
        return ""
    per_line = per_line or ITEMS_PER_LINE.get(ctype, DEFAULT_ITEMS_PER_LINE)
    width = max(len(s) for s in literals)
    lines = []
    for start in range(0, len(literals), per_line):
        chunk = literals[start:start + per_line]
        lines.append(indent + ", ".join(s.rjust(width) for s in chunk))
    return ",\n".join(lines)


def _short(x: float) -> str:
    """The shortest %g text that reads back as the float32 x (for comments)."""
    for digits in range(1, 10):
        text = f"{x:.{digits}g}"
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == x:
            return text
    return f"{x:.9g}"


def stage_table(mean: Iterable[float], div: Iterable[float], *, indent: str = "    ") -> str:
    """The rows of ``TINYML_INPUT_STAGE_BITS``: ``{mean bits, div bits}`` per feature,
    exact float32 bits, each row commented with its values, continued as one macro.

    >>> print(stage_table([0.0, 97.5], [0.0246, 1.5]))
        {0x00000000UL, 0x3cc985f0UL}, /* feature 0: mean 0, div 0.0246 */ \\
        {0x42c30000UL, 0x3fc00000UL}  /* feature 1: mean 97.5, div 1.5 */
    """
    rows = list(zip(mean, div))
    lines = []
    for k, (m, d) in enumerate(rows):
        last = k == len(rows) - 1
        m32, d32 = struct.unpack("<2f", struct.pack("<2f", float(m), float(d)))
        row = f"{indent}{{{float32_bits(m32)}, {float32_bits(d32)}}}" + (" " if last else ",")
        note = f" /* feature {k}: mean {_short(m32)}, div {_short(d32)} */"
        lines.append(row + note + ("" if last else " \\"))
    return "\n".join(lines)


def struct_init(fields: Iterable[str]) -> str:
    """A brace initializer from already-rendered field literals.

    >>> struct_init(["1", "(-2)", "3UL"])
    '{1, (-2), 3UL}'
    """
    return "{" + ", ".join(fields) + "}"
