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


# ------------------------------------------ the whole pre-stage, observed

SCALE = _f32(1 / 25.5)
STAGE = InputStage.standardize(
    mean=[104.47, -0.00123, 3.2e6, -7.5e20, 1e-30],      # magnitudes far apart
    std=[38.49, 0.000417, 1.1e6, 3e19, 1e-28], scale=SCALE, zero_point=-5)
ECHO = FakeModel(n_in=5, n_out=5, step=0, input_scale_bits=f32_bits(SCALE), input_zero_point=-5,
                 mean_bits=tuple(f32_bits(v) for v in STAGE.mean),
                 div_bits=tuple(f32_bits(v) for v in STAGE.div), fail_input=-77)


def _ulps(x: float, k: int) -> list[float]:
    """x and its float32 neighbours up to k ulps away (finite ones)."""
    bits = f32_bits(x)
    out = []
    for d in range(-k, k + 1):
        b = bits + d if x >= 0 else bits - d
        if 0 <= b < 0x7F800000 or 0x80000000 <= b < 0xFF800000:
            out.append(_bits_to_f(b))
    return out


def _forms(x: float) -> list[str]:
    f = np.float32(x)
    return sorted({np.format_float_positional(f, unique=True, trim="-"),
                   np.format_float_scientific(f, unique=True, trim="-"), f"{x:.9g}"}, key=len)


def _feature_values(k: int, stage: InputStage = STAGE) -> tuple[list[str], int]:
    """Decimal tokens for feature k: the grid's .5 ties and their neighbours, the ends of
    the int8 range, far outside it, zeros, tiny values, long decimals; and how many of the
    candidates land exactly on a tie (fl32(fl32(x - mean) / div) == n + 0.5)."""
    mean, div = np.float32(stage.mean[k]), np.float32(stage.div[k])
    xs, exact_ties = [], 0
    with np.errstate(over="ignore"):
        for n in range(-135, 135):
            d = np.float32((n + 0.5) * float(div))
            for x in _ulps(_f32(mean + d), 3):
                t = np.float32(np.float32(np.float32(x) - mean) / div)
                if float(t) == n + 0.5:
                    exact_ties += 1
                xs.append(x)
    for n in (0, 1, -1, 127, 128, 129, 130, -127, -128, -129, -130, 3 * 25.5, -3 * 25.5, 1e3, -1e6):
        xs += _ulps(_f32(float(mean) + n * float(div)), 1)  # the range's ends (and +-3 std)
    tokens = [t for x in xs for t in _forms(x)[:2]]
    tokens += ["1e30", "-1e30", "3.4e38", "-3.4e38", "3.4028235e38", "-3.4028235e38", "1e-30",
               "-1e-30", "0", "-0", "0.0", "-0e5", "+0", "1e-38", "1.1754942e-38", "1.17549435e-38",
               "-1.17549435e-38", "1e-45", "-1e-40", "7e-31", "-7e-31"]
    for x in (float(mean), float(mean) + 0.5 * float(div), float(mean) - 127.5 * float(div)):
        tokens.append(ref.scientific(Fraction(_f32(x)), 25))               # 25 significant digits
        tokens.append(ref.scientific(Fraction(_f32(x)), 21) + "00000000001")  # a sticky 21st digit
    return tokens, exact_ties


def _rows(stage: InputStage = STAGE) -> tuple[list[list[str]], int]:
    """Rows of tokens: each feature's edge values with short fillers elsewhere, plus
    random mixed rows; and the number of exact ties reached."""
    rng = random.Random(5)
    rows, ties = [], 0
    per_feature = []
    n = stage.n_inputs
    for k in range(n):
        tokens, exact = _feature_values(k, stage)
        per_feature.append(tokens)
        ties += exact
        for t in tokens:
            row = ["0"] * n
            row[k] = t
            rows.append(row)
    # random rows fit a sealed request line with any id: "!65535 p " + row + " *LLCCII"
    budget = ref.LINE_MAX - len("!65535 p ") - len(" *LLCCII")
    mixed = []
    while len(mixed) < 600:
        row = [rng.choice([t for t in per_feature[k] if len(t) <= 12]) for k in range(n)]
        if len(" ".join(row)) <= budget:
            mixed.append(row)
    return rows + mixed, ties


def _expect(row: list[str], stage: InputStage = STAGE) -> list[int] | None:
    """The reference int8 row for a row of tokens (None: a token the board refuses)."""
    xs = []
    for tok in row:
        code, v = ref.parse_decimal(tok.encode())  # exact decimal -> float32, from the spec model
        if code:
            return None
        xs.append(v)
    return [int(q) for q in stage.quantize(xs)[0]]


