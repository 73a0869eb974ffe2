"""Fuzzing the firmware's serial protocol on the virtual board.

Real parts: the Uno sketch that ``tm.flash(board="sim")`` builds (the real
Arduino AVR core, avr-gcc, arduino-builder) running in simavr, reached over
pyserial through the harness's pty. A seeded generator (tests/hardening/fuzz.py)
sends random bytes, binary (NUL, 0xFF, escapes), overlong, boundary and partial
lines, number and id edge cases, interleaved with valid ``!id r``/``!id p``/``!id i``
requests and human lines.

Every line the board prints is checked: exactly one answer per complete line,
within a timeout (no hang); no second banner (no reset); each answer equal to
what the spec model of docs/protocol.md (tests/fake_model/ref.py, with the real
int8 model inside) says, timings aside; free RAM the same at every info request.
Then every ``ok`` answer is checked bit for bit: raw requests against
``ipytinyml.quant.evaluate_plan``, decimal requests against tflite-micro.

The sender respects the Uno's 64-byte receive buffer: one line in flight, its
answer awaited before the next line's bytes go out. The simulator runs
unpaced (``speed=0``; one shorter run in real time); the UART still takes 87
simulated microseconds a byte.

The normal tier sends a few thousand lines; the ``slow`` tier 100,000.
"""
from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest

from hardening.fuzz import Framer, Fuzzer, real_model, segments
from hardening.session import FuzzSession

NORMAL_LINES = 3000
SLOW_LINES = 100_000


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    """The hp model trained briefly, quantized, and its Uno sketch built for the virtual board."""
    import ipytinyml as tm
    from ipytinyml import artifacts, deploy

    root = tmp_path_factory.mktemp("fuzz")
    tm.train(name="hp", root=root, epochs=100)
    tm.quantize(name="hp", root=root)
    sketch, plan, model_hash = deploy.generate("hp", root)
    result = deploy.build(sketch, artifacts.model_dir(root, "hp") / "build" / "sim")
    return {"elf": result.elf, "plan": plan, "hash": model_hash, "tflite": tm.tflite_path("hp", root),
            "model": real_model(plan, model_hash, "horsepower", "mpg")}


def fuzz_board(firmware, seed: int, lines: int, speed: float = 0):
    """Run ``lines`` fuzzed lines through a fresh virtual board; returns the stats."""
    import serial
    from ipytinyml.toolchain.sim import VirtualBoard

    model = firmware["model"]
    fuzzer = Fuzzer(seed, max_values=model.max_values, n_in=model.n_in,
                    input_scale=firmware["plan"].input.scale)
    with VirtualBoard(firmware["elf"], speed=speed) as vb:
        ser = serial.Serial(vb.port, 115200, timeout=0.05, write_timeout=5)
        try:
            session = FuzzSession(ser, model, paced=speed > 0)
            items = (fuzzer.item() for _ in itertools.count())
            stats = session.run(itertools.takewhile(lambda _: session.stats.lines < lines, items))
            assert vb.alive, vb.describe_exit()
        finally:
            ser.close()
    return stats


def check_bit_exact(firmware, stats) -> None:
    """Every ok answer: raw against evaluate_plan, decimals against tflite-micro."""
    from ipytinyml.quant import evaluate_plan, quantize
    from ipytinyml.reference import run_micro, run_staged

    plan = firmware["plan"]
    raw_in = np.array([v for values, _ in stats.raw_pairs for v in values], dtype=np.int8)
    raw_out = np.array([v for _, outputs in stats.raw_pairs for v in outputs], dtype=np.int64)
    assert len(raw_in) > 100
    np.testing.assert_array_equal(evaluate_plan(plan, raw_in.reshape(-1, 1)).reshape(-1), raw_out)

    x = np.array([v for values, _ in stats.predict_pairs for v in values], dtype=np.float32)
    y = np.array([v for _, outputs in stats.predict_pairs for v in outputs], dtype=np.int64)
    assert len(x) > 100
    unique, back = np.unique(x, return_inverse=True)
    # the pre-stage maps every float32 to an int8, saturating beyond the ends (no cast to int32
    # as in TFLite's QUANTIZE, which is undefined beyond 2**31 steps)
    graph = run_staged(firmware["tflite"], plan.input_stage, unique.reshape(-1, 1), runner=run_micro)
    micro = quantize(graph, plan.output).reshape(-1)
    np.testing.assert_array_equal(micro[back], y)


