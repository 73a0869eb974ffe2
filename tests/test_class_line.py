"""A classifier's human line on the board, "origin: Japan (0.82)" (docs/protocol.md).

Real parts: the class rule derived by ipytinyml/codegen/classes.py from the notebook's
``metrics.top_class``; real trained and converted classifiers (tests/activation_models.py:
a 7 -> 32 -> 3 softmax and a 7 -> 16 -> 1 sigmoid) rendered by the native and TFLM
templates; the generated native model and the shared protocol built with host g++ into a
board that answers typed lines, and compiled warning-free by avr-g++ (the Uno's core
recipe) and arm-none-eabi-g++. The same models run on the virtual Uno through
``tm.flash`` in tests/test_classification.py (AutoMPG origin, softmax and sigmoid).
"""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from ipytinyml.codegen import classes as C
from ipytinyml.codegen.sketch import render_native_sketch
from ipytinyml.errors import ConvertError
from ipytinyml.metrics import top_class
from ipytinyml.quant import TensorQuant, dequantize, evaluate_plan, plan_from_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
COMMON = ROOT / "firmware_templates" / "common"
sys.path.insert(0, str(HERE))
import activation_models as AM  # noqa: E402
from fake_model import avr_uno  # noqa: E402
from fake_model.ref import two_decimals  # noqa: E402

WARNINGS = ["-Wall", "-Wextra", "-Werror"]
CLASSES = {"softmax": ("Europe", "Japan", "USA"), "sigmoid_out": ("no", "yes")}


def _f32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


# ------------------------------------------------------------------- the rule

@pytest.mark.parametrize("scale, zp", [
    (1 / 256, -128),            # TFLite's LOGISTIC output: q = 0 is exactly 0.5
    (1 / 255, -128),            # 0.5 falls between two codes
    (1 / 200, -20),
    (1 / 100, 0),               # q = 50 is exactly 0.5
    (_f32(0x3E2AAAAB), 0),      # float32 just above 1/6: 3 * scale > 0.5, rounds to 0.5
    (1 / 1000, 0),              # no code reaches 0.5
    (0.1, -128),                # every code from -123 on
])
def test_sigmoid_threshold_is_the_notebooks_rule_on_every_int8(scale, zp):
    """min_q splits the 256 codes exactly where top_class on the float32 dequantized value
    does (p > 0.5), including codes whose exact value is above 0.5 but whose float32 is 0.5."""
    out = TensorQuant(scale=float(np.float32(scale)), zero_point=zp)
    min_q = C.sigmoid_min_q(out)
    for q in range(-128, 128):
        assert (q >= min_q) == (top_class(dequantize([q], out))[0] == 1), q
    if scale == _f32(0x3E2AAAAB):
        assert Fraction(out.scale) * 3 > Fraction(1, 2) and min_q == 4
    if scale == 1 / 1000:
        assert min_q == 128


def test_rule_needs_a_classifier_shape_and_tflites_logistic():
    softmax = TensorQuant(scale=1 / 256, zero_point=-128)
    assert C.class_rule(["a", "b", "c"], softmax, 3).min_q is None
    rule = C.class_rule(["F", "T"], softmax, 1)
    assert (rule.min_q, rule.one_k) == (1, 256)
    with pytest.raises(ConvertError, match="2 output.*3 classes"):
        C.class_rule(["a", "b", "c"], softmax, 2)
    with pytest.raises(ConvertError, match="LOGISTIC"):
        C.class_rule(["F", "T"], TensorQuant(scale=1 / 255, zero_point=-128), 1)


def test_names_macro_is_valid_c_for_any_name(tmp_path):
    """Every byte of awkward names survives as a C literal: compiled and printed back."""
    names = C.board_names(['a"b\\c', "7up", "Zürich", "x" * 30, "??=", "tab\there", "🙂", "e\u0301"])
    assert names == ['a"b\\c', "7up", "Zurich", "x" * 23 + "~", "class_4", "tab_here", "class_6", "e"]
    src = tmp_path / "names.c"
    src.write_text("#include <stdio.h>\n#define NAMES \\\n" + C.names_macro(names) + "\n"
                   "static const char names[] = NAMES;\n"
                   "int main(void) { fwrite(names, 1, sizeof names, stdout); return 0; }\n")
    subprocess.run(["gcc", "-std=c99", "-pedantic", "-Wtrigraphs", *WARNINGS, str(src), "-o",
                    str(tmp_path / "names")], check=True)
    out = subprocess.run([str(tmp_path / "names")], capture_output=True, check=True).stdout
    assert out == b"\0".join(n.encode("ascii") for n in names) + b"\0"


