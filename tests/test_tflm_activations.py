"""The TFLM sketch and the per-runtime verdicts for models with LOGISTIC, TANH and SOFTMAX.

Real: trained and converted models (tests/activation_models.py), our reader, tflite-micro's
arena measurement, host g++ compiling the generated sketch against the declaration stubs of
tests/tflm_stubs/ (as tests/test_tflm_sketch.py does; the real TFLM library cannot be
installed here) and linking it with the stubs' fake interpreter to run the sketch's glue.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from ipytinyml import runtimes
from ipytinyml.codegen import tflm
from ipytinyml.tflite_file import read_tflite

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import activation_models as AM  # noqa: E402
from test_tflm_sketch import (CXXFLAGS, STUBS, _generate, _host_board, _run, _sources,  # noqa: E402
                              _gxx, needs_gxx, needs_protocol)

EXPECTED_OPS = {
    ("softmax", False): ["QUANTIZE", "FULLY_CONNECTED", "SOFTMAX", "DEQUANTIZE"],
    ("sigmoid_out", False): ["QUANTIZE", "FULLY_CONNECTED", "LOGISTIC", "DEQUANTIZE"],
    ("tanh_hidden", True): ["FULLY_CONNECTED", "TANH"],
    ("mixed", True): ["FULLY_CONNECTED", "LOGISTIC", "TANH", "SOFTMAX"],
}


def _file(tmp_path: Path, name: str, int8_io: bool) -> Path:
    path = tmp_path / f"{name}_{int(int8_io)}.tflite"
    path.write_bytes(AM.tflite(name, int8_io))
    return path


@pytest.mark.parametrize("name, int8_io", list(EXPECTED_OPS))
def test_op_resolver_registers_exactly_these_ops(name, int8_io, tmp_path):
    _generate(_file(tmp_path, name, int8_io), tmp_path / "sk")
    source = (tmp_path / "sk" / "tinyml_model.cpp").read_text()
    registered = re.findall(r"resolver\.(Add\w+)\(\) != kTfLiteOk\) return kTfLiteError;  // (\w+)", source)
    assert [op for _, op in registered] == EXPECTED_OPS[(name, int8_io)]
    assert [m for m, _ in registered] == [tflm.OP_REGISTRATIONS[op] for _, op in registered]
    assert f"constexpr unsigned int kOpCount = {len(registered)};" in source


@needs_gxx
@needs_protocol
@pytest.mark.parametrize("name, int8_io", [("softmax", False), ("mixed", True)])
def test_sketch_compiles_against_the_tflm_declarations(name, int8_io, tmp_path):
    sketch = tmp_path / "sk"
    _generate(_file(tmp_path, name, int8_io), sketch, header="Chirale_TensorFlowLite.h")
    for source in _sources(sketch):
        _gxx([*CXXFLAGS, "-fsyntax-only", f"-I{sketch}", f"-I{STUBS}", str(source)])


@needs_gxx
@needs_protocol
def test_classifier_sketch_glue_runs(tmp_path):
    """The 7 -> 3 softmax classifier's sketch linked with the fake interpreter (output j =
    input j): info describes 7 inputs, 3 outputs at the softmax quantization; raw codes pass."""
    exe, plan = _host_board(_file(tmp_path, "softmax", True), tmp_path)
    assert (plan.n_inputs, plan.n_outputs) == (7, 3)
    assert (plan.output.scale, plan.output.zero_point) == (1 / 256, -128)
    out = _run(exe, ["!1 i", "!2 r -128 -5 0 7 100 127 3"])
    assert out[0].startswith("#tinyml ready proto=2 runtime=tflm")
    assert out[1].startswith("@1 ok ")
    fields = out[2].split()
    assert fields[:2] == ["@2", "ok"] and [int(v) for v in fields[2:5]] == [-128, -5, 0]


@pytest.mark.parametrize("name", list(AM.RECIPES))
def test_both_runtimes_and_the_uno_run_these_models(name):
    for int8_io in (False, True):
        found = runtimes.problems(AM.tflite(name, int8_io))
        assert found == {"native": None, "tflm": None, "uno": None}, found


def test_other_models_are_still_refused_in_one_line():
    """An activation the converter leaves alone (no Dense in front) and a hidden softmax."""
    import keras
    from ipytinyml.convert import convert

    alone = runtimes.problems(AM.op_alone("tanh", 1, -4, 4))
    hidden = keras.Sequential([keras.Input((AM.N_FEATURES,)), keras.layers.Dense(4, activation="softmax"),
                               keras.layers.Dense(1)])
    hidden_softmax = runtimes.problems(convert(hidden, "int8", AM.data()["x"]))
    for found, what in ((alone, "(TANH) does not follow a FULLY_CONNECTED"),
                        (hidden_softmax, "SOFTMAX must be the model's last op")):
        assert set(found) == {"native", "tflm", "uno"}
        for reason in found.values():
            assert what in reason and "\n" not in reason


def test_op_names_of_the_models():
    assert read_tflite(AM.tflite("mixed")).op_names == (
        "QUANTIZE", "FULLY_CONNECTED", "LOGISTIC", "FULLY_CONNECTED", "TANH", "FULLY_CONNECTED", "SOFTMAX",
        "DEQUANTIZE")
