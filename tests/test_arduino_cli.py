"""The arduino-cli wrapper (ipytinyml/toolchain/arduino_cli.py).

Real: the wrapper, subprocess calls with argument lists, JSON parsing, the
files a compile leaves in --output-dir.

Replayed: arduino-cli itself cannot be installed on these machines (nor the
mbed core), so every call goes to tests/fake_arduino_cli/arduino-cli, a
stand-in that replays recorded JSON answers and exit codes: shapes written
from arduino-cli 1.5.1's sources (see its docstring), not captured from a
board. The stand-in also logs the arguments it got, so the tests check the
exact command lines.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ipytinyml.errors import ToolchainError
from ipytinyml.toolchain import arduino_cli as ac

FAKE = Path(__file__).resolve().parent / "fake_arduino_cli" / "arduino-cli"
NANO = "arduino:mbed_nano:nano33ble"


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """The wrapper on the stand-in; ``cli.calls()`` gives the argument lists it received."""
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_ARDUINO_CLI_LOG", str(log))
    monkeypatch.delenv("FAKE_ARDUINO_CLI", raising=False)
    wrapper = ac.ArduinoCli(FAKE)
    wrapper.calls = lambda: [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []
    return wrapper


def scenario(monkeypatch, **variants):
    monkeypatch.setenv("FAKE_ARDUINO_CLI", ",".join(f"{k}={v}" for k, v in variants.items()))


@pytest.fixture
def sketch(tmp_path):
    folder = tmp_path / "tinyml_hp"
    folder.mkdir()
    (folder / "tinyml_hp.ino").write_text("void setup() {}\nvoid loop() {}\n")
    return folder


# ---------------------------------------------------------------------------- finding it


def test_found_through_the_environment_variable(monkeypatch):
    ac._cached.cache_clear()
    monkeypatch.setenv(ac.ENV_VAR, str(FAKE))
    assert ac.find_arduino_cli() == FAKE
    cli = ac.arduino_cli()
    assert cli.version() == "1.5.1"
    assert ac.arduino_cli() is cli  # resolved and version-checked once


def test_found_on_path(monkeypatch):
    monkeypatch.delenv(ac.ENV_VAR, raising=False)
    monkeypatch.setenv("PATH", f"{FAKE.parent}{os.pathsep}{os.environ['PATH']}")
    assert ac.find_arduino_cli() == FAKE


def test_missing_gives_one_line_with_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv(ac.ENV_VAR, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ac.find_arduino_cli() is None
    with pytest.raises(ToolchainError) as info:
        ac.arduino_cli()
    text = str(info.value)
    assert "arduino-cli is not installed" in text and ac.ENV_VAR in text and "\n" not in text
    monkeypatch.setenv(ac.ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(ToolchainError, match="not found at"):
        ac.find_arduino_cli()


def test_version_and_a_tool_that_is_not_arduino_cli(cli, monkeypatch):
    assert cli.version() == "1.5.1"
    assert cli.calls() == [["version", "--format", "json"]]
    scenario(monkeypatch, version="broken")
    with pytest.raises(ToolchainError, match="does not look like arduino-cli"):
        ac.ArduinoCli(FAKE).version()


def test_timeout_is_one_line(cli, monkeypatch):
    scenario(monkeypatch, board_list="hang")
    with pytest.raises(ToolchainError, match="did not finish within 1 s"):
        cli.board_list(timeout=1)


# ---------------------------------------------------------------------------- core and library


def test_installed_core_and_library(cli):
    assert cli.installed_platforms() == {"arduino:avr": "1.8.6", "arduino:mbed_nano": "4.2.4"}
    assert cli.installed_libraries()["Chirale_TensorFLowLite"]["version"] == "2.0.0"
    assert cli.missing(NANO, library="Chirale_TensorFLowLite") == []
    cli.check_ready(NANO, library="Chirale_TensorFLowLite")
    assert ["core", "list", "--format", "json"] in cli.calls()
    assert ["lib", "list", "--format", "json"] in cli.calls()


def test_pre_1_0_bare_arrays(cli, monkeypatch):
    scenario(monkeypatch, core_list="legacy", lib_list="legacy")
    assert cli.installed_platforms() == {"arduino:avr": "1.8.6", "arduino:mbed_nano": "4.0.2"}
    assert "Chirale_TensorFLowLite" in cli.installed_libraries()


def test_missing_core_names_the_install_command(cli, monkeypatch):
    scenario(monkeypatch, core_list="no_mbed")
    with pytest.raises(ToolchainError) as info:
        cli.check_ready(NANO, library="Chirale_TensorFLowLite")
    text = str(info.value)
    assert text.startswith("the Arduino core arduino:mbed_nano is not installed; run: "
                           "arduino-cli core update-index && arduino-cli core install arduino:mbed_nano")
    assert "\n" not in text


def test_missing_library_and_core_in_one_line(cli, monkeypatch):
    scenario(monkeypatch, core_list="none", lib_list="empty")
    with pytest.raises(ToolchainError) as info:
        cli.check_ready("arduino:avr:uno", library="Chirale_TensorFLowLite")
    assert str(info.value).startswith(
        "the Arduino core arduino:avr and the Arduino library Chirale_TensorFLowLite are not installed; run: "
        "arduino-cli core update-index && arduino-cli core install arduino:avr && "
        "arduino-cli lib install Chirale_TensorFLowLite")


def test_library_found_by_the_header_it_provides(cli, monkeypatch):
    scenario(monkeypatch, lib_list="official")
    assert cli.missing(NANO, library="Arduino_TensorFlowLite", header="TensorFlowLite.h") == []
    assert cli.missing(NANO, library="Chirale_TensorFLowLite", header="Chirale_TensorFlowLite.h") == [
        "arduino-cli lib install Chirale_TensorFLowLite"]


def test_install_is_opt_in_and_runs_only_what_is_missing(cli, monkeypatch):
    scenario(monkeypatch, core_list="no_mbed", lib_list="empty")
    seen = []
    ran = cli.install(NANO, library="Chirale_TensorFLowLite", progress=seen.append)
    assert ran == seen == ["arduino-cli core update-index", "arduino-cli core install arduino:mbed_nano",
                           "arduino-cli lib install Chirale_TensorFLowLite"]
    calls = cli.calls()
    assert ["core", "install", "arduino:mbed_nano", "--format", "json"] in calls
    assert ["lib", "install", "Chirale_TensorFLowLite", "--format", "json"] in calls
    scenario(monkeypatch, core_list="no_mbed", core_install="error")
    with pytest.raises(ToolchainError, match="arduino-cli core install arduino:mbed_nano failed: Error during install"):
        cli.install(NANO)


# ---------------------------------------------------------------------------- compile


def test_compile_reports_flash_and_ram(cli, sketch, tmp_path):
    out = tmp_path / "build"
    result = cli.compile(sketch, NANO, out)
    assert cli.calls()[-1] == ["compile", "--fqbn", NANO, "--output-dir", str(out), str(sketch),
                               "--format", "json"]
    assert (result.flash_bytes, result.flash_max, result.ram_bytes, result.ram_max) == (112464, 983040, 48712, 262144)
    assert result.libraries == ("Chirale_TensorFLowLite 2.0.0",)
    assert result.warnings == ("tinyml_model.cpp:12:7: warning: unused variable 'k'",)
    assert (out / "tinyml_hp.ino.bin").is_file()
    assert result.to_dict()["flash_bytes"] == 112464


def test_compile_options_are_list_arguments(cli, sketch, tmp_path):
    cli.compile(sketch, NANO, tmp_path / "b", libraries=[tmp_path / "my lib"],
                build_properties=["compiler.cpp.extra_flags=-DX=1"], clean=True)
    assert cli.calls()[-1] == ["compile", "--fqbn", NANO, "--output-dir", str(tmp_path / "b"),
                               "--library", str(tmp_path / "my lib"),
                               "--build-property", "compiler.cpp.extra_flags=-DX=1", "--clean",
                               str(sketch), "--format", "json"]


def test_compile_error_one_line_per_diagnostic(cli, sketch, tmp_path, monkeypatch):
    scenario(monkeypatch, compile="error")
    with pytest.raises(ToolchainError) as info:
        cli.compile(sketch, NANO, tmp_path / "b")
    err = info.value
    assert str(err).startswith(f"compile failed for {NANO}: tinyml_model.cpp:42:3: error: 'interpretr' was "
                               "not declared in this scope; did you mean 'interpreter'? (+1 more)")
    assert err.diagnostics == [
        "tinyml_model.cpp:42:3: error: 'interpretr' was not declared in this scope; did you mean 'interpreter'?",
        "model.cpp:7:1: error: expected ';' before '}' token"]
    assert "error: 'interpretr' was not declared" in err.stderr_tail


def test_compile_without_the_core(cli, sketch, tmp_path, monkeypatch):
    scenario(monkeypatch, compile="no_core")
    with pytest.raises(ToolchainError) as info:
        cli.compile(sketch, NANO, tmp_path / "b")
    assert str(info.value) == ("compile failed: the Arduino core arduino:mbed_nano is not installed; run: "
                               "arduino-cli core update-index && arduino-cli core install arduino:mbed_nano")


def test_compile_without_the_library(cli, sketch, tmp_path, monkeypatch):
    scenario(monkeypatch, compile="no_library")
    with pytest.raises(ToolchainError) as info:
        cli.compile(sketch, NANO, tmp_path / "b")
    text = str(info.value)
    assert text.startswith(f"compile failed for {NANO}: Chirale_TensorFlowLite.h not found "
                           "(tinyml_hp.ino:13:10: fatal: Chirale_TensorFlowLite.h: No such file or directory)")
    assert text.endswith("(run: arduino-cli lib install Chirale_TensorFLowLite)")


def test_compile_that_prints_no_json(cli, sketch, tmp_path, monkeypatch):
    scenario(monkeypatch, compile="no_json")
    with pytest.raises(ToolchainError) as info:
        cli.compile(sketch, NANO, tmp_path / "b")
    assert str(info.value).startswith("arduino-cli compile printed no JSON (exit code 1)")
    assert "nil pointer" in info.value.stderr_tail


def test_bad_fqbn_and_missing_sketch(cli, sketch, tmp_path):
    with pytest.raises(ToolchainError, match="is not an FQBN"):
        cli.compile(sketch, "nano33ble", tmp_path / "b")
    with pytest.raises(ToolchainError, match="does not exist"):
        cli.compile(tmp_path / "nope", NANO, tmp_path / "b")
    assert cli.calls() == []


# ---------------------------------------------------------------------------- upload


@pytest.fixture
def built(cli, sketch, tmp_path):
    out = tmp_path / "build"
    cli.compile(sketch, NANO, out)
    return out


def test_upload_same_port(cli, built):
    result = cli.upload("/dev/ttyACM0", NANO, built)
    assert cli.calls()[-1] == ["upload", "-p", "/dev/ttyACM0", "--fqbn", NANO, "--input-dir", str(built),
                               "--format", "json"]
    assert result.port == "/dev/ttyACM0" and not result.port_changed
    assert result.port_properties["serialNumber"] == "8C3A1F2E5B6D7E90"
    assert "Done in" in result.log


def test_upload_port_changed(cli, built, monkeypatch):
    scenario(monkeypatch, upload="port_changed")
    result = cli.upload("/dev/ttyACM0", NANO, built)
    assert result.port == "/dev/ttyACM1" and result.uploaded_to == "/dev/ttyACM0" and result.port_changed


def test_upload_without_port_info_keeps_the_port(cli, built, monkeypatch):
    scenario(monkeypatch, upload="no_port_info")
    assert cli.upload("/dev/ttyACM0", NANO, built).port == "/dev/ttyACM0"


def test_upload_failure(cli, built, monkeypatch):
    scenario(monkeypatch, upload="error")
    with pytest.raises(ToolchainError) as info:
        cli.upload("/dev/ttyACM0", NANO, built)
    text = str(info.value)
    assert text.startswith("upload to /dev/ttyACM0 failed: Failed uploading: uploading error: exit status 1")
    assert "double-press" in text and "\n" not in text
    assert "No device found on /dev/ttyACM0" in info.value.stderr_tail


def test_upload_busy_port(cli, built, monkeypatch):
    scenario(monkeypatch, upload="busy")
    with pytest.raises(ToolchainError) as info:
        cli.upload("/dev/ttyACM0", NANO, built)
    assert str(info.value).startswith("upload to /dev/ttyACM0 failed: the port is busy")
    assert "Serial Monitor" in str(info.value)


def test_upload_needs_a_build(cli, tmp_path):
    with pytest.raises(ToolchainError, match="compile first"):
        cli.upload("/dev/ttyACM0", NANO, tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToolchainError, match="Compiled sketch not found"):
        cli.upload("/dev/ttyACM0", NANO, tmp_path / "empty")


# ---------------------------------------------------------------------------- upload around a link


@pytest.fixture
def pty_port(tmp_path):
    """A symlink ``ttyACM0`` to a real pseudo-terminal (the test keeps its master side)."""
    master, slave = os.openpty()
    link = tmp_path / "ttyACM0"
    link.symlink_to(os.ttyname(slave))
    os.close(slave)
    yield str(link)
    os.close(master)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_upload_closes_the_link_first_and_keeps_the_port(cli, built, pty_port):
    from ipytinyml import ports

    link = ports.open_serial(pty_port)
    result, port = ac.upload_and_reacquire(cli, pty_port, NANO, built, release=link)
    assert not link.is_open and port == pty_port and not result.port_changed
    assert cli.calls()[-1][:3] == ["upload", "-p", pty_port]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_upload_then_find_the_port_by_usb_identity(cli, built, pty_port, monkeypatch, tmp_path):
    """arduino-cli reports /dev/ttyACM1 (absent here): the board is found by VID/PID/serial number."""
    from serial.tools.list_ports_common import ListPortInfo

    scenario(monkeypatch, upload="port_changed")
    info = ListPortInfo(pty_port, skip_link_detection=True)
    info.vid, info.pid, info.serial_number = 0x2341, 0x805A, "8C3A1F2E5B6D7E90"
    stranger = ListPortInfo(str(tmp_path / "ttyUSB0"), skip_link_detection=True)
    stranger.vid, stranger.pid = 0x1A86, 0x7523
    result, port = ac.upload_and_reacquire(cli, "/dev/ttyACM0", NANO, built, timeout=2,
                                           lister=lambda: [stranger, info])
    assert result.port == "/dev/ttyACM1" and port == pty_port


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_upload_refused_while_another_process_holds_the_port(cli, built, pty_port):
    import subprocess
    import sys

    from ipytinyml.errors import LinkError

    holder = subprocess.Popen([sys.executable, "-c", f"import serial, time; s = serial.Serial({pty_port!r}); "
                               "print('open', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(LinkError, match=f"is busy \\(held by .*pid {holder.pid}\\)"):
            ac.upload_and_reacquire(cli, pty_port, NANO, built)
        assert not any(call[0] == "upload" for call in cli.calls())
    finally:
        holder.kill()
        holder.wait()
