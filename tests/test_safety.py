"""Safety: names and paths stay inside the artifacts folder, no shell, and no unchecked
port or FQBN on a command line.

Real parts: the package's own source (scanned as Python ASTs), real training and
conversion writing a real artifacts folder, real symlinks. arduino-cli cannot be
installed here: the command-line checks run against tests/fake_arduino_cli (the
stand-in that logs every argument list it receives), which must never be called
with a refused value.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import ipytinyml as tm
from hardening.artifacts import NAME, copy_root, digests, pretrained
from ipytinyml import artifacts
from ipytinyml.errors import TinyMLError, ToolchainError

PACKAGE = Path(tm.__file__).resolve().parent
FAKE_CLI = Path(__file__).resolve().parent / "fake_arduino_cli" / "arduino-cli"

BAD_NAMES = ["../x", "..", ".", "", "/etc", "/tmp/evil", "a/b", "a\\b", "x/../../y", "~", "~root",
             "hp mpg", "hp\nmpg", "hp\x00", "-rf", "1abc", "ü", "a" * 65, " hp", "hp/", "$(id)",
             "hp;rm", "C:\\x", "..\\x"]


# ------------------------------------------------------------------------ names and paths

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return pretrained(tmp_path_factory)


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n) for n in BAD_NAMES])
def test_bad_names_are_refused_before_anything_is_written(tmp_path, name):
    root = tmp_path / "root"
    root.mkdir()
    outside = sorted(p.name for p in tmp_path.iterdir())
    for call in (lambda: artifacts.model_dir(root, name, create=True),
                 lambda: tm.train(name=name, root=root, epochs=1),
                 lambda: tm.quantize(name=name, root=root),
                 lambda: tm.flash(name=name, root=root, board="sim"),
                 lambda: tm.tflite_path(name=name, root=root),
                 lambda: tm.load_split(name=name, root=root),
                 lambda: tm.evaluate_on_board(name=name, root=root)):
        with pytest.raises(TinyMLError) as info:
            call()
        assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == outside
    assert list(root.iterdir()) == []


def test_every_path_a_step_writes_stays_in_the_model_folder(base, tmp_path):
    """Train, quantize and flash (generate + build) in a folder: nothing appears beside it."""
    root = copy_root(base, tmp_path / "root")
    (tmp_path / "sentinel").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    tm.train(name=NAME, root=root, epochs=5)
    tm.quantize(name=NAME, root=root)
    from ipytinyml import deploy
    sketch, _, _ = deploy.generate(NAME, root)
    assert root.resolve() in sketch.resolve().parents
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert sorted(p.name for p in root.iterdir()) == [NAME]


LINKED = ["report.json", "model_int8.tflite", "model_float32.tflite"]


def test_symlinked_artifacts_are_replaced_not_written_through(base, tmp_path):
    """A file of the model folder that is a symlink to a file elsewhere: re-running the step
    replaces the link with its own file; the file it pointed to is never written."""
    root = copy_root(base, tmp_path / "root")
    folder = root / NAME
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in LINKED:
        target = elsewhere / name
        target.write_bytes((folder / name).read_bytes())
        (folder / name).unlink()
        (folder / name).symlink_to(target)
    outside = digests(elsewhere)
    tm.quantize(name=NAME, root=root, variants=("float32", "int8"), per_channel=True)
    assert digests(elsewhere) == outside
    for name in LINKED:
        assert not (folder / name).is_symlink() and (folder / name).is_file()
    json.loads((folder / "report.json").read_text())


def test_symlinks_inside_build_and_firmware_folders_are_not_followed_when_cleaning(base, tmp_path):
    """The build cache drops old entries and sketch generation drops the old sketch with
    rmtree: a symlink planted there (to a folder elsewhere) must not have its target emptied."""
    from ipytinyml import deploy

    root = copy_root(base, tmp_path / "root")
    folder = root / NAME
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "keep.txt").write_text("keep")
    cache = folder / "build" / "sim" / "cache"
    cache.mkdir(parents=True)
    (cache / "0123456789abcdef").symlink_to(victim, target_is_directory=True)
    sim = folder / "firmware" / "sim"
    sim.mkdir(parents=True)
    (sim / f".tinyml_{NAME}.old").symlink_to(victim, target_is_directory=True)
    (sim / f"tinyml_{NAME}").symlink_to(victim, target_is_directory=True)
    sketch, _, _ = deploy.generate(NAME, root)
    deploy.build(sketch, folder / "build" / "sim")
    assert (victim / "sub" / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in victim.rglob("*")) == ["keep.txt", "sub"]


# ------------------------------------------------------------------------------ no shell

def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(func) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


SUBPROCESS = {"run", "Popen", "call", "check_call", "check_output"}
FORBIDDEN = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput",
             "os.execl", "os.execlp", "os.execle", "os.execlpe", "os.spawnl", "os.spawnlp",
             "pty.spawn", "commands.getoutput", "asyncio.create_subprocess_shell"}


def scan_for_shells(package: Path) -> list[str]:
    problems = []
    files = sorted(package.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        where = lambda n: f"{path.relative_to(package.parent)}:{n.lineno}"  # noqa: E731
        for call in _calls(tree):
            name = _dotted(call.func)
            if name in FORBIDDEN:
                problems.append(f"{where(call)}: {name}()")
            runs = name.startswith("subprocess.") or name.split(".")[-1] in SUBPROCESS
            for kw in call.keywords:
                if runs and kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    problems.append(f"{where(call)}: {name}(shell=...)")
            if name.split(".")[-1] in SUBPROCESS and name.split(".")[0] in ("subprocess", "sp") \
                    and call.args and isinstance(call.args[0], (ast.JoinedStr, ast.BinOp)) \
                    or (name.split(".")[-1] in SUBPROCESS and call.args
                        and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
                problems.append(f"{where(call)}: {name}() with a command string")
    return problems


def test_no_shell_anywhere_in_the_package():
    assert scan_for_shells(PACKAGE) == []


def test_the_shell_scan_finds_what_it_looks_for(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for i in range(21):
        (pkg / f"m{i}.py").write_text("x = 1\n")
    (pkg / "bad.py").write_text(
        "import os, subprocess\n"
        "subprocess.run(['ls'], shell=True)\n"
        "subprocess.Popen(cmd, shell=flag)\n"
        "os.system('ls')\n"
        "subprocess.check_output(f'ls {x}')\n"
        "subprocess.run(['ls'], shell=False)\n"
        "Magics(shell=ip)\n")
    found = scan_for_shells(pkg)
    assert [p.split(":")[1] for p in found] == ["2", "3", "4", "5"], found


# ------------------------------------------------------------- ports and FQBNs

BAD_FQBNS = ["-rf", "--help", "arduino:avr", "arduino:avr:uno --verbose", "arduino:avr:uno;reboot",
             "arduino:avr:uno\n", "$(id):avr:uno", "`id`:avr:uno", "arduino:avr:uno:cpu=a b",
             "arduino::uno", ":avr:uno", "arduino:avr:uno:", "arduino:avr:uno:x:y", "a/b:c:d",
             "arduino:avr:uno\x00", "", "nano33ble", "-x:y:z"]
GOOD_FQBNS = ["arduino:avr:uno", "arduino:mbed_nano:nano33ble", "arduino:avr:nano:cpu=atmega328old",
              "esp32:esp32:esp32:PSRAM=enabled,FlashSize=4M", "vendor-1.x:arch_2:board.3"]
BAD_PORTS = ["", "-p", "--config-file=/tmp/x", "-", " /dev/ttyACM0", "/dev/ttyACM0 ", "/dev/tty\n",
             "/dev/ttyACM0\x00", "COM3\r", "\t/dev/ttyS0", "/dev/tty\x1b[2J"]
GOOD_PORTS = ["/dev/ttyACM0", "COM3", "/dev/cu.usbmodem14101", "/dev/serial/by-id/usb-Arduino_LLC-if00",
              "\\\\.\\COM10", "192.168.1.5"]


@pytest.fixture
def cli(monkeypatch, tmp_path):
    from ipytinyml.toolchain import arduino_cli as ac
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_ARDUINO_CLI_LOG", str(log))
    monkeypatch.delenv("FAKE_ARDUINO_CLI", raising=False)
    wrapper = ac.ArduinoCli(FAKE_CLI)
    wrapper.calls = lambda: [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []
    sketch = tmp_path / "tinyml_hp"
    sketch.mkdir()
    (sketch / "tinyml_hp.ino").write_text("void setup() {}\nvoid loop() {}\n")
    wrapper.sketch = sketch
    return wrapper


@pytest.mark.parametrize("fqbn", BAD_FQBNS, ids=[repr(f) for f in BAD_FQBNS])
def test_bad_fqbns_never_reach_arduino_cli(cli, tmp_path, fqbn):
    from ipytinyml.magics import check_board
    from ipytinyml.toolchain import arduino_cli as ac
    from ipytinyml.toolchain.discovery import resolve_fqbn

    for call in (lambda: cli.compile(cli.sketch, fqbn, tmp_path / "out"),
                 lambda: cli.upload("/dev/ttyACM0", fqbn, cli.sketch),
                 lambda: cli.missing(fqbn), lambda: cli.install(fqbn),
                 lambda: ac.check_fqbn(fqbn)):
        with pytest.raises(ToolchainError):
            call()
    assert cli.calls() == []
    if fqbn.strip() in ("nano33ble", ""):  # an alias is a board name; "" means the default
        return
    for resolve in (lambda: resolve_fqbn(fqbn)[1], lambda: check_board(fqbn)):
        try:
            value = resolve()
        except TinyMLError:
            continue
        assert value == fqbn.strip() and ac.check_fqbn(value)  # only surrounding space is dropped


@pytest.mark.parametrize("fqbn", GOOD_FQBNS)
def test_good_fqbns_pass(fqbn):
    from ipytinyml.magics import check_board
    from ipytinyml.toolchain import arduino_cli as ac
    from ipytinyml.toolchain.discovery import resolve_fqbn
    assert ac.check_fqbn(fqbn) == fqbn and resolve_fqbn(fqbn)[1] == fqbn and check_board(fqbn) == fqbn


@pytest.mark.parametrize("port", BAD_PORTS, ids=[repr(p) for p in BAD_PORTS])
def test_bad_ports_never_reach_arduino_cli(cli, port):
    from ipytinyml.toolchain import arduino_cli as ac
    from ipytinyml.toolchain.discovery import find_board

    with pytest.raises(ToolchainError):
        cli.upload(port, "arduino:avr:uno", cli.sketch)
    with pytest.raises(ToolchainError):
        ac.check_port(port)
    if port:  # an empty --port means "find it"
        with pytest.raises(ToolchainError):
            find_board("uno", port, ports=[])
    assert cli.calls() == []


@pytest.mark.parametrize("port", GOOD_PORTS)
def test_good_ports_pass(port):
    from ipytinyml.toolchain import arduino_cli as ac
    assert ac.check_port(port) == port


def test_a_sketch_folder_named_like_an_option_is_passed_as_a_path(cli, tmp_path, monkeypatch):
    """Relative sketch folders go to arduino-cli as absolute paths: '-x' can never be an option."""
    folder = tmp_path / "-x"
    folder.mkdir()
    (folder / "-x.ino").write_text("void setup() {}\nvoid loop() {}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_ARDUINO_CLI", "compile=compile")
    try:
        cli.compile(Path("-x"), "arduino:avr:uno", Path("out"))
    except ToolchainError:
        pass  # the stand-in's recorded answer does not matter here
    (args,) = [c for c in cli.calls() if "compile" in json.dumps(c)]
    args = args.get("args", args) if isinstance(args, dict) else args
    assert not any(a.startswith("-x") for a in args), args
    assert str(folder) in args


# ------------------------------------------------------------ names from the data

def test_column_names_cannot_break_the_protocol(base, tmp_path):
    """Feature and label names end up in the firmware, which prints them in human answers.
    A name with a line break (a banner-looking line), a control character or non-ASCII text
    must reach the sketch as printable ASCII, one word: protocol lines stay one line each."""
    import re

    from ipytinyml import deploy

    root = copy_root(base, tmp_path / "root")
    report = json.loads((root / NAME / "report.json").read_text())
    report["data"]["features"] = ["hp\r\n#tinyml ready proto=1 runtime=evil"]
    report["data"]["label"] = "temp °C\x00\x1b[2J"
    (root / NAME / "report.json").write_text(json.dumps(report))
    sketch, _, _ = deploy.generate(NAME, root)
    header = (sketch / "tinyml_model.h").read_text()
    labels = dict(re.findall(r'#define TINYML_(INPUT|OUTPUT)_LABEL "(.*)"', header))
    assert set(labels) == {"INPUT", "OUTPUT"}
    for text in labels.values():
        assert re.fullmatch(r"[!-~]+", text) and "\\" not in text, text