# ----------------------------------------------------------- real classifiers

def _sketch(name: str, out: Path, classes=CLASSES) -> tuple[Path, object]:
    plan = plan_from_model(AM.tflite(name))
    sketch = render_native_sketch(plan, out, sketch_name="tinyml_cls", board_name="host",
                                  model_hash="0123456789ab", input_label="x", output_label="class",
                                  classes=classes[name] if classes else None)
    return sketch, plan


@pytest.mark.parametrize("name", ["softmax", "sigmoid_out"])
def test_native_header_carries_the_names(name, tmp_path):
    sketch, _ = _sketch(name, tmp_path)
    header = (sketch / "tinyml_model.h").read_text()
    want = CLASSES[name]
    assert f"#define TINYML_N_CLASSES {len(want)}" in header
    assert "\\0\" \\\n".join(f'    "{n}' for n in want) + '"\n' in header
    assert ("#define TINYML_CLASS_MIN_Q 1" in header) == (name == "sigmoid_out")
    regression, _ = _sketch(name, tmp_path / "plain", classes=None)
    assert "TINYML_CLASS" not in (regression / "tinyml_model.h").read_text()


def _host_board(sketch: Path, out: Path) -> Path:
    cmd = ["g++", "-std=c++11", "-O1", *WARNINGS, "-Wshadow", f"-I{sketch}", f"-I{COMMON}",
           f"-I{HERE / 'fake_model'}", str(sketch / "tinyml_model.cpp"), str(sketch / "tinyml_protocol.cpp"),
           str(COMMON / "host_port.cpp"), str(HERE / "fake_model" / "host_board.cpp"), "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs host g++")
@pytest.mark.parametrize("name", ["softmax", "sigmoid_out"])
def test_real_classifier_names_the_notebooks_class(name, tmp_path):
    """The generated native model with the protocol, on the host: 400 typed rows (one per
    line, then five per line) name the class top_class picks from the notebook's int8
    model, with its exactly rounded probability."""
    from fake_model.board import run_stdio
    from ipytinyml.link import format_float32

    sketch, plan = _sketch(name, tmp_path)
    exe = _host_board(sketch, tmp_path / "board")
    rows = np.round(AM.data(1)["x"], 2)  # short enough that two rows fit a 79-character line
    scores = dequantize(evaluate_plan(plan, plan.input_stage.quantize(rows)), plan.output)
    want = []
    for s in scores:
        k, p = top_class(s)
        want.append(f"{CLASSES[name][k]} ({two_decimals(Fraction(p))})")
    typed = [" ".join(format_float32(float(v)) for v in row) for row in rows]
    pairs = [i for i in range(0, len(rows) - 1, 2) if len(typed[i]) + len(typed[i + 1]) + 2 <= 79]
    lines = typed + [f"{typed[i]}, {typed[i + 1]}" for i in pairs]
    out = run_stdio(exe, ("\n".join(lines) + "\n").encode()).decode("ascii").split("\r\n")
    assert out[0].startswith("#tinyml ready ") and len(pairs) > 50
    for i, line in enumerate(out[1:1 + len(rows)]):
        assert line.startswith(f"x {typed[i]} -> class: {want[i]} ("), (i, line, want[i])
    for i, line in zip(pairs, out[1 + len(rows):1 + len(lines)]):
        assert f" -> class: {want[i]}, {want[i + 1]} (" in line, line
    assert {w.split()[0] for w in want} == set(CLASSES[name])  # every class was printed


@pytest.mark.skipif(not avr_uno.available(), reason="needs avr-g++ and arduino-core-avr")
def test_classifier_sketch_builds_warning_free_for_the_uno(tmp_path):
    """The real softmax classifier's native sketch with its class line, the Uno's recipe
    plus -Wall -Wextra: no warning; the class line's flash cost is printed."""
    core = avr_uno.build_core(tmp_path / "core")
    sizes = {}
    for label, classes in (("with", CLASSES), ("without", None)):
        sketch, _ = _sketch("softmax", tmp_path / label, classes=classes)
        elf, warnings = avr_uno.build_sketch(sketch, tmp_path / f"build_{label}", core)
        assert warnings.strip() == "", warnings
        sizes[label] = avr_uno.sizes(elf)
    print("uno flash/ram with and without the class line:", sizes)
    assert sizes["with"][1] == sizes["without"][1]  # names in flash: no RAM
    assert 0 < sizes["with"][0] - sizes["without"][0] < 400


