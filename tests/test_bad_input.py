"""Bad input to every magic and every file reader: one clear line, nothing saved is lost.

Each case runs one cell in a real ``InteractiveShell`` with the extension loaded, on
its own copy of one pre-trained artifacts folder (trained, quantized, built for the
virtual Uno and, through the arduino-cli stand-in, for a real Uno). It checks:

- the cell fails with exactly one line on stderr, ``UsageError: <Class>: <message>``,
  and no traceback anywhere in its output;
- the message names the problem (a fragment per case);
- every file of the artifacts folder is byte-identical before and after.

Real parts: TensorFlow, the real artifacts, the real AVR build and simavr for the
virtual board, real ptys. arduino-cli cannot be installed here: real-board cases use
tests/fake_arduino_cli (recorded arduino-cli 1.5.1 JSON shapes) in front of a port
that is either the virtual Uno's pty, held by its simulator (a busy port), or a
misbehaving fake board on a pty (tests/hardening/fake_board.py).
"""
from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from hardening.artifacts import NAME, copy_root, digests, pretrained
from hardening.fake_board import FakeBoard, info_fields

FAKE_CLI = Path(__file__).resolve().parent / "fake_arduino_cli" / "arduino-cli"


# ------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def ip():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "ipytinyml")
    shell.run_line_magic("config", "TinyMLMagics.tracebacks = False")
    shell.run_line_magic("config", "TinyMLMagics.verbose = True")
    yield shell
    shell.run_line_magic("unload_ext", "ipytinyml")


def magics_of(shell):
    return shell.magics_manager.registry["TinyMLMagics"]


def use_stand_in_cli(monkeypatch) -> None:
    monkeypatch.setenv("IPYTINYML_ARDUINO_CLI", str(FAKE_CLI))
    monkeypatch.delenv("FAKE_ARDUINO_CLI", raising=False)
    monkeypatch.delenv("FAKE_ARDUINO_CLI_LOG", raising=False)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """hp_mpg trained, quantized, built for the virtual Uno, and flashed once to a "real" Uno
    (the stand-in arduino-cli, which builds and uploads with avrdude for real, into a second
    virtual Uno with the Uno's bootloader behind a port-like symlink)."""
    import ipytinyml as tm
    from ipytinyml.toolchain.sim import VirtualBoard

    root = copy_root(pretrained(tmp_path_factory, flashed=True),
                     tmp_path_factory.mktemp("bad_input") / "root")
    mp = pytest.MonkeyPatch()
    try:
        use_stand_in_cli(mp)
        with VirtualBoard(bootloader=True) as uno:
            device = root.parent / "ttyACM9"
            device.symlink_to(uno.port)
            tm.flash(name=NAME, root=root, board="uno", port=str(device)).close()
            device.unlink()
    finally:
        mp.undo()
    assert (root / NAME / "firmware" / "arduino_avr_uno").is_dir()
    return root


@dataclass
class Ctx:
    ip: InteractiveShell
    root: Path
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    cleanups: list
    values: dict

    @property
    def folder(self) -> Path:
        return self.root / NAME

    def run(self, source: str) -> None:
        """A cell that must succeed (setting a case up)."""
        self.ip.run_cell(source).raise_error()

    def write(self, name: str, data: bytes | str) -> None:
        path = self.folder / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    def csv(self, text: str | bytes) -> None:
        path = self.tmp / "data.csv"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        self.values["csv"] = str(path)

    def sim_board(self):
        self.run("%tinyml_flash --board sim")
        return magics_of(self.ip).current_board

    def fake_board(self, mode: str, **fields) -> None:
        fake = FakeBoard(mode, info_fields(self.folder, **fields))
        self.cleanups.append(fake.close)
        use_stand_in_cli(self.monkeypatch)
        # a scripted sketch, no bootloader, is behind the port: the upload is replayed
        self.monkeypatch.setenv("FAKE_ARDUINO_CLI", "upload=recorded")
        self.values["port"] = fake.port


@dataclass
class Case:
    source: str
    fragment: str
    setup: Callable[[Ctx], None] | None = None


def _kill(board) -> None:
    os.kill(board.process.pid, signal.SIGKILL)
    board.process._proc.wait(10)