def report(stats, name: str) -> None:
    summary = {"lines": stats.lines, "seconds": round(stats.seconds, 2),
               "lines_per_s": round(stats.lines_per_s, 1), "bytes": stats.bytes_sent,
               "ok": stats.ok, "human": stats.human, "errors": dict(sorted(stats.errors.items())),
               "worst_answer_ms": round(1000 * stats.worst_answer_s, 1),
               "cycles_per_request": [min(stats.cycles), max(stats.cycles)] if stats.cycles else None,
               "free_ram": sorted(stats.free)}
    print(f"\n{name}: {json.dumps(summary)}")
    out = os.environ.get("IPYTINYML_FUZZ_REPORT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"test": name, **summary}) + "\n")


# ------------------------------------------------------------------------------ the tests

def test_framer_matches_the_spec_model():
    """The incremental framer and the segmenting sender agree with ref.split_lines."""
    from fake_model import ref
    fuzzer = Fuzzer(99)
    stream = b"".join(c for _ in range(3000) for c in fuzzer.item().chunks)
    framer, lines = Framer(), []
    for cut in range(0, len(stream), 37):  # fed in arbitrary pieces, line ends split too
        for seg in segments(stream[cut:cut + 37]):
            lines += framer.feed(seg)
    assert lines == ref.split_lines(stream)
    assert b"".join(segments(stream)) == stream
    # silences between the pieces: the two framers agree again
    pieces = [stream[cut:cut + 37] for cut in range(0, len(stream), 37)]
    framer, lines = Framer(), []
    for piece in pieces:
        lines += framer.silence() + framer.feed(piece)
    assert lines == ref.split_lines(pieces) and len(lines) > len(ref.split_lines(stream))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzzed_lines_never_hang_reset_or_answer_wrong(firmware, seed):
    stats = fuzz_board(firmware, seed, NORMAL_LINES // 3)
    report(stats, f"fuzz seed {seed}")
    assert len(stats.free) == 1, f"free RAM changed between info requests: {stats.free}"
    assert stats.ok > 100 and stats.human > 20 and min(stats.cycles) > 0
    check_bit_exact(firmware, stats)


def test_fuzzed_lines_in_real_time(firmware):
    """A shorter run paced to real time, as the notebook's virtual board runs (input then
    arrives while the sketch sleeps between timer ticks, not only while it computes)."""
    stats = fuzz_board(firmware, 5, 300, speed=1)
    report(stats, "fuzz real time")
    assert len(stats.free) == 1 and stats.ok > 30


def test_fuzzing_reaches_every_error_code(firmware):
    """The generator is worth its time: every error a native board can give shows up."""
    stats = fuzz_board(firmware, 4, 1000)
    assert set(stats.errors) == {1, 2, 3, 4, 5, 6, 7, 9}, stats.errors  # 8: only TFLM can fail
    assert {"raw", "predict", "info", "human", "binary", "overlong", "edge_number"} <= set(stats.kinds)


@pytest.mark.slow
def test_100k_fuzzed_lines(firmware):
    stats = fuzz_board(firmware, 100, SLOW_LINES)
    report(stats, "fuzz 100k")
    assert stats.lines >= SLOW_LINES
    assert len(stats.free) == 1, f"free RAM changed between info requests: {stats.free}"
    check_bit_exact(firmware, stats)
