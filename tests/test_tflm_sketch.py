"""The generated TFLM sketch (ipytinyml/codegen/tflm.py, firmware_templates/tflm/).

Real: TensorFlow-trained and converted ``.tflite`` models (the session
fixture ``tflite_models``), our reader, tflite-micro's arena measurement,
host g++ compiling the generated C++ together with the shared protocol code
from ``firmware_templates/common/``, and that program run over stdin/stdout.

Stand-ins (the real TFLM library and Arduino core cannot be installed here):
the TFLM and Arduino headers are our own declaration stubs in
``tests/tflm_stubs/`` (same names and signatures as the Arduino TFLM ports),
so the C++ is checked for syntax and warnings, not linked against TFLM. The
run test links the stubs' fake interpreter, whose model is the identity on
int8 codes with TFLM's float QUANTIZE/DEQUANTIZE at the ends: it checks the
sketch's glue (exact float round trips, error lines), not TFLM's kernels.
"""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from fake_model import ref

from ipytinyml.codegen import tflm
from ipytinyml.errors import ConvertError
from ipytinyml.quant import plan_from_model
from ipytinyml.tflite_file import read_tflite

ROOT = Path(__file__).resolve().parent.parent
STUBS = Path(__file__).resolve().parent / "tflm_stubs"
COMMON = ROOT / "firmware_templates" / "common"
GXX = shutil.which("g++")
needs_gxx = pytest.mark.skipif(GXX is None, reason="host g++ is not installed")
needs_protocol = pytest.mark.skipif(not (COMMON / "tinyml_protocol.cpp").is_file(),
                                    reason="firmware_templates/common/ protocol files not there yet")
CXXFLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-DARDUINO=10819"]


def _generate(path: Path, out: Path, **kw) -> tuple[list[Path], bytes, object]:
    data = path.read_bytes()
    model = read_tflite(data)
    plan = plan_from_model(model)
    kw.setdefault("model_hash", model.model_hash)
    kw.setdefault("input_label", "horsepower")
    kw.setdefault("output_label", "mpg")
    kw.setdefault("board_name", "nano33ble")
    return tflm.generate_tflm(data, plan, out, **kw), data, plan


def _ino_as_cpp(sketch: Path) -> Path:
    """What the Arduino builder does to the .ino: prepend Arduino.h, compile as C++."""
    ino = next(sketch.glob("*.ino"))
    cpp = sketch / f"{ino.stem}_ino.cpp"
    cpp.write_text(f'#include <Arduino.h>\n#line 1 "{ino.name}"\n' + ino.read_text())
    return cpp


def _sources(sketch: Path) -> list[Path]:
    return [_ino_as_cpp(sketch), sketch / "tinyml_model.cpp", sketch / "model.cpp",
            sketch / "tinyml_protocol.cpp"]


