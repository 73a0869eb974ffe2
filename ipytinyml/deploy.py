"""flash and evaluate: model -> sketch -> build -> running board, and the board against the oracle.

Builds are cached by a hash of the generated sketch folder (model bytes and
templates included), so re-flashing an unchanged model skips the compiler.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import numpy as np

from . import artifacts
from .errors import TinyMLError

VIRTUAL_BOARD = "sim"
SIM_FQBN = "arduino:avr:uno"
EVALUATE_CHUNK_VALUES = 128
_BOARD_ALIASES = {"sim": "sim", "virtual": "sim", "auto": "auto", "uno": "uno", "nano33ble": "nano33ble"}


def _stage(progress, name: str) -> None:
    if progress:
        progress(name)


def choose_target(board: str, port: str | None):
    """Resolve ``--board``/``--port``: ``(VIRTUAL_BOARD or a discovery.Target, note or None)``.

    ``auto`` takes a connected board when one is found, else the virtual board, and the
    note says which in one line.
    """
    import difflib

    from .toolchain import arduino_cli, discovery

    key = (board or "auto").strip()
    if key not in _BOARD_ALIASES and ":" not in key:
        close = difflib.get_close_matches(key, list(_BOARD_ALIASES), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "use sim, uno, nano33ble or an FQBN like arduino:avr:uno"
        raise TinyMLError(f"unknown board {board!r}", hint=hint)
    key = _BOARD_ALIASES.get(key, key)
    if key == VIRTUAL_BOARD:
        return VIRTUAL_BOARD, None
    cli = arduino_cli.arduino_cli() if arduino_cli.find_arduino_cli() else None
    if cli is None and key != "auto" and not offline_avr(discovery.resolve_fqbn(key)[1]):
        arduino_cli.arduino_cli()  # raises the one-line "install arduino-cli" error
    found = discovery.list_ports(cli)
    target = discovery.find_board(key, port, cli=cli, ports=found)
    if target is None:
        return VIRTUAL_BOARD, discovery.no_board_note(found)
    if cli is None and not offline_avr(target.fqbn):
        return VIRTUAL_BOARD, (f"Found {target.name} on {target.port}, but arduino-cli is not installed "
                               "to upload to it: using the virtual Arduino Uno (simavr).")
    return target, target.note


def offline_avr(fqbn: str) -> bool:
    """True when ``fqbn`` can be built and uploaded without arduino-cli: an ``arduino:avr`` board
    of Debian's core that avrdude reaches through a serial bootloader (the Uno and its kin)."""
    from .errors import ToolchainError
    from .toolchain.avrdude import upload_settings
    try:
        upload_settings(fqbn)
    except ToolchainError:
        return False
    return True


def _wire_label(text: str) -> str:
    """A column name as the board may print it: the protocol's lines are printable ASCII, so a
    name with a line break, a control character or non-ASCII text cannot split or garble the
    board's human answers (spaces become '_' too, so a label stays one word)."""
    return "".join(c if 33 <= ord(c) < 127 else "_" for c in str(text)) or "_"


def _labels(report: dict) -> tuple[str, str]:
    data = report.get("data", {})
    return (",".join(_wire_label(f) for f in data.get("features", ["x"])),
            _wire_label(data.get("label", "y")))


def _remove_tree(path: Path) -> None:
    """Delete a build folder by renaming it to a hidden name first: a process killed half-way
    through the delete never leaves a folder that still looks like a complete build."""
    import tempfile

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    try:
        grave = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.replace(path, grave / path.name)
    except OSError:
        grave = path
    shutil.rmtree(grave, ignore_errors=True)


def int8_model(name: str, root):
    """``(flatbuffer, report entry, InputStage)`` of a model's saved int8 variant."""
    from .prestage import InputStage
    from .quant import plan_from_model

    folder = artifacts.model_dir(root, name)
    flatbuffer = artifacts.tflite_file(folder, "int8").read_bytes()
    entry = artifacts.read_report(folder)["variants"]["int8"]
    if "input_stage" in entry:
        stage = InputStage.from_json(entry["input_stage"])
    else:  # quantized before the pre-stage existed: plain QUANTIZE
        plan = plan_from_model(flatbuffer)
        stage = InputStage.identity(plan.input.scale, plan.input.zero_point, plan.n_inputs)
    return flatbuffer, entry, stage


def model_hash(name: str, root) -> str:
    """The hash a board running the saved int8 model reports (graph and pre-stage)."""
    from .prestage import model_hash as stage_hash
    flatbuffer, _, stage = int8_model(name, root)
    return stage_hash(flatbuffer, stage)


