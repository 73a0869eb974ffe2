"""tm.flash / tm.evaluate_on_board on the virtual board: the real Uno sketch, the real Arduino
AVR core, real simavr, pyserial over the harness's pty, tflite-micro as the oracle."""
import json
import time

import numpy as np
import pytest

import ipytinyml as tm
from ipytinyml.deploy import model_hash as deployed_hash
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
def _boards():
    held = []
    yield held
    for b in held:
        b.close()


@pytest.fixture
def board(model, _boards):
    """hp on the virtual Uno. Flashing the one virtual Uno again (as some tests do) disconnects
    the earlier Board, so a closed one is replaced by a new flash (of the cached build)."""
    if not _boards or _boards[-1].link.closed:
        _boards.append(tm.flash(name="hp", root=model, board="sim"))
    return _boards[-1]


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
    """Typed values through the board's pre-stage and graph == the pre-stage and tflite-micro."""
    from ipytinyml.deploy import int8_model
    from ipytinyml.reference import run_staged
    x = np.array([[46.0], [97.5], [130.0], [150.0], [230.0], [-3.0], [1e4]], dtype=np.float32)
    flatbuffer, _, stage = int8_model("hp", model)
    expected = run_staged(flatbuffer, stage, x, runner=run_micro)
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
    from ipytinyml.deploy import int8_model
    from ipytinyml.prestage import model_hash
    info = board.info()
    flatbuffer, _, stage = int8_model("hp", model)
    plan = plan_from_model(read_tflite(flatbuffer))
    assert info.model == model_hash(flatbuffer, stage) != read_tflite(flatbuffer).model_hash
    assert (info.n_in, info.n_out, info.board, info.runtime) == (1, 1, "uno", "native")
    assert np.float32(info.input_scale) == np.float32(plan.input.scale)
    assert (info.input_mean, info.input_div) == (stage.mean, stage.div)


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
        new_hash = deployed_hash("s", tmp_path)
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
    replays arduino-cli 1.5.1's JSON shapes, and for arduino:avr boards really builds (Debian's
    core) and really uploads with avrdude, as arduino-cli does. The "Uno" behind the port is a
    second virtual Uno, empty, with the Uno's bootloader, its pty reached through a symlink
    named like a USB port.
    """
    from pathlib import Path

    from ipytinyml.toolchain.sim import VirtualBoard

    fake = Path(__file__).resolve().parent / "fake_arduino_cli" / "arduino-cli"
    monkeypatch.setenv("IPYTINYML_ARDUINO_CLI", str(fake))
    monkeypatch.delenv("FAKE_ARDUINO_CLI", raising=False)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_ARDUINO_CLI_LOG", str(log))
    with VirtualBoard(bootloader=True) as uno:
        device = tmp_path / "ttyACM0"
        device.symlink_to(uno.port)
        notes = []
        with tm.flash(name="hp", root=model, board="uno", port=str(device), progress=notes.append) as b:
            assert b.kind == "uno" and b.build["fqbn"] == "arduino:avr:uno"
            assert "upload" in notes and notes.index("compile") < notes.index("upload")
            assert b.predict_raw([-128, 0, 127]).shape == (3, 1)
            assert b.info().model == deployed_hash("hp", model)
        # the stand-in was asked to upload, and the board got its sketch through its bootloader
        assert any(json.loads(line)[0] == "upload" for line in log.read_text().splitlines())
        assert uno.boots[0] == "open" and uno.boots[-2:] == ["open", "watchdog"] and not uno.empty
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


def test_uno_without_arduino_cli_is_flashed_with_avrdude(model, monkeypatch, tmp_path):
    """No arduino-cli anywhere: Debian's arduino-builder builds for arduino:avr:uno and the real
    avrdude uploads into the Uno's bootloader. The Uno is a second virtual Uno, empty, reached
    by its pty path (an explicit port may be any serial device: no USB id to match)."""
    import serial

    from ipytinyml.toolchain import avrdude, optiboot
    from ipytinyml.toolchain.arduino_cli import find_arduino_cli
    from ipytinyml.toolchain.sim import VirtualBoard

    monkeypatch.delenv("IPYTINYML_ARDUINO_CLI", raising=False)
    assert find_arduino_cli() is None
    model_hash = deployed_hash("hp", model)
    with VirtualBoard(bootloader=True) as uno:
        notes = []
        with tm.flash(name="hp", root=model, board="uno", port=uno.port, progress=notes.append) as b:
            assert notes == ["generate", "compile", "upload", "connect"]
            assert (b.kind, b.port, b.build["upload"], b.build["fqbn"]) == ("uno", uno.port, "avrdude",
                                                                           "arduino:avr:uno")
            assert b.info().model == model_hash
            result = tm.evaluate_on_board(name="hp", root=model, board=b)
            assert result["parity"]["matched"] == result["parity"]["total"] == 78
            assert result["parity"]["raw_matched"] == result["parity"]["raw_total"] == 256
        # the sketch keeps running: one banner in 3 s after the port is opened again
        with serial.Serial(uno.port, 115200, timeout=0.1) as ser:
            got, end = b"", time.monotonic() + 3.0
            while time.monotonic() < end:
                got += ser.read(4096)
        assert got.count(b"#tinyml") == 1, got
        # a separate avrdude run reads back what was uploaded
        (uploaded_hex,) = (model / "hp" / "build" / "arduino_avr_uno" / "cache").glob("*/firmware.hex")
        uploaded = optiboot.read_hex(uploaded_hex)
        back = optiboot.read_hex(avrdude.read_flash(uno.port, tmp_path / "back.hex"))
        assert {a: back.get(a, 0xFF) for a in uploaded} == uploaded
        assert all(v == 0xFF for a, v in back.items() if a not in uploaded and a < optiboot.BOOT_START)


def test_the_virtual_board_is_flashed_through_its_bootloader_without_restarting(model):
    from ipytinyml.toolchain.sim import virtual_uno

    first = tm.flash(name="hp", root=model, board="sim")
    uno = virtual_uno()
    pid, boots = uno.pid, len(uno.boots)
    assert first.process is uno and first.build["upload"] == "avrdude"
    second = tm.flash(name="hp", root=model, board="sim")
    try:
        assert second.process is uno and uno.pid == pid and uno.alive  # one device, many uploads
        assert "open" in uno.boots[boots:] and "watchdog" in uno.boots[boots:]  # avrdude, then the sketch
        assert first.link.closed  # the upload took the port from the earlier connection
        assert second.predict_raw([0]).shape == (1, 1)
    finally:
        second.close()
    assert uno.alive  # closing a Board does not stop the shared virtual Uno