def _gxx(args, cwd=None):
    proc = subprocess.run([GXX, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _define(name: str, header: str) -> str:
    found = re.search(rf"^#define {name} (.+?)(?:\s+/\*.*)?$", header, re.M)
    assert found, name
    return found.group(1).strip()


# ---------------------------------------------------------------------------- generation


def test_files_written(tflite_models, tmp_path):
    files, _, _ = _generate(tflite_models["int8"], tmp_path / "tinyml_hp")
    names = [f.name for f in files]
    assert names[0] == "tinyml_hp.ino"
    assert set(names) == {"tinyml_hp.ino", "model.h", "model.cpp", "tinyml_model.h", "tinyml_model.cpp",
                          "tinyml_port.h", "tinyml_protocol.h", "tinyml_protocol.cpp"}
    ino = (tmp_path / "tinyml_hp" / "tinyml_hp.ino").read_text()
    assert "#include <Chirale_TensorFlowLite.h>" in ino
    assert "while (!Serial && millis() < 3000)" in ino
    code = "\n".join(ln.split("//")[0] for ln in ino.splitlines())
    assert not re.search(r"while \(!Serial\)", code)
    assert 'TINYML_FLASH("nano33ble")' in ino
    for name in ("tinyml_port.h", "tinyml_protocol.h", "tinyml_protocol.cpp"):
        assert (tmp_path / "tinyml_hp" / name).read_bytes() == (COMMON / name).read_bytes()


def test_header_is_selectable(tflite_models, tmp_path):
    _generate(tflite_models["int8"], tmp_path / "s", header="TensorFlowLite.h")
    assert "#include <TensorFlowLite.h>" in (tmp_path / "s" / "s.ino").read_text()
    assert "#include <TensorFlowLite.h>" in (tmp_path / "s" / "tinyml_model.cpp").read_text()
    assert tflm.library_for_header("TensorFlowLite.h") == "Arduino_TensorFlowLite"
    assert tflm.library_for_header("Chirale_TensorFlowLite.h") == "Chirale_TensorFLowLite"
    with pytest.raises(ConvertError, match="unknown TFLM header"):
        _generate(tflite_models["int8"], tmp_path / "t", header="tflm.h")


def test_output_is_deterministic(tflite_models, tmp_path):
    _generate(tflite_models["int8"], tmp_path / "a" / "sk", arena_bytes=1500)
    _generate(tflite_models["int8"], tmp_path / "b" / "sk", arena_bytes=1500)
    for f in (tmp_path / "a" / "sk").iterdir():
        assert f.read_bytes() == (tmp_path / "b" / "sk" / f.name).read_bytes(), f.name


@pytest.mark.parametrize("key", ["int8", "int8_io", "relu6", "two_hidden"])
def test_model_array_round_trips(tflite_models, tmp_path, key):
    _, data, _ = _generate(tflite_models[key], tmp_path / "sk")
    text = (tmp_path / "sk" / "model.cpp").read_text()
    assert "alignas(16) const unsigned char tinyml_model_data[] = {" in text
    assert "PROGMEM" not in text.split("#include")[1]  # only the comment may say it
    body = text.split("= {", 1)[1].split("};", 1)[0]
    lines = [ln for ln in body.splitlines() if ln.strip()]
    assert all(len(ln.split(",")) - (0 if ln is lines[-1] else 1) == tflm.BYTES_PER_LINE
               for ln in lines[:-1])
    parsed = bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body))
    assert parsed == data
    assert f"tinyml_model_data_len = {len(data)};" in text
    header = (tmp_path / "sk" / "model.h").read_text()
    assert "extern const unsigned char tinyml_model_data[];" in header
    assert "#ifndef TINYML_MODEL_DATA_H" in header


@pytest.mark.parametrize("key", ["int8", "int8_io", "relu6", "two_hidden"])
def test_op_resolver_registers_exactly_the_models_ops(tflite_models, tmp_path, key):
    _generate(tflite_models[key], tmp_path / "sk")
    source = (tmp_path / "sk" / "tinyml_model.cpp").read_text()
    registered = re.findall(r"resolver\.(Add\w+)\(\) != kTfLiteOk\) return kTfLiteError;  // (\w+)", source)
    ops = list(dict.fromkeys(read_tflite(tflite_models[key]).op_names))
    assert [op for _, op in registered] == ops
    assert [m for m, _ in registered] == [tflm.OP_REGISTRATIONS[op] for op in ops]
    assert f"constexpr unsigned int kOpCount = {len(ops)};" in source
    expected = {"int8": ["QUANTIZE", "FULLY_CONNECTED", "DEQUANTIZE"], "int8_io": ["FULLY_CONNECTED"]}
    if key in expected:
        assert ops == expected[key]