@pytest.mark.skipif(shutil.which("arm-none-eabi-g++") is None, reason="needs arm-none-eabi-g++")
@pytest.mark.parametrize("name", ["softmax", "sigmoid_out"])
def test_classifier_protocol_compiles_for_cortex_m4(name, tmp_path):
    sketch, _ = _sketch(name, tmp_path)
    for src in ("tinyml_protocol.cpp", "tinyml_model.cpp"):
        r = subprocess.run(["arm-none-eabi-g++", "-mcpu=cortex-m4", "-mthumb", "-Os", "-std=gnu++11",
                            *WARNINGS, "-Wshadow", f"-I{sketch}", "-c", str(sketch / src),
                            "-o", str(tmp_path / f"{src}.o")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]


# ------------------------------------------------------------------------ TFLM

@pytest.mark.skipif(shutil.which("g++") is None, reason="needs host g++")
@pytest.mark.parametrize("name", ["softmax", "sigmoid_out"])
def test_tflm_sketch_carries_the_names_and_prints_the_class(name, tmp_path):
    """The TFLM template's header has the same class block; the sketch compiles against the
    TFLM declarations (tests/tflm_stubs, as tests/test_tflm_sketch.py checks sketches) and,
    linked with the stubs' identity interpreter (output j = input j), names the class of
    the int8 codes a typed line quantizes to."""
    from test_tflm_sketch import CXXFLAGS, STUBS, _generate, _gxx, _host_board, _run, _sources

    path = tmp_path / f"{name}.tflite"
    path.write_bytes(AM.tflite(name, True))
    sketch = tmp_path / "sk"
    _generate(path, sketch, classes=CLASSES[name])
    header = (sketch / "tinyml_model.h").read_text()
    assert f"#define TINYML_N_CLASSES {len(CLASSES[name])}" in header
    assert all(f'"{n}' in header for n in CLASSES[name])
    for source in _sources(sketch):
        _gxx([*CXXFLAGS, "-fsyntax-only", f"-I{sketch}", f"-I{STUBS}", str(source)])

    exe, plan = _host_board(path, tmp_path / "run", classes=CLASSES[name])
    rows = np.round(AM.data(2)["x"][:60], 1)
    typed = [" ".join(f"{v:g}" for v in row) for row in rows]
    codes = plan.input_stage.quantize(rows)[:, :plan.n_outputs]  # the identity interpreter
    out = _run(exe, typed)
    assert out[0].startswith("#tinyml ready proto=2 runtime=tflm") and len(out) == 1 + len(rows)
    seen = set()
    for row, line, q in zip(typed, out[1:], codes):
        k, p = top_class(dequantize(q, plan.output))
        seen.add(k)
        assert line.startswith(f"horsepower {row} -> mpg: {CLASSES[name][k]} "
                               f"({two_decimals(Fraction(p))}) ("), line
    assert seen == set(range(len(CLASSES[name])))


def test_doctests():
    import doctest
    assert doctest.testmod(C).failed == 0


def test_uno_fit_counts_the_class_line():
    from ipytinyml.codegen import fit
    plan = plan_from_model(AM.tflite("softmax"))
    plain, with_names = fit.native_footprint(plan), fit.native_footprint(plan, CLASSES["softmax"])
    assert with_names[0] - plain[0] == fit.FLASH_CLASS_LINE + len("Europe Japan USA ")
    assert with_names[1] == plain[1] and fit.native_fit_problem(plan, classes=CLASSES["softmax"]) is None


def test_the_notebook_prints_a_probability_as_the_board_does():
    """Every probability a softmax or sigmoid output can hold (k/256), and its complement,
    reads the same in the notebook (textfmt.two_decimals on the dequantized float) as in the
    board's human line (the spec's exact rounding, checked against the board above); the
    ties 0.125 and 0.625 are where Python's own format would differ."""
    from ipytinyml.textfmt import two_decimals as notebook
    for k in range(257):
        p = float(np.float32(k / 256))
        assert notebook(p) == two_decimals(Fraction(p)), k
        assert notebook(1.0 - p) == two_decimals(1 - Fraction(p)), k
    assert (notebook(0.125), f"{0.125:.2f}") == ("0.13", "0.12")
    assert notebook(-0.001) == "0.00" and notebook(-0.005) == "-0.01"