def generate(name: str, root, target: str = VIRTUAL_BOARD, runtime: str = "native",
             board_name: str = "uno") -> tuple[Path, object, str]:
    """Write the sketch for ``target``; returns (sketch folder, model plan with its pre-stage, model hash).

    The runtime's verdict saved by quantize is checked first, and for an AVR board whether
    the model fits, so an impossible flash is one line before any code is generated.
    """
    from . import runtimes
    from .codegen.fit import native_fit_problem
    from .codegen.sketch import render_native_sketch
    from .codegen.tflm import render_tflm_sketch
    from .prestage import model_hash as stage_hash
    from .quant import plan_from_model
    from .tflite_file import read_tflite

    folder = artifacts.model_dir(root, name)
    flatbuffer, entry, stage = int8_model(name, root)
    runtimes.check(entry, runtime)
    plan = dataclasses.replace(plan_from_model(read_tflite(flatbuffer)), stage=stage)
    report = artifacts.read_report(folder)
    data = report.get("data", {})
    classes = data.get("classes") if data.get("task") == "classification" else None
    if runtime == "native" and (target == VIRTUAL_BOARD or ":avr:" in target):
        problem = native_fit_problem(plan, classes=classes)
        if problem:
            raise TinyMLError(f"model {name!r} does not fit: {problem}")
    feature, label = _labels(report)
    deployed = stage_hash(flatbuffer, stage)
    options = dict(sketch_name=f"tinyml_{name}", board_name=board_name, model_hash=deployed,
                   input_label=feature, output_label=label, stage=stage, classes=classes)
    firmware = folder / "firmware" / target.replace(":", "_")
    if runtime == "tflm":
        sketch = render_tflm_sketch(flatbuffer, plan, firmware, **options)
    else:
        sketch = render_native_sketch(plan, firmware, **options)
    return sketch, plan, deployed


def build(sketch: Path, build_root: Path, fqbn: str = SIM_FQBN):
    """Compile ``sketch`` unless an identical one was built before; returns the BuildResult."""
    import json

    from .codegen.sketch import folder_digest
    from .toolchain.avr_build import BuildResult, build_sketch

    digest = folder_digest(sketch, fqbn)[:16]
    cached = build_root / "cache" / digest
    meta = cached / "build.json"
    if all((cached / f).is_file() for f in ("build.json", "firmware.elf", "firmware.hex")):
        saved = json.loads(meta.read_text())
        return BuildResult(elf=cached / "firmware.elf", hex=cached / "firmware.hex",
                           flash_bytes=saved["flash_bytes"], ram_bytes=saved["ram_bytes"], log="(cached)")
    result = build_sketch(sketch, build_root / "work", fqbn=fqbn)
    staging = build_root / "cache" / f".{digest}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copyfile(result.elf, staging / "firmware.elf")
    shutil.copyfile(result.hex, staging / "firmware.hex")
    (staging / "build.json").write_text(json.dumps({"flash_bytes": result.flash_bytes,
                                                    "ram_bytes": result.ram_bytes}))
    for old in (build_root / "cache").iterdir():  # keep the cache to the latest build
        if old != staging:
            _remove_tree(old)
    os.replace(staging, cached)
    return BuildResult(elf=cached / "firmware.elf", hex=cached / "firmware.hex",
                       flash_bytes=result.flash_bytes, ram_bytes=result.ram_bytes, log=result.log)


def flash(name: str, root, *, board: str = "auto", port: str | None = None,
          runtime: str | None = None, progress=None, release=None):
    """See ``ipytinyml.api.flash``."""
    if runtime not in (None, "native", "tflm"):
        raise TinyMLError(f"unknown runtime {runtime!r}; use native or tflm")
    if port and _BOARD_ALIASES.get((board or "").strip()) == VIRTUAL_BOARD:
        raise TinyMLError(f"port {port!r} is for a real board; the virtual board makes its own port: "
                          "drop the port, or choose board='uno' or 'nano33ble'")
    target, note = choose_target(board, port)
    if note and progress:
        progress(note)
    if target == VIRTUAL_BOARD:
        if runtime == "tflm":
            raise TinyMLError("the tflm runtime needs a 32-bit board (nano33ble); the Uno and the "
                              "virtual board run --runtime native")
        return _flash_virtual(name, root, progress, note)
    return _flash_real(name, root, target, runtime or target.runtime, progress, release)


_sim_board = None  # weakref to the Board connected to the shared virtual Uno


