"""ipytinyml.codegen.cgen: the C fragment helpers, checked by the compilers themselves.

Literals are compiled with host gcc and with avr-gcc (16-bit ``int``), and a
``_Static_assert`` on each proves the compiler reads back exactly the value
we meant, with the type width we meant.
"""
from __future__ import annotations

import doctest
import shutil
import struct
import subprocess

import numpy as np
import pytest

from ipytinyml.codegen import cgen
from ipytinyml.errors import ConvertError


def test_doctests():
    result = doctest.testmod(cgen)
    assert result.attempted > 10 and result.failed == 0


@pytest.mark.parametrize("name", ["tinyml", "_x", "a1_b2", "T"])
def test_identifier_accepts(name):
    assert cgen.identifier(name) == name


@pytest.mark.parametrize("name", ["", "1a", "a-b", "a b", "int", "static", "template", "NULL", "é", None])
def test_identifier_rejects(name):
    with pytest.raises(ConvertError):
        cgen.identifier(name)


EDGES = {
    "int8_t": [-128, -1, 0, 127],
    "uint8_t": [0, 255],
    "int16_t": [-32768, -32767, 32767],
    "uint16_t": [0, 65535],
    "int32_t": [-2**31, -2**31 + 1, -32769, -32768, 32767, 32768, 2**31 - 1],
    "uint32_t": [0, 65535, 65536, 2**31, 2**32 - 1],
}


def _assertions() -> str:
    lines = ["#include <stdint.h>"]
    for i, (ctype, values) in enumerate(EDGES.items()):
        for j, v in enumerate(values):
            lit = cgen.int_literal(v, ctype)
            if v < 0:  # negative in the literal's own type (no unsigned wrap-around)
                lines.append(f"_Static_assert(({lit}) < 0, \"sign of {v}\");")
            # and the value survives the conversion to its C type
            hi, lo = v >> 16, v & 0xFFFF  # rebuild the value from two 16-bit halves
            lines.append(f"_Static_assert(({ctype})({lit}) == ({ctype})(({hi}LL * 65536LL) + {lo}LL), "
                         f"\"{ctype} {v}\");")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("compiler, flags", [
    ("gcc", ["-std=c11"]),
    ("avr-gcc", ["-std=gnu11", "-mmcu=atmega328p"]),
])
def test_literals_are_exact_for_the_compiler(compiler, flags, tmp_path):
    if not shutil.which(compiler):
        pytest.skip(f"{compiler} not installed")
    src = tmp_path / "literals.c"
    src.write_text(_assertions())
    result = subprocess.run([compiler, *flags, "-Wall", "-Wextra", "-Werror", "-c", str(src), "-o",
                             str(tmp_path / "literals.o")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_int_literal_out_of_range():
    for ctype, (lo, hi) in cgen.INT_RANGES.items():
        for bad in (lo - 1, hi + 1):
            with pytest.raises(ValueError):
                cgen.int_literal(bad, ctype)
    with pytest.raises(ValueError):
        cgen.int_literal(1, "long double")


def test_int_literal_accepts_numpy_integers():
    assert cgen.int_literal(np.int8(-5), "int8_t") == "(-5)"
    assert cgen.int_literal(np.uint32(2**32 - 1), "uint32_t") == "4294967295UL"


@pytest.mark.parametrize("value", [0.0, -0.0, 1e-45, 3.4028234e38, 0.15808391571044922, 0.88235294818878])
def test_float32_bits_round_trip(value):
    bits = int(cgen.float32_bits(value)[2:-2], 16)
    back = struct.unpack("<f", struct.pack("<I", bits))[0]
    assert back == np.float32(value) and np.signbit(back) == np.signbit(value)


def test_string_literal_compiles_to_the_same_bytes(tmp_path):
    if not shutil.which("gcc"):
        pytest.skip("gcc not installed")
    text = 'mpg "city"\\ 100% ??= km/h\n\t°C'
    src = tmp_path / "s.c"
    src.write_text("#include <stdio.h>\nint main(void) { fputs(" + cgen.string_literal(text)
                   + ", stdout); return 0; }\n")
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-trigraphs", str(src), "-o",
                    str(tmp_path / "s")], check=True)
    out = subprocess.run([str(tmp_path / "s")], capture_output=True, check=True).stdout
    assert out == text.encode("utf-8")


def test_int_array_wraps_at_a_fixed_width():
    body = cgen.int_array(range(-20, 20), "int8_t")
    lines = body.split("\n")
    assert len(lines) == 3 and all(line.startswith("    ") for line in lines)
    assert [len(line.split(",")) - (i < 2) for i, line in enumerate(lines)] == [16, 16, 8]
    assert len({len(line) for line in lines[:2]}) == 1  # aligned columns
    assert cgen.int_array([2**31 - 1], "int32_t") == "    2147483647L"
