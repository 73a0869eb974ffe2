"""tm.flash / tm.evaluate_on_board on the virtual board: the real Uno sketch, the real Arduino
AVR core, real simavr, pyserial over the harness's pty, tflite-micro as the oracle."""
import json
import time

import numpy as np
import pytest

import ipytinyml as tm
from ipytinyml.errors import LinkError, TinyMLError
from ipytinyml.quant import evaluate_plan, plan_from_model
from ipytinyml.reference import run_micro
from ipytinyml.tflite_file import read_tflite


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    tm.train(name="hp", root=root, epochs=300)
    tm.quantize(name="hp", root=root)
    return root


@pytest.fixture(scope="module")
def board(model):
    with tm.flash(name="hp", root=model, board="sim") as b:
        yield b


def test_all_256_raw_inputs_equal_tflite_micro(board, model):
    tflite = tm.tflite_path("hp", model)
    plan = plan_from_model(read_tflite(tflite))
    raw = np.arange(-128, 128)
    got = board.predict_raw(raw)
    np.testing.assert_array_equal(got, evaluate_plan(plan, raw.astype(np.int8)))
    # and the same through tflite-micro itself: feed the dequantized int8 inputs
    x = (plan.input.scale * (raw.astype(np.float64) - plan.input.zero_point)).astype(np.float32)
    from ipytinyml.quant import quantize
    np.testing.assert_array_equal(quantize(run_micro(tflite, x.reshape(-1, 1)), plan.output), got)


def test_float_predictions_equal_tflite_micro(board, model):
    x = np.array([[46.0], [97.5], [130.0], [150.0], [230.0], [-3.0], [1e4]], dtype=np.float32)
    # the int8 graph takes standardized features: tflite-micro behind the board's input pre-stage
    from ipytinyml.reference import run_staged
    expected = run_staged(tm.tflite_path("hp", model), board.plan.input_stage, x, runner=run_micro)
    np.testing.assert_array_equal(board.predict(x), expected)


def test_evaluate_writes_parity_and_latency(board, model):
    result = tm.evaluate_on_board(name="hp", root=model, board=board)
    assert result["parity"]["matched"] == result["parity"]["total"] == 78
    assert result["parity"]["raw_matched"] == result["parity"]["raw_total"] == 256
    assert result["parity"]["runtime"] == "native"
    assert result["latency"]["device_cycles"] > 0 and result["latency"]["predictions_per_s"] > 0
    report = json.loads((model / "hp" / "report.json").read_text())
    assert report["parity"] == result["parity"] and "latency" in report
    assert abs(result["mae"] - report["variants"]["int8"]["mae"]) < 1e-5  # board == LiteRT int8


def test_info_reports_the_model_hash_and_quantization(board, model):
    info = board.info()
    tflite = tm.tflite_path("hp", model)
    plan = plan_from_model(read_tflite(tflite))
    from ipytinyml.prestage import model_hash  # the graph and its input pre-stage
    assert info.model == model_hash(tflite.read_bytes(), board.plan.input_stage)
    assert (info.n_in, info.n_out, info.board, info.runtime) == (1, 1, "uno", "native")
    assert np.float32(info.input_scale) == np.float32(plan.input.scale)


def test_reflash_of_unchanged_model_uses_the_cached_build(model, board):
    start = time.perf_counter()
    with tm.flash(name="hp", root=model, board="sim") as again:
        assert again.build["flash_bytes"] == board.build["flash_bytes"]
        assert again.predict([130.0]).shape == (1, 1)
    assert (model / "hp" / "build" / "sim" / "cache").is_dir()
    assert len(list((model / "hp" / "build" / "sim" / "cache").iterdir())) == 1
    assert time.perf_counter() - start < 30  # generous: the point is that it did not hang


def test_stale_model_on_the_board_is_detected(tmp_path):
    tm.train(name="s", root=tmp_path, epochs=50)
    tm.quantize(name="s", root=tmp_path)
    with tm.flash(name="s", root=tmp_path, board="sim") as b:
        tm.train(name="s", root=tmp_path, epochs=60)
        tm.quantize(name="s", root=tmp_path)
        new_hash = read_tflite(tm.tflite_path("s", tmp_path)).model_hash
        with pytest.raises(LinkError, match="flash"):
            b.link.check_model(new_hash)


def test_bad_targets_are_one_line(model):
    with pytest.raises(TinyMLError, match="did you mean 'uno'"):
        tm.flash(name="hp", root=model, board="unoo")
    with pytest.raises(TinyMLError, match="runtime"):
        tm.flash(name="hp", root=model, board="sim", runtime="cmsis")
    with pytest.raises(TinyMLError, match="for a real board") as info:  # not silently ignored
        tm.flash(name="hp", root=model, board="sim", port="/dev/ttyACM0")
    assert "\n" not in str(info.value)


def test_real_board_path_with_stand_in_arduino_cli(model, tmp_path, monkeypatch):
    """The real-board sequence of ``tm.flash(board="uno", port=...)``: check core -> generate ->
    compile -> release the old link -> upload -> find the port -> banner -> model hash.

    arduino-cli cannot be installed here: it is the stand-in in tests/fake_arduino_cli that
    replays arduino-cli 1.5.1's JSON shapes. The "Uno" behind the port is real firmware: the
    same Uno sketch running in simavr, its pty reached through a symlink named like a USB port.
    """
    from pathlib import Path

    from ipytinyml.toolchain.sim import VirtualBoard

    fake = Path(__file__).resolve().parent / "fake_arduino_cli" / "arduino-cli"
    monkeypatch.setenv("IPYTINYML_ARDUINO_CLI", str(fake))
    monkeypatch.delenv("FAKE_ARDUINO_CLI", raising=False)
    # The simulator keeps its own pty end open, which the busy-port check (tested in
    # test_ports.py) would rightly report; a real board's port has no such holder.
    from ipytinyml import ports
    monkeypatch.setattr(ports, "ensure_free", lambda device: None)
    from ipytinyml import deploy

    # the Uno's firmware, built here (a cache hit when another test built it): no test order
    sketch, _, _ = deploy.generate("hp", model)
    elf = deploy.build(sketch, model / "hp" / "build" / "sim").elf
    with VirtualBoard(elf) as uno:
        device = tmp_path / "ttyACM0"
        device.symlink_to(uno.port)
        notes = []
        with tm.flash(name="hp", root=model, board="uno", port=str(device), progress=notes.append) as b:
            assert b.kind == "uno" and b.build["fqbn"] == "arduino:avr:uno"
            assert "upload" in notes and notes.index("compile") < notes.index("upload")
            assert b.predict_raw([-128, 0, 127]).shape == (3, 1)
        generated = model / "hp" / "firmware" / "arduino_avr_uno" / "tinyml_hp"
        assert (generated / "tinyml_hp.ino").is_file() and (generated / "tinyml_model.h").is_file()


def test_real_board_without_arduino_cli_is_one_line(model, monkeypatch, tmp_path):
    monkeypatch.delenv("IPYTINYML_ARDUINO_CLI", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no arduino-cli anywhere
    with pytest.raises(TinyMLError, match="arduino-cli is not installed") as info:
        tm.flash(name="hp", root=model, board="nano33ble")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("values", [[float("nan")], [1e40], ["abc"], [], [[1.0, 2.0]]])
def test_board_refuses_bad_inputs_before_sending(board, values):
    from ipytinyml.errors import DataError
    with pytest.raises(DataError) as info:
        board.predict(values)
    assert "\n" not in str(info.value)
    assert board.predict([130.0]).shape == (1, 1)  # and keeps working