def _flash_virtual(name, root, progress, note):
    """generate -> compile (cached) -> upload with avrdude into the virtual Uno's optiboot -> banner.

    The same steps as a real Uno without arduino-cli, to the one virtual Uno of this process
    (started once, empty, on first use; reflashing restarts nothing). A Board still connected
    to it from an earlier flash is disconnected first, as the upload takes the port.
    """
    import weakref

    from .toolchain.sim import check_virtual_board, virtual_uno

    global _sim_board
    check_virtual_board()  # one line: an unsupported system, or every missing package at once
    _stage(progress, "generate")
    sketch, plan, model_hash = generate(name, root, VIRTUAL_BOARD)
    _stage(progress, "compile")
    result = build(sketch, artifacts.model_dir(root, name) / "build" / VIRTUAL_BOARD)
    _stage(progress, "start")
    uno = virtual_uno()
    previous = _sim_board() if _sim_board is not None else None
    board = _upload_avrdude(name, result, uno.port, SIM_FQBN, None, plan, model_hash, progress,
                            previous, kind=VIRTUAL_BOARD, process=uno, note=note)
    _sim_board = weakref.ref(board)
    return board


def _upload_avrdude(name, result, port, fqbn, identity, plan, model_hash, progress, release, *,
                    kind, process=None, note=None):
    """Upload a BuildResult's hex with avrdude, then connect (shared by the virtual and real Uno)."""
    from .toolchain.avrdude import upload_and_reacquire

    uploaded, port = upload_and_reacquire(result.hex, port, fqbn, identity=identity, release=release,
                                          progress=progress)
    build_info = {"flash_bytes": result.flash_bytes, "ram_bytes": result.ram_bytes, "fqbn": fqbn,
                  "note": note, "port": port, "upload": "avrdude",
                  "upload_s": round(uploaded.seconds, 3)}
    return _connect(port, identity, model_hash, plan, progress, kind=kind, name=name,
                    build=build_info, process=process)


def _connect(port, identity, model_hash, plan, progress, *, kind, name, build, process=None):
    """After an upload: open the port when it is back, wait for the banner, check the model hash."""
    from . import ports
    from .board import Board
    from .link import Link, LinkError

    _stage(progress, "connect")
    link = Link(ports.open_when_ready(port, identity=identity))
    try:
        info = link.check_model(model_hash)
        if info.runtime == "tflm" and not info.arena:
            raise LinkError("TensorFlow Lite Micro could not set up its interpreter on the board; "
                            "check the serial monitor for the reason")
    except BaseException:
        link.close()
        raise
    return Board(link, plan, kind=kind, name=name, build=build, process=process,
                 owns_process=process is None)


def _flash_avrdude(name, root, target, runtime, progress, release):
    """A real AVR board without arduino-cli: Debian's arduino-builder, then avrdude."""
    if runtime == "tflm":
        raise TinyMLError(f"the tflm runtime cannot run on {target.fqbn}; use --runtime native")
    _stage(progress, "generate")
    sketch, plan, model_hash = generate(name, root, target.fqbn, "native",
                                        board_name=target.alias or target.fqbn.split(":")[2])
    _stage(progress, "compile")
    result = build(sketch, artifacts.model_dir(root, name) / "build" / target.fqbn.replace(":", "_"),
                   fqbn=target.fqbn)
    return _upload_avrdude(name, result, target.port, target.fqbn, target.identity, plan, model_hash,
                           progress, release, kind=target.alias or target.fqbn, note=target.note)


def _flash_real(name, root, target, runtime, progress, release):
    """generate -> compile (cached) -> close our port -> upload -> find the port again -> banner."""
    import json

    from .codegen.sketch import folder_digest
    from .codegen.tflm import DEFAULT_HEADER, library_for_header
    from .toolchain.arduino_cli import arduino_cli, find_arduino_cli, upload_and_reacquire

    if find_arduino_cli() is None:
        return _flash_avrdude(name, root, target, runtime, progress, release)
    cli = arduino_cli()
    library = library_for_header(DEFAULT_HEADER) if runtime == "tflm" else None
    cli.check_ready(target.fqbn, library=library, header=DEFAULT_HEADER if library else None)
    _stage(progress, "generate")
    sketch, plan, model_hash = generate(name, root, target.fqbn, runtime,
                                        board_name=target.alias or target.fqbn.split(":")[-1])
    _stage(progress, "compile")
    build_root = artifacts.model_dir(root, name) / "build" / target.fqbn.replace(":", "_")
    out_dir = build_root / folder_digest(sketch, target.fqbn)[:16]
    meta = out_dir / "build.json"
    if meta.is_file():
        sizes = json.loads(meta.read_text())
    else:
        _remove_tree(build_root)
        compiled = cli.compile(sketch, target.fqbn, out_dir)
        sizes = compiled.to_dict()
        artifacts.write_text(meta, json.dumps(sizes))
    _, port = upload_and_reacquire(cli, target.port, target.fqbn, out_dir, identity=target.identity,
                                   release=release, progress=progress)
    return _connect(port, target.identity, model_hash, plan, progress, kind=target.alias or target.fqbn,
                    name=name, build={**sizes, "port": port, "note": target.note})