def _check_answers(rows, answers) -> int:
    """Compare 'p' answers with the reference; returns how many rows were checked."""
    assert len(answers) == len(rows)
    checked = 0
    for i, (row, got) in enumerate(zip(rows, answers)):
        want = _expect(row)
        if want is None:
            assert got == f"@{i + 1} err 5 out of range", (row, got)
            continue
        if want[0] == ECHO.fail_input:
            assert got == f"@{i + 1} err 8 model failed", (row, got)
            continue
        fields = got.split()
        assert fields[:2] == [f"@{i + 1}", "ok"], (row, got)
        assert [int(v) for v in fields[2:2 + ECHO.n_out]] == want, (row, got, want)
        checked += 1
    return checked


@pytest.fixture(scope="module")
def echo_exe(tmp_path_factory):
    return board.build(ECHO, tmp_path_factory.mktemp("prestage") / "board_echo")


def test_stage_model_is_what_the_test_means():
    """The constants really are far apart, and the echo model hands back its int8 input."""
    assert abs(max(STAGE.mean, key=abs) / min(STAGE.mean, key=abs)) > 1e40
    assert ECHO.invoke([1, -2, 3, 127, -128]) == [1, -2, 3, 127, -128]


def test_prestage_through_the_protocol_on_host(echo_exe):
    """'p' requests: every feature's int8 == InputStage.quantize, on a host build."""
    rows, ties = _rows()
    assert ties >= 100  # the tie construction really lands on n + 0.5 often
    lines = [ref.seal(f"!{i + 1} p {' '.join(row)}".encode()).decode() for i, row in enumerate(rows)]
    assert max(len(line) for line in lines) <= 79
    out = board.run_stdio(echo_exe, ("\n".join(lines) + "\n").encode()).decode().split("\r\n")
    assert out[0] == ECHO.banner()
    checked = _check_answers(rows, out[1:1 + len(rows)])
    assert checked > 0.9 * len(rows)


def test_human_lines_use_the_prestage(echo_exe):
    """Human lines (any separators, several rows) go through the same pre-stage."""
    rng = random.Random(9)
    rows, _ = _rows()
    lines = []
    for _ in range(300):
        k = rng.choice([1, 1, 2, 3])
        toks = [t for r in rng.sample(rows, k) for t in r]
        line = rng.choice([" ", ", ", "\t"]).join(toks)
        if len(line) <= 79:
            lines.append(line.encode())
    data = b"\r\n".join(lines) + b"\r\n"
    got = [ref.normalize(x) for x in board.run_stdio(echo_exe, data).decode()[:-2].split("\r\n")]
    want = ref.board_output(data, ECHO)  # the spec model quantizes with InputStage.quantize
    assert got == [ref.normalize(w) for w in want]
    assert sum("->" in g for g in got) > 200


def test_info_reports_the_stage_exactly(echo_exe):
    """'!1 i' carries imean/idiv (float32 bits, hex); Link parses them into BoardInfo."""
    from ipytinyml.link import Link

    out = board.run_stdio(echo_exe, ref.seal(b"!1 i") + b"\n").decode().split("\r\n")
    fields = dict(f.split("=", 1) for f in out[1].split() if "=" in f)
    assert fields["imean"] == ",".join(f"0x{f32_bits(v):08x}" for v in STAGE.mean)
    assert fields["idiv"] == ",".join(f"0x{f32_bits(v):08x}" for v in STAGE.div)
    assert fields["iscale"] == f"0x{f32_bits(SCALE):08x}" and fields["izp"] == "-5"
    with board.PtyBoard(echo_exe) as b, Link(b.path, timeout=5) as lk:
        info = lk.last_info
        assert info.input_mean == STAGE.mean and info.input_div == STAGE.div
        assert (info.n_in, info.input_zero_point, info.input_scale) == (5, -5, SCALE)
        # Link's numpy-free host twin of the stage agrees with the reference and the board
        rows = [[float(np.float32(x)) for x in r] for r in
                np.random.default_rng(3).normal(STAGE.mean, np.array(STAGE.div) * 60, (40, 5))]
        host = [[info.quantize_input(x, k) for k, x in enumerate(r)] for r in rows]
        assert host == STAGE.quantize(rows).tolist()
        board_q = [row for row in lk.predict(rows).raw]
        assert board_q == [h for h in host]


# ------------------------------------------------------ the virtual Uno

needs_avr = pytest.mark.skipif(not avr_uno.available(), reason="needs avr-gcc and arduino-core-avr")


