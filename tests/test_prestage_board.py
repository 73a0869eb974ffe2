"""The input pre-stage on the board side (firmware_templates/common/tinyml_protocol.cpp).

Real parts: the very protocol code that goes into every sketch, built with
host g++ (-Wall -Wextra -Werror) and with avr-gcc for the Uno and run on the
virtual Uno (simavr). Expected values come from numpy float32 arithmetic and
from ``ipytinyml.prestage.InputStage.quantize`` (the reference), decimals are
read by the spec model's exact parser (tests/fake_model/ref.py), never by the
code under test.

- the float32 subtraction alone (white box, tests/fake_model/sub_driver.cpp)
  against numpy over seeded random pairs and constructed edge cases;
- the whole pre-stage through the protocol: a 5-feature fake model whose
  int8 output is its int8 input (FAKE_STEP 0), so every feature's int8 is
  observed directly, for edge values, .5 ties of the int8 grid and their
  neighbours, values far outside the range, zeros, tiny values, long decimals;
  on a host build and on the virtual Uno;
- the info answer's imean/idiv through Link (BoardInfo.input_mean/input_div);
- a generated native sketch with a stage: the tables, warning-free builds,
  and on the virtual Uno 'p' answers equal to 'r' answers for the int8 the
  reference computes.
"""
from __future__ import annotations

import random
import shutil
import struct
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from fake_model import avr_uno, board, ref
from fake_model.ref import FakeModel
from ipytinyml.prestage import InputStage, f32_bits, f32_from_bits

ROOT = Path(__file__).resolve().parents[1]
COMMON = ROOT / "firmware_templates" / "common"
FAKE = ROOT / "tests" / "fake_model"

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs host g++")

FLT_MAX = f32_from_bits(0x7F7FFFFF)
TINY = 2.0 ** -126


def _f32(x) -> float:
    return float(np.float32(x))


def _bits_to_f(bits: int) -> float:
    return f32_from_bits(bits)


# ------------------------------------------------------- the subtraction

def _sub_cases(rng: random.Random) -> list[tuple[int, int]]:
    """(x bits, m bits): x normal or zero (what the parser makes), m any finite float32."""
    cases: list[tuple[int, int]] = []

    def normal(lo=1, hi=254):
        return (rng.randrange(lo, hi + 1) << 23) | rng.randrange(1 << 23) | rng.choice([0, 1 << 31])

    for _ in range(20000):  # anywhere
        cases.append((normal(), normal(0, 254)))
    for _ in range(20000):  # exponents close: alignment by 0..30 bits, both signs
        x = normal()
        e = (x >> 23) & 0xFF
        em = min(254, max(1, e + rng.randint(-30, 30)))
        cases.append((x, (em << 23) | rng.randrange(1 << 23) | rng.choice([0, 1 << 31])))
    for _ in range(10000):  # cancellation: m within a few ulps of +-x
        x = normal(2, 253)
        m = (x + rng.randint(-40, 40)) ^ rng.choice([0, 0, 0, 1 << 31])
        if ((m >> 23) & 0xFF) not in (0, 255):
            cases.append((x, m))
    for _ in range(5000):  # round-to-even ties: m just below / at / above half an ulp of x
        x = normal(30, 200)
        e = ((x >> 23) & 0xFF) - 127
        for k in (-25, -24, -23):
            half = _f32(2.0 ** (e + k))
            for m in (half, _f32(half * 1.5), _f32(half * 0.75), _f32(3 * half)):
                cases.append((x, f32_bits(m) ^ rng.choice([0, 1 << 31])))
    for _ in range(3000):  # huge gaps, subnormal and zero means
        x = normal()
        cases += [(x, rng.randrange(1, 1 << 23) | rng.choice([0, 1 << 31])), (x, 0), (x, 1 << 31),
                  (x, normal(1, 30)), (normal(1, 30), x)]
    big = [0x7F7FFFFF, 0x7F7FFFFE, 0x7F000000, 0x7EFFFFFF, 0x7F400000]
    for a in big:  # near FLT_MAX: overflow to infinity, or not
        for b in big + [0x3F800000, 0x73800000, 0x73000000, 0x72FFFFFF]:
            for sa in (0, 1 << 31):
                for sb in (0, 1 << 31):
                    cases.append((a | sa, b | sb))
    small = [0x00800000, 0x00800001, 0x00C00000, 0x01000000, 0x00FFFFFF, 0x01800000]
    for a in small:  # results at and below 2^-126 (flushed to zero)
        for b in small + [0x00400000, 0x00000001, 0x007FFFFF]:
            for sb in (0, 1 << 31):
                cases.append((a, b | sb))
    for x in (0x3F800000, 0xBF800000, 0x4B800000, 0x00800000, 0x7F7FFFFF):  # equal values, zeros
        cases += [(x, x), (x, x ^ (1 << 31)), (0, x), (1 << 31, x), (0, 0), (1 << 31, 1 << 31)]
    return cases


def _expected_sub(x_bits: int, m_bits: int) -> str:
    """numpy's float32 x - m as the board holds it: bits, "inf"/"-inf", or "zero"."""
    x = np.array([x_bits], dtype=np.uint32).view(np.float32)
    m = np.array([m_bits], dtype=np.uint32).view(np.float32)
    with np.errstate(over="ignore"):
        d = (x - m)[0]
    if np.isinf(d):
        return "-inf" if d < 0 else "inf"
    if abs(float(d)) < TINY:
        return "zero"  # subnormal or zero: the board flushes to zero (sign irrelevant)
    return f"{int(np.array([d], dtype=np.float32).view(np.uint32)[0]):08x}"


def test_float32_subtraction_matches_numpy(tmp_path):
    """sub_f32() (integers only) == numpy float32 subtraction, round to nearest even,
    over 60,000+ seeded pairs: random, close exponents, cancellation, ties, huge gaps,
    subnormal and zero means, near FLT_MAX (overflow), subnormal results, equal values."""
    exe = board.build_parse_driver(FakeModel(), tmp_path / "sub_driver", driver="sub_driver.cpp")
    cases = _sub_cases(random.Random(2026))
    data = "".join(f"{x:08x} {m:08x}\n" for x, m in cases).encode()
    out = subprocess.run([str(exe)], input=data, capture_output=True, check=True).stdout.decode()
    got = out.split()
    assert len(got) == len(cases)
    kinds = {"inf": 0, "zero": 0, "bits": 0}
    bad = []
    for (x, m), g in zip(cases, got):
        want = _expected_sub(x, m)
        if want == "zero":
            ok = g in ("00000000", "80000000")
            kinds["zero"] += 1
        else:
            ok = g == want
            kinds["inf" if "inf" in want else "bits"] += 1
        if not ok:
            bad.append((f"{x:08x}", f"{m:08x}", g, want))
    assert not bad, f"{len(bad)} wrong, e.g. {bad[:5]}"
    assert kinds["inf"] >= 20 and kinds["zero"] >= 100  # the edge cases were really reached