def evaluate(name: str, root, board, *, progress=None) -> dict:
    """See ``ipytinyml.api.evaluate_on_board``."""
    from .link import BAUDRATE
    from .metrics import metrics
    from .quant import dequantize, evaluate_plan

    if board is None:
        raise TinyMLError("no board connected; run %tinyml_flash (tm.flash) first")
    if board.name != name:
        raise TinyMLError(f"the board runs model {board.name!r}, not {name!r}; flash {name!r} first")
    split = artifacts.load_split(artifacts.model_dir(root, name))
    test_x, test_y = split["test_x"], split["test_y"]
    expected_q = _boards_int8(test_x, board.plan)

    board_q, device_us, cycles, wire_bytes = [], 0.0, 0, [0, 0]
    # Requests inside one call are pipelined on the wire; chunks only pace the progress bar.
    chunk = max(1, EVALUATE_CHUNK_VALUES // board.plan.n_inputs)
    requests = 0
    start = time.perf_counter()
    for first in range(0, len(test_x), chunk):
        rows = test_x[first:first + chunk]
        board_q.append(board.predict_q(rows))
        timing = board.last_timing
        device_us += timing.device_us
        cycles += timing.cycles or 0
        requests += timing.requests
        wire_bytes[0] += timing.tx_bytes
        wire_bytes[1] += timing.rx_bytes
        if progress:
            progress(min(first + chunk, len(test_x)), len(test_x))
    seconds = time.perf_counter() - start
    board_q = np.concatenate(board_q)

    raw = np.arange(-128, 128, dtype=np.int64).repeat(board.plan.n_inputs)
    raw_board = board.predict_raw(raw)
    raw_expected = evaluate_plan(board.plan, raw.reshape(-1, board.plan.n_inputs).astype(np.int8))

    predictions = dequantize(board_q, board.plan.output)
    n = len(test_x)
    info = board.link.info()
    data = artifacts.read_report(artifacts.model_dir(root, name)).get("data", {})
    classes = data.get("classes")
    result = {
        **metrics(data.get("task", "regression"), predictions, test_y, len(classes) if classes else None),
        **({"classes": classes} if classes else {}),
        "clamped_inputs": int(board.plan.input_stage.clamped(test_x).sum()),
        "parity": {"matched": int(np.sum(np.all(board_q == expected_q, axis=1))), "total": n,
                   "runtime": info.runtime,
                   "raw_matched": int(np.sum(np.all(raw_board == raw_expected, axis=1))),
                   "raw_total": int(len(raw_expected)),
                   "oracle": ORACLE},
        "latency": {"device_us": device_us / n, "device_cycles": (cycles / n) if cycles else None,
                    "host_roundtrip_ms": 1000 * seconds / max(1, requests),
                    "predictions_per_s": n / seconds,
                    # what 115200 baud (8N1: 10 bits a byte) allows for the bytes this run exchanged
                    "wire_bound_per_s": n * (BAUDRATE / 10) / max(wire_bytes)},
        "board": {"kind": board.kind, "board": info.board, "port": board.port, **(board.build or {})},
    }
    folder = artifacts.model_dir(root, name)
    report = artifacts.read_report(folder)
    report.update(result)
    artifacts.write_report(folder, report)
    # Per-row values are for the caller's plot (EvaluateResult), not for report.json.
    return {**result, "test_rows": {"board": predictions.tolist(), "actual": np.asarray(test_y).tolist()}}


ORACLE = "the boards' TFLM arithmetic (ipytinyml.quant)"


def _boards_int8(x: np.ndarray, plan) -> np.ndarray:
    """What the boards' TFLM computes for ``x`` behind the input pre-stage, as int8 outputs:
    ``ipytinyml.quant``'s reimplementation of its kernels. Not the tflite-micro wheel: it takes
    a per-tensor layer's ``s_in * s_w`` in double where every compiled TFLM takes it in float32
    (brief 1.3), so it can be 1 LSB off the boards (``quant.plan_from_model``, tests/test_quant.py)."""
    from .quant import evaluate_plan
    return evaluate_plan(plan, plan.input_stage.quantize(x)).astype(np.int64)