def _uno_sketch(folder: Path, model: FakeModel) -> Path:
    """The native sketch template + protocol + the fake model configured for `model`."""
    import jinja2

    folder.mkdir(parents=True)
    for f in ("tinyml_protocol.h", "tinyml_protocol.cpp", "tinyml_port.h"):
        shutil.copy(COMMON / f, folder)
    shutil.copy(FAKE / "tinyml_model.cpp", folder)
    (folder / "tinyml_model.h").write_text(model.header() + (FAKE / "tinyml_model.h").read_text())
    template = (ROOT / "firmware_templates" / "native" / "sketch.ino.j2").read_text()
    (folder / f"{folder.name}.ino").write_text(jinja2.Environment(undefined=jinja2.StrictUndefined)
                                               .from_string(template)
                                               .render(board_name="uno", sketch_name=folder.name,
                                                       model_hash=model.model_hash))
    return folder


@pytest.fixture(scope="module")
def sim_harness(tmp_path_factory):
    from ipytinyml.toolchain.sim import harness_path, missing_sim_packages

    if missing_sim_packages() or not avr_uno.available():
        pytest.skip(f"needs simavr and avr-gcc: {missing_sim_packages()}")
    return harness_path(cache=tmp_path_factory.mktemp("harness"))


def _serve(elf: Path, harness: Path, lines: list[bytes]) -> list[str]:
    """Send lines one at a time (an Uno's RX buffer is 64 bytes) to the ELF on the
    virtual Uno, requests sealed with their check; return the banner and one answer per line."""
    import serial

    from ipytinyml.toolchain.sim import VirtualBoard

    with VirtualBoard(elf, harness=harness, speed=0) as vb, \
            serial.Serial(vb.port, 115200, timeout=10) as ser:
        got = [ser.readline().decode("ascii").rstrip("\r\n")]
        for line in lines:
            ser.write(ref.seal_lines(line) + b"\n")
            got.append(ser.readline().decode("ascii").rstrip("\r\n"))
    return got


@needs_avr
def test_prestage_on_the_virtual_uno(tmp_path, sim_harness):
    """The same rows on the Uno build (avr-gcc, 16-bit int, -Wall -Wextra warning-free)
    in simavr: every feature's int8 == InputStage.quantize."""
    sketch = _uno_sketch(tmp_path / "tinyml_stage", ECHO)
    core = avr_uno.build_core(tmp_path / "core")
    elf, warnings = avr_uno.build_sketch(sketch, tmp_path / "build", core)
    assert warnings.strip() == "", warnings
    rows, _ = _rows()
    rng = random.Random(1)
    # every edge row, and a sample of the tie rows (simavr runs ~2 ms of AVR time per row)
    picked = [r for r in rows if not all(t == "0" for t in r)]
    picked = [r for r in picked if any(len(t) > 12 or "e3" in t for t in r)] + rng.sample(picked, 1500)
    lines = [f"!{i + 1} p {' '.join(row)}".encode() for i, row in enumerate(picked)]
    lines.append(b"!9999 i")
    got = _serve(elf, sim_harness, lines)
    assert got[0] == ECHO.banner().replace("board=host", "board=uno")
    assert _check_answers(picked, got[1:-1]) > 0.9 * len(picked)
    info = got[-1]
    assert f"imean={','.join(f'0x{f32_bits(v):08x}' for v in STAGE.mean)} " in info + " "
    assert info.endswith(f"idiv={','.join(f'0x{f32_bits(v):08x}' for v in STAGE.div)}")


# ------------------------------------------- a generated sketch with a stage

def _generated(tmp: Path):
    """A generated native sketch (3-input synthetic plan) with a standardizing stage."""
    from test_codegen_native import SYNTHETIC, synthetic_plan

    from ipytinyml.codegen.sketch import render_native_sketch

    plan = synthetic_plan(**SYNTHETIC["3-8-4 per-channel zero points"])
    stage = InputStage.standardize([104.47, -3.2e-3, 5e5], [38.49, 1e-3, 2e4],
                                   plan.input.scale, plan.input.zero_point)
    sketch = render_native_sketch(plan, tmp, sketch_name="tinyml_gen", board_name="uno",
                                  model_hash="0123456789ab", input_label="x", output_label="y",
                                  stage=stage)
    return plan, stage, sketch


def _generated_rows(stage: InputStage, limit: int | None = None) -> list[list[str]]:
    rows, _ = _rows(stage)
    rows = [r for r in rows if _expect(r, stage) is not None]
    return rows if limit is None else random.Random(4).sample(rows, limit)