def _gone_mid_stream(ctx: Ctx) -> None:
    board = ctx.sim_board()
    link = board.link
    real_write, writes = link._write, []

    def write(data, doing):
        writes.append(data)
        if len(writes) == 3:  # the test set is streaming: the simulator dies under it
            _kill(board)
        return real_write(data, doing)

    link._write = write


def _busy_port(ctx: Ctx) -> None:
    import subprocess
    import sys

    from ipytinyml.toolchain.sim import VirtualBoard
    uno = VirtualBoard(bootloader=True)
    ctx.cleanups.append(uno.close)
    device = ctx.tmp / "ttyACM0"
    device.symlink_to(uno.port)
    # another program has the port open (a serial monitor)
    holder = subprocess.Popen([sys.executable, "-c", f"import serial, time; s = serial.Serial({str(device)!r}); "
                               "print('open', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    ctx.cleanups.append(lambda: (holder.kill(), holder.wait()))
    assert holder.stdout.readline().strip() == "open"
    use_stand_in_cli(ctx.monkeypatch)
    ctx.values["port"] = str(device)


def _no_toolchain(ctx: Ctx) -> None:
    shutil.rmtree(ctx.folder / "build" / "sim")  # no cached build: the compiler is needed
    empty = ctx.tmp / "empty-bin"
    empty.mkdir()
    ctx.monkeypatch.setenv("PATH", str(empty))


def _no_arduino_cli(ctx: Ctx) -> None:
    ctx.monkeypatch.delenv("IPYTINYML_ARDUINO_CLI", raising=False)
    empty = ctx.tmp / "empty-bin"
    empty.mkdir()
    ctx.monkeypatch.setenv("PATH", str(empty))


def _no_posix_modules(ctx: Ctx) -> None:
    """Python as on Windows: no fcntl, termios or pty (importing them raises ImportError)."""
    import sys

    from ipytinyml.toolchain.sim import PLATFORM_MODULES
    for module in PLATFORM_MODULES:
        ctx.monkeypatch.setitem(sys.modules, module, None)


def _namespace(**values):
    def setup(ctx: Ctx) -> None:
        ctx.ip.user_ns.update(values)
        ctx.cleanups.append(lambda: [ctx.ip.user_ns.pop(k, None) for k in values])
    return setup


def _empty_frame(ctx: Ctx) -> None:
    import pandas as pd
    _namespace(empty_df=pd.DataFrame({"horsepower": [], "mpg": []}))(ctx)


def _npz(**arrays) -> bytes:
    import io

    import numpy as np
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy(values) -> bytes:
    import io

    import numpy as np
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values))
    return buffer.getvalue()


def _other_keras(ctx: Ctx) -> bytes:
    """Another real model.keras (the saved one with its last kernel changed)."""
    from ipytinyml import artifacts
    model = artifacts.load_keras(ctx.folder)
    model.layers[-1].kernel.assign(model.layers[-1].kernel.numpy() * 1.01)
    artifacts.save_keras(model, ctx.tmp)
    return (ctx.tmp / "model.keras").read_bytes()


def _truncate(name: str, keep: float):
    def setup(ctx: Ctx) -> None:
        data = (ctx.folder / name).read_bytes()
        ctx.write(name, data[:int(len(data) * keep)])
    return setup


def _write(name: str, data):
    return lambda ctx: ctx.write(name, data)


def _remove(name: str):
    return lambda ctx: (ctx.folder / name).unlink()


def _csv(text):
    return lambda ctx: ctx.csv(text)


def _then(*setups):
    def setup(ctx: Ctx) -> None:
        for s in setups:
            s(ctx)
    return setup


ROWS = "".join(f"{i},{2 * i}\n" for i in range(30))
GOOD_CSV_HEAD = "hp,mpg\n"
TRAIN_CSV = "%tinyml_train --data {csv} --features hp --label mpg --name csv_model --epochs 2"

