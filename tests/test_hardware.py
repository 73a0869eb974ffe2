"""Real boards, end to end (marked ``hardware``; skipped with the reason when none is attached).

Everything is real here: arduino-cli with the Arduino mbed core and the
Chirale_TensorFLowLite library, a Nano 33 BLE (or Sense) on USB, the
generated TFLM sketch compiled and uploaded, the serial link, and the board's
int8 answers compared with the host's bit-exact reference on all 256 int8
inputs. Nothing is replayed. Run with ``pytest -m hardware``; choose the
board with ``IPYTINYML_TEST_BOARD`` (default ``nano33ble``) and
``IPYTINYML_TEST_PORT`` when several are attached.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from ipytinyml.errors import ToolchainError

pytestmark = pytest.mark.hardware


@pytest.fixture(scope="session")  # session: checked before the session-scoped models are trained
def real_board():
    """(ArduinoCli, Target) for an attached board, or skip saying why."""
    from ipytinyml.toolchain import arduino_cli as ac
    from ipytinyml.toolchain import discovery

    try:
        cli = ac.arduino_cli()
    except ToolchainError as exc:
        pytest.skip(f"no arduino-cli: {exc}")
    board = os.environ.get("IPYTINYML_TEST_BOARD", "nano33ble")
    port = os.environ.get("IPYTINYML_TEST_PORT")
    try:
        target = discovery.find_board(board, port, cli=cli)
    except ToolchainError as exc:
        pytest.skip(f"no {board} board attached: {exc}")
    if target is None:
        pytest.skip("no board attached")
    return cli, target


def test_tflm_sketch_on_the_board_matches_the_reference(real_board, tflite_models, tmp_path):
    from ipytinyml import ports
    from ipytinyml.codegen import tflm
    from ipytinyml.link import Link
    from ipytinyml.quant import evaluate_plan, plan_from_model
    from ipytinyml.tflite_file import read_tflite
    from ipytinyml.toolchain import arduino_cli as ac

    cli, target = real_board
    if target.runtime != "tflm":
        pytest.skip(f"{target.fqbn} runs the native runtime, not TFLM")
    data = tflite_models["int8"].read_bytes()
    model = read_tflite(data)
    plan = plan_from_model(model)
    cli.check_ready(target.fqbn, library=tflm.library_for_header(tflm.DEFAULT_HEADER),
                    header=tflm.DEFAULT_HEADER)
    sketch = tflm.render_tflm_sketch(data, plan, tmp_path, sketch_name="tinyml_hw", board_name="nano33ble",
                                     model_hash=model.model_hash, input_label="horsepower", output_label="mpg")
    built = cli.compile(sketch, target.fqbn, tmp_path / "build")
    assert built.flash_bytes and built.flash_bytes <= built.flash_max
    assert built.ram_bytes and built.ram_bytes <= built.ram_max

    _, port = ac.upload_and_reacquire(cli, target.port, target.fqbn, tmp_path / "build",
                                      identity=target.identity)
    serial_port = ports.open_when_ready(port, identity=target.identity)
    with Link(serial_port) as link:
        info = link.check_model(model.model_hash)
        assert info.runtime == "tflm"
        arena_size = int(next(ln.split()[2] for ln in (sketch / "tinyml_model.h").read_text().splitlines()
                              if ln.startswith("#define TINYML_ARENA_SIZE")))
        assert 0 < info.arena <= arena_size  # 0 would mean the interpreter failed to build
        codes = np.arange(-128, 128)
        board = np.asarray(link.predict_raw(codes.tolist()).raw).reshape(-1)
        expected = evaluate_plan(plan, codes.reshape(-1, 1).astype(np.int8)).reshape(-1)
        assert np.array_equal(board, expected)

    # Flash again with the link closed by the helper: the port must come back each time.
    serial_port = ports.open_when_ready(port, identity=target.identity)
    _, port2 = ac.upload_and_reacquire(cli, port, target.fqbn, tmp_path / "build",
                                       identity=target.identity, release=serial_port)
    assert not serial_port.is_open
    with Link(ports.open_when_ready(port2, identity=target.identity)) as link:
        link.check_model(model.model_hash)