def _check_generated(plan, stage, rows, answers) -> None:
    from ipytinyml.quant import evaluate_plan

    assert len(answers) == len(rows)
    q = stage.quantize([[ref.parse_decimal(t.encode())[1] for t in r] for r in rows])
    want = evaluate_plan(plan, q).tolist()  # the int8 chain's numpy reference
    for i, (row, got, w) in enumerate(zip(rows, answers, want)):
        fields = got.split()
        assert fields[:2] == [f"@{i + 1}", "ok"], (row, got)
        assert [int(v) for v in fields[2:2 + plan.n_outputs]] == w, (row, got, w)


def test_generated_native_sketch_carries_the_stage(tmp_path):
    """render_native_sketch(stage=...) writes the exact bits; stage=None is the identity;
    a stage that does not fit the plan is refused (one line) and nothing is written."""
    from ipytinyml.codegen.sketch import render_native_sketch
    from ipytinyml.errors import ConvertError

    plan, stage, sketch = _generated(tmp_path / "a")
    header = (sketch / "tinyml_model.h").read_text()
    rows = [tuple(int(b, 16) for b in pair)
            for pair in __import__("re").findall(r"\{(0x[0-9a-f]{8})UL, (0x[0-9a-f]{8})UL\}", header)]
    assert rows == [(f32_bits(m), f32_bits(d)) for m, d in zip(stage.mean, stage.div)]
    kw = dict(sketch_name="s", board_name="uno", model_hash="ab", input_label="x", output_label="y")
    ident = render_native_sketch(plan, tmp_path / "b", **kw)
    assert f"{{0x00000000UL, 0x{f32_bits(plan.input.scale):08x}UL}}" in (ident / "tinyml_model.h").read_text()
    for wrong in (InputStage.identity(plan.input.scale, plan.input.zero_point, 2),
                  InputStage.identity(plan.input.scale, plan.input.zero_point + 1, 3), "stage"):
        with pytest.raises(ConvertError) as info:
            render_native_sketch(plan, tmp_path / "c", stage=wrong, **kw)
        assert "pre-stage" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "c").exists()


def test_generated_native_sketch_on_host(tmp_path):
    """The generated sketch's files with the protocol and host_board.cpp (g++ -Wall -Wextra
    -Werror): 'p' answers == evaluate_plan(InputStage.quantize(x)) for edge rows."""
    plan, stage, sketch = _generated(tmp_path)
    exe = tmp_path / "host_gen"
    cmd = ["g++", "-std=c++11", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{sketch}", f"-I{COMMON}",
           str(sketch / "tinyml_protocol.cpp"), str(sketch / "tinyml_model.cpp"),
           str(COMMON / "host_port.cpp"), str(FAKE / "host_board.cpp"), "-o", str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = _generated_rows(stage)
    lines = [f"!{i + 1} p {' '.join(row)}" for i, row in enumerate(rows)]
    out = board.run_stdio(exe, ref.seal_lines(("\n".join(lines) + "\n").encode())).decode().split("\r\n")
    _check_generated(plan, stage, rows, out[1:1 + len(rows)])


@needs_avr
def test_generated_native_sketch_on_the_virtual_uno(tmp_path, sim_harness):
    """The same generated sketch for the Uno (warning-free) in simavr."""
    plan, stage, sketch = _generated(tmp_path / "fw")
    core = avr_uno.build_core(tmp_path / "core")
    elf, warnings = avr_uno.build_sketch(sketch, tmp_path / "build", core)
    assert warnings.strip() == "", warnings
    rows = _generated_rows(stage, limit=600)
    got = _serve(elf, sim_harness, [f"!{i + 1} p {' '.join(r)}".encode() for i, r in enumerate(rows)])
    assert got[0].startswith("#tinyml ready proto=2 runtime=native board=uno")
    _check_generated(plan, stage, rows, got[1:])
    assert len(rows) == 600


def test_a_stage_the_plan_carries_is_used():
    """A plan that carries its stage (``plan.stage``) needs no stage= argument; a different
    explicit one is refused."""
    from types import SimpleNamespace

    from ipytinyml.codegen import input_stage_for
    from ipytinyml.errors import ConvertError

    quant = SimpleNamespace(scale=_f32(0.02), zero_point=-3)
    own = InputStage.standardize([1.5, -2.0], [0.5, 3.0], quant.scale, -3)
    plan = SimpleNamespace(input=quant, n_inputs=2, stage=own)
    assert input_stage_for(plan) is own and input_stage_for(plan, own) is own
    with pytest.raises(ConvertError, match="differs"):
        input_stage_for(plan, InputStage.identity(quant.scale, -3, 2))
    bare = SimpleNamespace(input=quant, n_inputs=2)  # a plan from before plan.stage
    assert input_stage_for(bare) == InputStage.identity(quant.scale, -3, 2)
