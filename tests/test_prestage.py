"""The input pre-stage's host reference (``ipytinyml.prestage``): its definition, checked
against independent float arithmetic, and the exactness claims the firmware relies on."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from ipytinyml.errors import ConvertError
from ipytinyml.prestage import InputStage, f32_bits, f32_from_bits, graph_input, model_hash
from ipytinyml.quant import TensorQuant, quantize


def _expected(x: float, mean: float, div: float, zp: int) -> int:
    """The definition with exact rationals: IEEE float32 rounding of the difference and of the
    quotient (numpy float32 scalars, round to nearest even), then round half away from zero."""
    x32 = np.float32(x)
    if abs(x32) < np.float32(2.0 ** -126):
        x32 = np.float32(0)
    with np.errstate(over="ignore"):
        diff = np.float32(x32) - np.float32(mean)
        t = np.float32(diff) / np.float32(div)
    if np.isinf(t):
        return 127 if t > 0 else -128
    exact = Fraction(float(t))
    r = int(abs(exact) + Fraction(1, 2))  # floor(|t| + 1/2)
    r = (-r if exact < 0 else r) + zp
    return max(-128, min(127, r))


def test_identity_stage_is_tflite_quantize():
    rng = np.random.default_rng(0)
    scale, zp = float(np.float32(0.0246)), -128
    x = np.concatenate([rng.uniform(-50, 400, 100_000), rng.normal(0, 1e6, 1_000),
                        (np.arange(-300, 300) + 0.5) * scale, [0.0, -0.0, 1e-40, 3.4e38, -3.4e38]])
    stage = InputStage.identity(scale, zp, 1)
    np.testing.assert_array_equal(stage.quantize(x).ravel(), quantize(x, TensorQuant(scale, zp)).ravel())


def test_standardizing_stage_matches_its_definition_at_edges():
    stage = InputStage.standardize([5.4, 193.4, 2970.4, 1e-3], [1.7, 104.3, 846.8, 2e-4], 0.0186285, -43)
    rng = np.random.default_rng(1)
    rows = [rng.uniform(-1e4, 1e4, 4) for _ in range(200)]
    for i, (m, d) in enumerate(zip(stage.mean, stage.div)):
        for k in range(-130, 130, 7):  # decimals landing on and next to k + 0.5 steps
            centre = m + (k + 0.5) * d
            for v in (centre, np.nextafter(np.float32(centre), np.float32(np.inf)),
                      np.nextafter(np.float32(centre), np.float32(-np.inf)), m, -m, 0.0, 1e30, -3.4e38):
                row = np.array(stage.mean, dtype=np.float64)
                row[i] = v
                rows.append(row)
    rows = np.array(rows, dtype=np.float32)
    got = stage.quantize(rows)
    for row, q in zip(rows, got):
        for i, v in enumerate(row):
            assert q[i] == _expected(v, stage.mean[i], stage.div[i], stage.zero_point), (i, v)


def test_clamped_marks_values_beyond_the_int8_range():
    stage = InputStage.standardize([10.0], [2.0], 0.05, 0)  # div 0.1: int8 holds 10 +- 12.8
    flags = stage.clamped([[10.0], [22.7], [22.9], [-2.8], [-2.9], [1e9]]).ravel()
    assert flags.tolist() == [False, False, True, False, True, True]


def test_graph_input_requantizes_to_the_same_int8():
    """run_staged feeds the graph fl32(s * (q - zp)); its QUANTIZE must give q back for all 256."""
    q = np.arange(-128, 128)
    for scale in (1e-6, 0.0186285, 0.77, 19.6, 3e4):
        for zp in (-128, -43, 0, 127):
            back = quantize(graph_input(q, scale, zp), TensorQuant(float(np.float32(scale)), zp))
            np.testing.assert_array_equal(back, q)


def test_saved_form_is_exact_and_the_hash_covers_it():
    stage = InputStage.standardize([23.5, 0.1], [7.8, 3e-5], 0.02, 5)
    assert InputStage.from_json(stage.to_json()) == stage
    other = InputStage.standardize([23.5, 0.1], [7.8, 3.00001e-5], 0.02, 5)
    assert model_hash(b"graph", stage) != model_hash(b"graph", other)
    assert model_hash(b"graph", stage) != model_hash(b"graph2", stage)
    assert len(model_hash(b"graph", stage)) == 12
    assert f32_from_bits(f32_bits(0.1)) == float(np.float32(0.1))


@pytest.mark.parametrize("bad", [{"mean_bits": ["zz"], "div_bits": ["3f800000"], "zero_point": 0},
                                 {"div_bits": ["3f800000"], "zero_point": 0}, [], {"mean_bits": 3}])
def test_damaged_saved_stage_is_one_line(bad):
    with pytest.raises(ConvertError, match="re-run %tinyml_quantize"):
        InputStage.from_json(bad)


def test_degenerate_constants_are_refused():
    with pytest.raises(ConvertError, match="degenerate"):
        InputStage(mean=(0.0,), div=(0.0,), zero_point=0)
    with pytest.raises(ConvertError, match="one mean and one divisor"):
        InputStage(mean=(0.0, 1.0), div=(1.0,), zero_point=0)
    with pytest.raises(ConvertError, match="float32"):
        InputStage(mean=(0.1,), div=(1.0,), zero_point=0)
    with pytest.raises(ConvertError, match="outside int8"):
        InputStage(mean=(0.0,), div=(1.0,), zero_point=200)
