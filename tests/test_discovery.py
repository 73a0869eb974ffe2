"""Board discovery (ipytinyml/toolchain/discovery.py).

Real: the discovery code, the arduino-cli wrapper running a subprocess and
parsing its JSON, pyserial's own ``ListPortInfo`` objects for the fallback.

Replayed: ``arduino-cli board list --format json`` answers come from the
stand-in tests/fake_arduino_cli/arduino-cli (recorded JSON shapes written
from arduino-cli 1.5.1's sources: the ``detected_ports`` wrapper, the
pre-1.0 bare array, entries with and without ``matching_boards``). No USB
board is attached: the pyserial fallback gets a list of ``ListPortInfo``
objects built by the test instead of scanning /sys.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from serial.tools.list_ports_common import ListPortInfo

from ipytinyml.errors import ToolchainError
from ipytinyml.ports import PortIdentity
from ipytinyml.toolchain import arduino_cli as ac
from ipytinyml.toolchain import discovery as dc

FAKE = Path(__file__).resolve().parent / "fake_arduino_cli" / "arduino-cli"
NANO = "arduino:mbed_nano:nano33ble"
UNO = "arduino:avr:uno"


@pytest.fixture
def board_list(monkeypatch):
    """``board_list(variant)`` -> the parsed ports of that recorded answer (through the stand-in)."""
    def listed(variant: str = ""):
        monkeypatch.setenv("FAKE_ARDUINO_CLI", f"board_list={variant}" if variant else "")
        return dc.list_ports(ac.ArduinoCli(FAKE))
    return listed


def test_one_nano_found_automatically(board_list):
    ports = board_list()
    assert [p.address for p in ports] == ["/dev/ttyS0", "/dev/ttyACM0"]
    target = dc.find_board("auto", ports=ports)
    assert (target.fqbn, target.port, target.alias, target.runtime) == (NANO, "/dev/ttyACM0", "nano33ble", "tflm")
    assert target.identity == PortIdentity(0x2341, 0x805A, "8C3A1F2E5B6D7E90")
    assert target.note == "Found Arduino Nano 33 BLE on /dev/ttyACM0."


@pytest.mark.parametrize("variant", ["none", "only_uart"])
def test_no_board_returns_none(board_list, variant):
    ports = board_list(variant)
    assert dc.find_board("auto", ports=ports) is None
    assert dc.no_board_note(ports) == "No board found: using the virtual Arduino Uno (simavr)."


def test_clone_without_matching_boards(board_list):
    ports = board_list("clone")
    clone = ports[-1]
    assert clone.boards == () and clone.identity == PortIdentity(0x1A86, 0x7523, None)
    assert not clone.is_board
    assert dc.find_board("auto", ports=ports) is None
    assert "CH340" in dc.no_board_note(ports) and "--board uno" in dc.no_board_note(ports)
    target = dc.find_board("uno", ports=ports)
    assert (target.fqbn, target.port, target.runtime) == (UNO, "/dev/ttyUSB0", "native")
    assert "as an Uno (clone)" in target.note
    with pytest.raises(ToolchainError, match="is not identified") as info:
        dc.find_board("auto", "/dev/ttyUSB0", ports=ports)
    assert "--board uno" in str(info.value)
    assert dc.find_board("uno", "/dev/ttyUSB0", ports=ports).fqbn == UNO


def test_several_boards_list_them_and_say_how_to_choose(board_list):
    ports = board_list("several")
    assert "192.168.1.20" not in [p.address for p in ports]  # network ports can't speak serial
    with pytest.raises(ToolchainError) as info:
        dc.find_board("auto", ports=ports)
    text = str(info.value)
    assert text.startswith("found 2 boards: Arduino Nano 33 BLE on /dev/ttyACM0 (arduino:mbed_nano:nano33ble, "
                           "USB 2341:805a serial 8C3A1F2E5B6D7E90); Arduino Uno on /dev/ttyACM1 (arduino:avr:uno,")
    assert text.endswith("(choose one with --port (and --board))") and "\n" not in text
    assert dc.find_board("uno", ports=ports).port == "/dev/ttyACM1"
    assert dc.find_board("nano33ble", ports=ports).port == "/dev/ttyACM0"
    assert dc.find_board(NANO, ports=ports).port == "/dev/ttyACM0"
    assert dc.find_board("auto", "/dev/ttyACM1", ports=ports).fqbn == UNO


def test_two_of_the_same_board(board_list):
    ports = board_list("two_nanos")
    with pytest.raises(ToolchainError, match=f"found 2 {NANO} boards: .*choose one with --port"):
        dc.find_board("nano33ble", ports=ports)
    assert dc.find_board("nano33ble", "/dev/ttyACM2", ports=ports).identity.serial_number == "11112222333344445"


def test_named_board_not_attached(board_list):
    with pytest.raises(ToolchainError) as info:
        dc.find_board("uno", ports=board_list())
    assert str(info.value).startswith(f"no {UNO} board found; ports: unknown board on /dev/ttyS0")
    assert "Arduino Nano 33 BLE on /dev/ttyACM0" in str(info.value)


def test_pre_1_0_bare_array(board_list):
    ports = board_list("legacy")
    assert [(p.address, p.fqbns) for p in ports] == [("/dev/ttyACM0", (NANO,)), ("/dev/ttyUSB0", ())]
    assert dc.find_board("auto", ports=ports).fqbn == NANO


def test_board_list_failure_is_one_line(board_list):
    with pytest.raises(ToolchainError, match="arduino-cli board list failed: Error detecting boards"):
        board_list("error")


def test_ports_given_by_the_user(board_list, tmp_path):
    ports = board_list()
    with pytest.raises(ToolchainError, match="port /dev/nowhere does not exist"):
        dc.find_board("nano33ble", "/dev/nowhere", ports=ports)
    device = tmp_path / "ttyACM9"  # exists, but no discovery saw it (e.g. no udev in a container)
    device.write_text("")
    target = dc.find_board("nano33ble", str(device), ports=ports)
    assert (target.fqbn, target.port, target.identity.known) == (NANO, str(device), False)
    link = tmp_path / "by-id"
    link.symlink_to("/dev/ttyACM0")
    if Path("/dev/ttyACM0").exists():  # pragma: no cover - only with a real board
        assert dc.find_board("auto", str(link), ports=ports).fqbn == NANO
    note = dc.find_board("uno", "/dev/ttyACM0", ports=ports).note
    assert note == f"The board on /dev/ttyACM0 looks like Arduino Nano 33 BLE ({NANO}); building for {UNO} as asked."


def test_board_names(board_list):
    assert dc.resolve_fqbn("nano33ble") == ("nano33ble", NANO)
    assert dc.resolve_fqbn("arduino:avr:uno:cpu=atmega328old") == ("uno", "arduino:avr:uno:cpu=atmega328old")
    assert dc.resolve_fqbn("esp32:esp32:esp32") == (None, "esp32:esp32:esp32")
    with pytest.raises(ToolchainError, match="did you mean 'nano33ble'"):
        dc.resolve_fqbn("nano33")
    with pytest.raises(ToolchainError, match="unknown board"):
        dc.find_board("mega", ports=[])


def _info(device, vid=None, pid=None, serial=None, description="n/a"):
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.serial_number, info.description = vid, pid, serial, description
    return info


def test_pyserial_fallback_by_usb_id():
    listing = [_info("/dev/ttyS0"), _info("/dev/ttyACM3", 0x2341, 0x0043, "7563"),
               _info("/dev/ttyUSB0", 0x1A86, 0x7523)]
    ports = dc.list_ports(None, lister=lambda: listing)
    assert [p.address for p in ports] == ["/dev/ttyACM3", "/dev/ttyUSB0"]
    assert all(p.source == "pyserial" for p in ports)
    target = dc.find_board("auto", ports=ports)
    assert (target.fqbn, target.port, target.alias) == (UNO, "/dev/ttyACM3", "uno")
    assert target.identity == PortIdentity(0x2341, 0x0043, "7563")
    assert dc.find_board("auto", lister=lambda: listing).port == "/dev/ttyACM3"  # lists itself
    nano_in_bootloader = [_info("/dev/ttyACM0", 0x2341, 0x005A, "ABC")]
    assert dc.find_board("auto", lister=lambda: nano_in_bootloader).fqbn == NANO