@pytest.mark.parametrize("key", ["int8", "int8_io", "two_hidden"])
def test_arena_is_the_measurement_plus_the_margin(tflite_models, tmp_path, key):
    from ipytinyml.reference import micro_arena_bytes

    pytest.importorskip("tflite_micro")
    _, data, plan = _generate(tflite_models[key], tmp_path / "sk")
    measured = micro_arena_bytes(data)
    header = (tmp_path / "sk" / "tinyml_model.h").read_text()
    size = int(_define("TINYML_ARENA_SIZE", header))
    scratch = sum((4 * layer.n_out + 15) // 16 * 16 for layer in plan.layers)
    margin = max(1024, measured // 4)
    assert size == (measured + scratch + margin + 15) // 16 * 16
    assert size % 16 == 0 and size >= measured + 1024
    assert f"tflite-micro measured {measured} on the 64-bit host" in header
    assert _define("TINYML_ARENA_BYTES", header) == "(tinyml_model_arena_used())"


def test_arena_fallback_without_tflite_micro(tflite_models):
    data = tflite_models["int8"].read_bytes()
    plan = plan_from_model(data)
    arena = tflm.arena_plan(None, plan, len(data))
    assert arena.size == max(8192, (10 * len(data) + 15) // 16 * 16)
    assert arena.measured is None and "not measured" in arena.source
    with pytest.raises(ConvertError):
        tflm.arena_plan(0, plan, len(data))


@pytest.mark.parametrize("key", ["int8", "int8_io"])
def test_protocol_constants_match_the_plan(tflite_models, tmp_path, key):
    _, data, plan = _generate(tflite_models[key], tmp_path / "sk", input_label='hp "x"')
    header = (tmp_path / "sk" / "tinyml_model.h").read_text()
    bits = lambda f: f"0x{struct.unpack('<I', struct.pack('<f', f))[0]:08x}UL"  # noqa: E731
    assert _define("TINYML_INPUT_SCALE_BITS", header) == bits(plan.input.scale)
    assert _define("TINYML_OUTPUT_SCALE_BITS", header) == bits(plan.output.scale)
    assert int(_define("TINYML_INPUT_ZERO_POINT", header).strip("()")) == plan.input.zero_point
    assert int(_define("TINYML_OUTPUT_ZERO_POINT", header).strip("()")) == plan.output.zero_point
    assert _define("TINYML_RUNTIME", header) == '"tflm"'
    assert _define("TINYML_MODEL_HASH", header) == f'"{read_tflite(data).model_hash}"'
    assert _define("TINYML_INPUT_LABEL", header) == r'"hp \"x\""'
    assert _define("TINYML_FLOAT_INPUT", header) == str(int(plan.float_input))
    assert _define("TINYML_FLOAT_OUTPUT", header) == str(int(plan.float_output))
    assert plan.float_input == (key == "int8")


def test_input_stage_tables(tflite_models, tmp_path):
    """The pre-stage goes into tinyml_model.h as exact float32 bits; None is the identity
    stage; a stage that does not fit the plan is refused in one line, before writing."""
    from ipytinyml.prestage import InputStage, f32_bits

    _, _, plan = _generate(tflite_models["int8"], tmp_path / "id")
    header = (tmp_path / "id" / "tinyml_model.h").read_text()
    rows = re.findall(r"\{(0x[0-9a-f]{8})UL, (0x[0-9a-f]{8})UL\}", header)
    assert rows == [("0x00000000", f"0x{f32_bits(plan.input.scale):08x}")] * plan.n_inputs
    stage = InputStage.standardize([104.47], [38.49], plan.input.scale, plan.input.zero_point)
    _generate(tflite_models["int8"], tmp_path / "st", stage=stage)
    header = (tmp_path / "st" / "tinyml_model.h").read_text()
    assert re.findall(r"\{(0x[0-9a-f]{8})UL, (0x[0-9a-f]{8})UL\}", header) == [
        (f"0x{f32_bits(stage.mean[0]):08x}", f"0x{f32_bits(stage.div[0]):08x}")]
    bad = InputStage.identity(plan.input.scale, plan.input.zero_point + 1, plan.n_inputs)
    for wrong in (bad, InputStage.identity(plan.input.scale, plan.input.zero_point, 2)):
        with pytest.raises(ConvertError) as info:
            tflm.render_tflm_sketch(tflite_models["int8"].read_bytes(), plan, tmp_path / "bad",
                                    sketch_name="sk", board_name="nano33ble", model_hash="ab",
                                    input_label="x", output_label="y", stage=wrong)
        assert "pre-stage" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "bad").exists()


@needs_gxx
@needs_protocol
def test_input_stage_on_the_tflm_host_board(tflite_models, tmp_path):
    """The generated TFLM sketch applies the stage: the stub model copies its int8 input
    to its output, so 'p' answers are the board's int8 inputs == InputStage.quantize;
    the info answer carries the tables."""
    import numpy as np

    from ipytinyml.prestage import InputStage, f32_bits

    plan = plan_from_model(tflite_models["int8_io"])
    stage = InputStage.standardize([104.47], [38.49], plan.input.scale, plan.input.zero_point)
    exe, _ = _host_board(tflite_models["int8_io"], tmp_path, stage=stage)
    div, mean = np.float32(stage.div[0]), np.float32(stage.mean[0])
    xs = [float(np.float32(mean + np.float32((k + 0.5) * div))) for k in range(-130, 130)]
    xs += [0.0, -0.0, 1e30, -1e30, 3.4e38, -3.4e38, float(mean), 46.0, 230.0, 1e-38]
    tokens = [np.format_float_positional(np.float32(x), unique=True, trim="-") for x in xs]
    out = _run(exe, ["!1 i"] + [f"!{i + 2} p {t}" for i, t in enumerate(tokens)])
    assert out[1].endswith(f" imean=0x{f32_bits(stage.mean[0]):08x} idiv=0x{f32_bits(stage.div[0]):08x}")
    want = stage.quantize(np.array(xs, dtype=np.float32)).ravel().tolist()
    got = [int(line.split()[2]) for line in out[2:]]
    assert got == want


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("key", ["int8_pc", "int8_pc_io"])
def test_per_channel_model_is_refused(tflite_models, tmp_path, key):
    with pytest.raises(ConvertError) as info:
        _generate(tflite_models[key], tmp_path / "sk")
    text = str(info.value)
    assert "per-channel" in text and "--runtime native" in text and "\n" not in text
    assert not (tmp_path / "sk").exists()


def test_unknown_op_is_refused_by_name():
    with pytest.raises(ConvertError, match="op BUILTIN_250"):
        tflm.op_registrations(["FULLY_CONNECTED", "BUILTIN_250"])
    with pytest.raises(ConvertError, match="op CUSTOM"):
        tflm.op_registrations(["CUSTOM"])


def test_plan_of_another_model_is_refused(tflite_models, tmp_path):
    data = tflite_models["int8"].read_bytes()
    other = plan_from_model(tflite_models["int8_io"])
    with pytest.raises(ConvertError, match="another model"):
        tflm.generate_tflm(data, other, tmp_path / "sk", model_hash="ab", input_label="x",
                           output_label="y", board_name="nano33ble")


def test_bad_names_are_refused(tflite_models, tmp_path):
    with pytest.raises(ConvertError, match="sketch name"):
        _generate(tflite_models["int8"], tmp_path / "bad-name")
    with pytest.raises(ConvertError, match="board name"):
        _generate(tflite_models["int8"], tmp_path / "sk", board_name="nano 33")


# ---------------------------------------------------------------------------- C++ checks


@needs_gxx
@needs_protocol
@pytest.mark.parametrize("key,header", [("int8", "Chirale_TensorFlowLite.h"), ("int8_io", "TensorFlowLite.h"),
                                        ("two_hidden", "Chirale_TensorFlowLite.h")])
def test_sketch_passes_gxx_syntax_check(tflite_models, tmp_path, key, header):
    sketch = tmp_path / "sk"
    _generate(tflite_models[key], sketch, header=header)
    for source in _sources(sketch):
        _gxx([*CXXFLAGS, "-fsyntax-only", f"-I{sketch}", f"-I{STUBS}", str(source)])


@needs_gxx
def test_every_known_registration_exists_in_the_resolver(tmp_path):
    calls = "\n".join(f"  if (r.{m}() != kTfLiteOk) return 1;" for _, m in
                      tflm.op_registrations(tflm.OP_REGISTRATIONS))
    src = tmp_path / "all_ops.cpp"
    src.write_text('#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n'
                   f"int main() {{\n  static tflite::MicroMutableOpResolver<{len(tflm.OP_REGISTRATIONS)}> r;\n"
                   f"{calls}\n  return r.registered() == {len(tflm.OP_REGISTRATIONS)} ? 0 : 2;\n}}\n")
    _gxx([*CXXFLAGS, f"-I{STUBS}", str(src), "-o", str(tmp_path / "all_ops")])
    assert subprocess.run([str(tmp_path / "all_ops")]).returncode == 0


def _host_board(tflite_path: Path, tmp_path: Path, *, arena_need: int | None = None,
                extra=(), in_zp_delta: int = 0, stage=None, classes=None) -> tuple[Path, object]:
    """Generate the sketch and link it with the stub TFLM and Serial into a host program."""
    sketch = tmp_path / "tinyml_hp"
    _, data, plan = _generate(tflite_path, sketch, arena_bytes=1400, stage=stage, classes=classes)
    header = (sketch / "tinyml_model.h").read_text()
    defines = {
        "FAKE_N_IN": plan.n_inputs, "FAKE_N_OUT": plan.n_outputs,
        "FAKE_IN_FLOAT": int(plan.float_input), "FAKE_OUT_FLOAT": int(plan.float_output),
        "FAKE_IN_SCALE_BITS": _define("TINYML_INPUT_SCALE_BITS", header),
        "FAKE_IN_ZP": plan.input.zero_point + in_zp_delta,
        "FAKE_OUT_SCALE_BITS": _define("TINYML_OUTPUT_SCALE_BITS", header),
        "FAKE_OUT_ZP": plan.output.zero_point,
        "FAKE_ARENA_NEED": arena_need if arena_need is not None else 1400,
    }
    exe = tmp_path / "board"
    _gxx([*CXXFLAGS, "-O1", f"-I{sketch}", f"-I{STUBS}", *(f"-D{k}={v}" for k, v in defines.items()),
          *extra, *map(str, _sources(sketch)), str(STUBS / "fake_arduino.cpp"),
          str(STUBS / "fake_tflm.cpp"), "-o", str(exe)])
    return exe, plan


def _run(exe: Path, lines: list[str]) -> list[str]:
    data = "".join(f"{ln}\n" for ln in lines).encode()
    proc = subprocess.run([str(exe)], input=ref.seal_lines(data),  # requests sealed, as Link does
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode("ascii")
    assert text.endswith("\r\n")
    return text[:-2].split("\r\n")


@needs_gxx
@needs_protocol
@pytest.mark.parametrize("key", ["int8", "int8_io"])
def test_glue_returns_every_int8_code_exactly(tflite_models, tmp_path, key):
    """All 256 raw codes through the glue: float I/O dequantizes and re-quantizes exactly."""
    exe, plan = _host_board(tflite_models[key], tmp_path)
    codes = list(range(-128, 128))
    requests = [f"!{i} r " + " ".join(map(str, codes[i * 8:(i + 1) * 8])) for i in range(32)]  # < 80 chars
    out = _run(exe, ["!100 i", *requests])
    assert out[0].startswith("#tinyml ready proto=2 runtime=tflm board=nano33ble model=")
    assert " arena=1400 " in out[1] and out[1].startswith("@100 ok ")
    got = []
    for i, line in enumerate(out[2:]):
        fields = line.split()
        assert fields[:2] == [f"@{i}", "ok"], line
        got += [int(v) for v in fields[2:] if "=" not in v]
    assert got == codes
    assert len(out) == 34  # no "#err" line: the model was set up


@needs_gxx
@needs_protocol
def test_allocate_failure_is_reported_not_hung(tflite_models, tmp_path):
    exe, _ = _host_board(tflite_models["int8"], tmp_path, arena_need=10**6)
    out = _run(exe, ["!1 i", "!2 r 5", "130"])
    assert out[0].startswith("#tinyml ready ")
    size = int(_define("TINYML_ARENA_SIZE", (tmp_path / "tinyml_hp" / "tinyml_model.h").read_text()))
    assert out[1] == f"#err 8 model failed: AllocateTensors failed, arena bytes {size}"
    assert " arena=0 " in out[2]
    assert out[3] == "@2 err 8 model failed"
    assert out[4] == "#err 8 model failed"


@needs_gxx
@needs_protocol
def test_invoke_failure_and_schema_and_quantization_checks(tflite_models, tmp_path):
    exe, _ = _host_board(tflite_models["int8_io"], tmp_path / "invoke", extra=["-DFAKE_FAIL_CODE=99"])
    out = _run(exe, ["!7 r 99", "!8 r 98"])
    assert out[1] == "@7 err 8 model failed"
    assert out[2].startswith("@8 ok 98 us=")  # and the board keeps serving
    exe, _ = _host_board(tflite_models["int8_io"], tmp_path / "schema", extra=["-DTFLITE_SCHEMA_VERSION=4"])
    assert _run(exe, [])[1] == "#err 8 model failed: model schema version 3"
    exe, _ = _host_board(tflite_models["int8_io"], tmp_path / "quant", in_zp_delta=1)
    assert _run(exe, ["!1 r 0"])[1:] == ["#err 8 model failed: input quantization differs from the sketch",
                                         "@1 err 8 model failed"]


def test_render_replaces_the_folder_whole(tflite_models, tmp_path):
    data = tflite_models["int8"].read_bytes()
    plan = plan_from_model(data)
    kw = dict(sketch_name="tinyml_hp", board_name="nano33ble", model_hash="abc", input_label="x",
              output_label="y", arena_bytes=1000)
    target = tflm.render_tflm_sketch(data, plan, tmp_path, **kw)
    (target / "stale.txt").write_text("old")
    assert tflm.render_tflm_sketch(data, plan, tmp_path, **kw) == target
    assert not (target / "stale.txt").exists()
    with pytest.raises(ConvertError):
        tflm.render_tflm_sketch(tflite_models["int8_pc"].read_bytes(), plan_from_model(tflite_models["int8_pc"]),
                                tmp_path, **kw)
    assert (target / "tinyml_hp.ino").is_file()  # the old sketch survives a failed generation
    assert [p.name for p in tmp_path.iterdir()] == ["tinyml_hp"]


@needs_gxx
@needs_protocol
def test_flash_sequence_rehearsal(tflite_models, tmp_path, monkeypatch):
    """The whole real-board sequence, with stand-ins only where hardware would be.

    generate -> check core/library -> compile -> release the link -> upload ->
    find the port -> open it -> Link banner -> check the model hash -> 256 raw
    codes. arduino-cli is the replaying stand-in (tests/fake_arduino_cli); the
    "board" is the generated sketch built on the host with the stub TFLM,
    serving a real pseudo-terminal; the Link, the ports helpers and pyserial
    are real.
    """
    import os
    import tty

    from ipytinyml import ports
    from ipytinyml.link import Link
    from ipytinyml.toolchain import arduino_cli as ac
    from ipytinyml.toolchain import discovery

    fake = Path(__file__).resolve().parent / "fake_arduino_cli" / "arduino-cli"
    monkeypatch.delenv("FAKE_ARDUINO_CLI", raising=False)
    cli = ac.ArduinoCli(fake)
    exe, plan = _host_board(tflite_models["int8"], tmp_path / "host")
    model = read_tflite(tflite_models["int8"])

    master, slave = os.openpty()
    tty.setraw(slave)  # no echo or newline mangling between the board and the host
    device = tmp_path / "ttyACM0"
    device.symlink_to(os.ttyname(slave))
    os.close(slave)  # only the Link opens the board side
    board = None
    try:
        ports_seen = discovery.parse_board_list(cli.board_list())
        target = discovery.find_board("nano33ble", str(device), ports=ports_seen)
        assert target.runtime == "tflm"
        sketch = tflm.render_tflm_sketch(tflite_models["int8"].read_bytes(), plan, tmp_path / "fw",
                                         sketch_name="tinyml_hp", board_name="nano33ble",
                                         model_hash=model.model_hash, input_label="horsepower",
                                         output_label="mpg", arena_bytes=1400)
        cli.check_ready(target.fqbn, library=tflm.library_for_header(tflm.DEFAULT_HEADER),
                        header=tflm.DEFAULT_HEADER)
        built = cli.compile(sketch, target.fqbn, tmp_path / "build")
        assert built.flash_bytes > 0
        old_link = ports.open_serial(str(device))  # a link from a previous flash
        _, port = ac.upload_and_reacquire(cli, target.port, target.fqbn, tmp_path / "build",
                                          identity=target.identity, release=old_link)
        assert not old_link.is_open and port == str(device)
        board = subprocess.Popen([str(exe)], stdin=master, stdout=master)  # the sketch boots
        with Link(ports.open_when_ready(port, identity=target.identity)) as link:
            info = link.check_model(model.model_hash)
            assert (info.runtime, info.board, info.arena) == ("tflm", "nano33ble", 1400)
            codes = list(range(-128, 128))
            assert [row[0] for row in link.predict_raw(codes).raw] == codes
    finally:
        if board is not None:
            board.kill()
            board.wait()
        os.close(master)