CASES: dict[str, Case] = {
    # -- %%tinyml_train: options and names
    "train unknown option": Case("%%tinyml_train --bogus 1\n# x\n", "unrecognized arguments"),
    "train epochs not a number": Case("%tinyml_train --epochs abc", "invalid int value"),
    "train zero epochs": Case("%tinyml_train --epochs 0", "epochs"),
    "train negative epochs": Case("%tinyml_train --epochs -5", "epochs"),
    "train seed not a number": Case("%tinyml_train --seed 1.5", "invalid int value"),
    "train unknown dataset": Case("%tinyml_train --data autompgg", "did you mean 'autompg'"),
    "train missing file": Case("%tinyml_train --data nosuch.csv", "no such data file"),
    "train unknown feature": Case("%tinyml_train --features horsepowr", "did you mean 'horsepower'"),
    "train unknown label": Case("%tinyml_train --label mppg", "did you mean 'mpg'"),
    "train label is a feature": Case("%tinyml_train --features mpg --label mpg", "both a feature and"),
    "train no features": Case("%tinyml_train --features ,", "no feature columns"),
    "train name with ..": Case("%tinyml_train --name ../x", "not a plain identifier"),
    "train absolute name": Case("%tinyml_train --name /tmp/x", "not a plain identifier"),
    "train unmatched quote": Case('%tinyml_train --features "model_year', "unmatched quote"),
    "train cell unmatched quote": Case("%%tinyml_train --name 'other\n# x\n", "unmatched quote"),
    "train quoted name keeps no quotes": Case("%tinyml_train --name 'a b'", "name 'a b' is not"),
    "train not a DataFrame": Case("%tinyml_train --data not_a_frame", "not a pandas DataFrame",
                                  _namespace(not_a_frame=[1, 2, 3])),
    "train empty DataFrame": Case("%tinyml_train --data empty_df", "DataError", _empty_frame),
    # -- CSV files
    "csv text column": Case(TRAIN_CSV, "not numeric", _csv(GOOD_CSV_HEAD + ROWS + "abc,3\n")),
    "csv NaN label": Case(TRAIN_CSV, "missing value", _csv(GOOD_CSV_HEAD + ROWS + "5,nan\n")),
    "csv one row": Case(TRAIN_CSV, "usable row", _csv(GOOD_CSV_HEAD + "1,2\n")),
    "csv header only": Case(TRAIN_CSV, "DataError", _csv(GOOD_CSV_HEAD)),
    "csv duplicate columns": Case(TRAIN_CSV, "repeats column", _csv("hp,mpg,hp\n" + "1,2,3\n" * 30)),
    "csv empty file": Case(TRAIN_CSV, "empty", _csv("")),
    "csv binary": Case(TRAIN_CSV, "DataError", _csv(bytes(range(256)) * 4)),
    "csv infinite value": Case(TRAIN_CSV, "infinite", _csv(GOOD_CSV_HEAD + ROWS + "inf,3\n")),
    "csv one column": Case(TRAIN_CSV, "column", _csv("hp\n" + "1\n" * 30)),
    # -- %%tinyml_train cell bodies
    "body raises": Case("%%tinyml_train --name other\nmodel = 1 / 0\n", "ZeroDivisionError"),
    "body defines no model": Case("%%tinyml_train --name other\nx = 1\n", "must define `model`"),
    "body syntax error": Case("%%tinyml_train --name other\nmodel = (\n", "syntax error"),
    "body model not keras": Case("%%tinyml_train --name other\nmodel = 'a string'\n", "keras.Model"),
    "body model wrong inputs": Case(
        "%%tinyml_train --name other\nimport keras\n"
        "model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])\n", "input shape"),
    # -- %tinyml_quantize and the files it reads
    "quantize unknown variant": Case("%tinyml_quantize --variants float32,int9", "did you mean 'int8'"),
    "quantize no variant": Case("%tinyml_quantize --variants ,", "variant"),
    "quantize unknown model": Case("%tinyml_quantize --name hp_mgp", "did you mean 'hp_mpg'"),
    "quantize extra argument": Case("%tinyml_quantize now", "unrecognized arguments"),
    "quantize unmatched quote": Case("%tinyml_quantize --name 'hp_mpg", "unmatched quote"),
    "report.json not JSON": Case("%tinyml_quantize", "report.json", _write("report.json", "{not json")),
    "report.json binary": Case("%tinyml_quantize", "report.json", _write("report.json", b"\xff\xfe\x00")),
    "report.json a list": Case("%tinyml_quantize", "report.json", _write("report.json", "[1, 2]")),
    "report.json no variants": Case("%tinyml_quantize", "report.json", _write("report.json", '{"name": "hp_mpg"}')),
    "model.keras garbage": Case("%tinyml_quantize", "model.keras", _write("model.keras", b"PK\x03\x04" + bytes(500))),
    "model.keras truncated": Case("%tinyml_quantize", "model.keras", _truncate("model.keras", 0.5)),
    "model.keras of an interrupted training": Case("%tinyml_quantize", "interrupted", lambda ctx: ctx.write(
        "model.keras", ctx.values.setdefault("other_keras", _other_keras(ctx)))),
    "model.keras missing": Case("%tinyml_quantize", "trained model", _remove("model.keras")),
    "data.npz garbage": Case("%tinyml_quantize", "data split", _write("data.npz", b"\x93NUMPY garbage")),
    "data.npz truncated": Case("%tinyml_quantize", "data split", _truncate("data.npz", 0.5)),
    "data.npz wrong arrays": Case("%tinyml_quantize", "data split", _write("data.npz", _npz(x=[1.0]))),
    "data.npz a bare .npy": Case("%tinyml_quantize", "data split", lambda ctx: ctx.write(
        "data.npz", _npy([1.0, 2.0]))),
    "data.npz missing": Case("%tinyml_quantize", "data split", _remove("data.npz")),
    # -- %tinyml_flash and the .tflite reader
    "flash unknown board": Case("%tinyml_flash --board unoo", "did you mean 'uno'"),
    "flash unknown runtime": Case("%tinyml_flash --runtime cuda", "invalid choice"),
    "flash tflm on the Uno": Case("%tinyml_flash --board sim --runtime tflm", "32-bit"),
    "flash bad FQBN": Case("%tinyml_flash --board arduino:avr:uno;reboot", "unknown board"),
    "flash port like an option": Case("%tinyml_flash --board uno --port=-rf", "not a serial port",
                                      lambda ctx: use_stand_in_cli(ctx.monkeypatch)),
    "flash unmatched quote": Case('%tinyml_flash --port "/dev/ttyACM0', "unmatched quote"),
    "flash port with the virtual board": Case("%tinyml_flash --board sim --port /dev/ttyACM0",
                                              "--port /dev/ttyACM0 is for a real board"),
    "flash virtual board without fcntl": Case("%tinyml_flash --board sim", "not supported on this system",
                                              _no_posix_modules),
    "tflite not a model": Case("%tinyml_flash --board sim", "ConvertError", _write("model_int8.tflite", "hello")),
    "tflite truncated": Case("%tinyml_flash --board sim", "ConvertError", _truncate("model_int8.tflite", 0.6)),
    "tflite empty": Case("%tinyml_flash --board sim", "empty", _write("model_int8.tflite", b"")),
    "tflite float model": Case("%tinyml_flash --board sim", "ConvertError", lambda ctx: ctx.write(
        "model_int8.tflite", (ctx.folder / "model_float32.tflite").read_bytes())),
    "tflite missing": Case("%tinyml_flash --board sim", "%tinyml_quantize", _remove("model_int8.tflite")),
    "tflite older than training": Case("%tinyml_flash --board sim", "%tinyml_quantize",
                                       lambda ctx: ctx.run("%tinyml_train --epochs 2 --seed 1")),
    "missing toolchain": Case("%tinyml_flash --board sim", "gcc-avr, binutils-avr, gcc, avrdude;",
                              _no_toolchain),
    "no arduino-cli": Case("%tinyml_flash --board nano33ble", "arduino-cli is not installed", _no_arduino_cli),
    "missing board": Case("%tinyml_flash --board uno", "no arduino:avr:uno board found",
                          lambda ctx: use_stand_in_cli(ctx.monkeypatch)),
    "busy port": Case("%tinyml_flash --board uno --port {port}", "busy", _busy_port),
    "garbage on the wire": Case("%tinyml_flash --board uno --port {port}", "garbage",
                                lambda ctx: ctx.fake_board("garbage")),
    "stale model hash": Case("%tinyml_flash --board uno --port {port}", "re-flash",
                             lambda ctx: ctx.fake_board("stale", model_hash="0123456789ab")),
    # -- %tinyml_predict
    "predict unmatched quote": Case("%tinyml_predict '130", "unmatched quote", Ctx.sim_board),
    "predict no board": Case("%tinyml_predict 130", "no board connected"),
    "predict not a number": Case("%tinyml_predict 13O", "not a number", Ctx.sim_board),
    "predict nan": Case("%tinyml_predict nan", "not a number", Ctx.sim_board),
    "predict beyond float32": Case("%tinyml_predict 1e40", "float32 range", Ctx.sim_board),
    "predict nothing": Case("%tinyml_predict", "exactly one", Ctx.sim_board),
    "predict values and test": Case("%tinyml_predict 130 --test", "exactly one", Ctx.sim_board),
    "predict other model": Case("%tinyml_predict 130 --name other", "not 'other'", Ctx.sim_board),
    "predict board re-quantized": Case("%tinyml_predict 130", "older build", _then(
        Ctx.sim_board, lambda ctx: ctx.run("%tinyml_quantize --per-channel"))),
    "predict board gone": Case("%tinyml_predict 130", "LinkError",
                               lambda ctx: _kill(ctx.sim_board())),
    "predict board gone mid-stream": Case("%tinyml_predict --test", "LinkError", _gone_mid_stream),
    "predict garbage mid-session": Case("%tinyml_predict 130", "garbage", _then(
        lambda ctx: ctx.fake_board("babble"),
        lambda ctx: ctx.run(f"%tinyml_flash --board uno --port {ctx.values['port']}"))),
    "predict test with damaged split": Case("%tinyml_predict --test", "data split", _then(
        Ctx.sim_board, _truncate("data.npz", 0.5))),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_one_line_and_loses_nothing(ip, base, tmp_path, monkeypatch, capsys, case):
    spec = CASES[case]
    magics = magics_of(ip)
    root = copy_root(base, tmp_path / "root")
    ip.run_line_magic("config", f"TinyMLMagics.root = {str(root)!r}")
    ctx = Ctx(ip, root, tmp_path, monkeypatch, [], {})
    try:
        if spec.setup:
            spec.setup(ctx)
        before = digests(root)
        capsys.readouterr()
        result = ip.run_cell(spec.source.format(**ctx.values))
        out, err = capsys.readouterr()

        assert type(result.error_in_exec) is UsageError, repr(result.error_in_exec)
        message = str(result.error_in_exec)
        assert "\n" not in message
        assert [ln for ln in err.splitlines() if ln.strip()] == [f"UsageError: {message}"], err
        assert "Traceback" not in out + err
        assert spec.fragment in message, message
        assert digests(root) == before, "a failed step changed saved artifacts"
    finally:
        magics.close_board()
        for cleanup in reversed(ctx.cleanups):
            cleanup()


def test_the_matrix_is_big_enough():
    assert len(CASES) >= 40


NO_POSIX = """
import sys
from IPython.core.interactiveshell import InteractiveShell  # IPython on Linux needs pty itself
shell = InteractiveShell.instance()
for module in ("fcntl", "termios", "pty"):
    sys.modules[module] = None  # import raises ImportError, as on Windows
import importlib, pkgutil
import ipytinyml
for info in pkgutil.walk_packages(ipytinyml.__path__, "ipytinyml."):
    importlib.import_module(info.name)
shell.run_line_magic("load_ext", "ipytinyml")
print("magics:", " ".join(sorted(shell.magics_manager.registry["TinyMLMagics"].magics["line"])))
shell.run_line_magic("config", "TinyMLMagics.root = {root!r}")
result = shell.run_cell("%tinyml_flash --board sim --name hp_mpg")
print("error:", type(result.error_in_exec).__name__)
"""


def test_without_fcntl_termios_pty_the_package_loads_and_the_virtual_board_is_one_line(base, tmp_path):
    """A fresh interpreter with fcntl, termios and pty unimportable (Windows has none of them):
    every ipytinyml module imports, the magics load, and the virtual board is one line saying
    it is unsupported. IPython is imported before the modules are blocked: on Linux it needs
    pty itself (through pexpect), on Windows it does not."""
    import subprocess
    import sys

    import ipytinyml

    root = copy_root(base, tmp_path / "root")
    here = str(Path(ipytinyml.__file__).resolve().parent.parent)  # this checkout's package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, "-c", NO_POSIX.format(root=str(root))], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert "magics: tinyml_flash tinyml_predict tinyml_quantize tinyml_train" in run.stdout, run.stdout
    assert "error: UsageError" in run.stdout, run.stdout
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("UsageError: ToolchainError: the virtual board is "
                                                   "not supported on this system"), run.stderr
    assert "Traceback" not in run.stdout + run.stderr
