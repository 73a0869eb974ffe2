"""SIGKILL during artifact writes: what was saved before always loads.

A child process (tests/hardening/kill_child.py) rewrites a model's artifacts in a
loop, the way train, quantize and flash write them, and is SIGKILLed after a random
(seeded) delay, so the kill lands anywhere: mid-write, between a file's write and
its rename, between two files of one step. Then, in this process, every artifact
must load with the real readers (``keras.models.load_model``, ``read_tflite``,
``np.load``, ``json``), be byte-for-byte one of the versions written (never a mix
or a truncation), and the next flash must find a usable build.

50 trials: 46 with the atomic writers and real payloads (no TensorFlow in the
child, so each costs well under a second), and 4 with the real ``tm.train`` and
``tm.quantize`` (TensorFlow in the child, run side by side).

Real parts: real files from a real training and conversion, the real writers
(``ipytinyml.artifacts``, ``deploy.generate``, ``deploy.build``'s cache); only
the AVR compiler is replaced, in the flash trials, by a copy of a real ELF/HEX.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hardening.artifacts import NAME, copy_root, digests, pretrained

CHILD = Path(__file__).resolve().parent / "hardening" / "kill_child.py"
LIGHT_MODES = ("train", "quantize", "flash")
LIGHT_TRIALS = 46
HEAVY = [("tm-train", 0), ("tm-quantize", 1), ("tm-train", 2), ("tm-quantize", 3)]
READY_TIMEOUT = 180.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def payloads(tmp_path_factory):
    """Versions A (the pre-trained model) and B (another real one) of every file a step writes,
    and a real firmware ELF/HEX."""
    import ipytinyml as tm
    from ipytinyml import artifacts
    from ipytinyml.data import load_data

    base = pretrained(tmp_path_factory, flashed=True)
    out = tmp_path_factory.mktemp("payloads")
    folder = base / NAME
    for name in ("data.npz", "model.keras", "report.json", "model_float32.tflite", "model_int8.tflite"):
        (out / "A").mkdir(exist_ok=True)
        shutil.copyfile(folder / name, out / "A" / name)

    other = copy_root(base, out / "other")
    model = artifacts.load_keras(other / NAME)
    model.layers[-1].kernel.assign(model.layers[-1].kernel.numpy() * 1.01)
    artifacts.save_keras(model, other / NAME)
    artifacts.save_split(other / NAME, load_data("autompg", ["horsepower"], "mpg", seed=1))
    report = artifacts.read_report(other / NAME)
    report["variants"]["keras"]["sha256"] = sha((other / NAME / "model.keras").read_bytes())
    artifacts.write_report(other / NAME, report)
    (out / "B").mkdir()
    for name in ("data.npz", "model.keras", "report.json"):
        shutil.copyfile(other / NAME / name, out / "B" / name)
    tm.quantize(name=NAME, root=other, per_channel=True)
    for name in ("model_float32.tflite", "model_int8.tflite"):
        shutil.copyfile(other / NAME / name, out / "B" / name)
    # quantize's report.json B: the one quantize just wrote
    shutil.copyfile(other / NAME / "report.json", out / "B" / "report.quantize.json")

    cache = folder / "build" / "sim" / "cache"
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    for ext in ("elf", "hex"):
        shutil.copyfile(entry / f"firmware.{ext}", out / f"firmware.{ext}")
    return {"dir": out, "base": base}


def light_payload_dir(payloads, mode: str, target: Path) -> Path:
    """The A/B files a light child writes in ``mode``."""
    src = payloads["dir"]
    for version in "AB":
        (target / version).mkdir(parents=True)
        for name in ("data.npz", "model.keras", "model_float32.tflite", "model_int8.tflite"):
            shutil.copyfile(src / version / name, target / version / name)
        report = "report.quantize.json" if (mode == "quantize" and version == "B") else "report.json"
        shutil.copyfile(src / version / report, target / version / "report.json")
    for ext in ("elf", "hex"):
        shutil.copyfile(src / f"firmware.{ext}", target / f"firmware.{ext}")
    return target


def start_child(mode: str, root: Path, payload_dir: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]),
               TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, str(CHILD), mode, str(root), str(payload_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def kill_after_ready(proc: subprocess.Popen, delay: float) -> None:
    """Wait for READY (the first round is written), sleep ``delay``, SIGKILL."""
    line = b""
    timer = threading.Timer(READY_TIMEOUT, proc.kill)
    timer.start()
    try:
        line = proc.stdout.readline()
    finally:
        timer.cancel()
    if line.strip() != b"READY":
        proc.kill()
        err = proc.communicate()[1].decode(errors="replace")
        raise AssertionError(f"the child never got ready: {line!r} {err[-2000:]}")
    time.sleep(delay)
    assert proc.poll() is None, proc.communicate()[1].decode(errors="replace")[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    proc.stdout.close()
    proc.stderr.close()


# ------------------------------------------------------------------------------ checks

def check_loads(folder: Path) -> None:
    """Every artifact of the folder loads with the real readers."""
    import keras
    from ipytinyml.quant import plan_from_model
    from ipytinyml.tflite_file import read_tflite

    report = json.loads((folder / "report.json").read_text())
    assert report["name"] == NAME and "keras" in report["variants"]
    model = keras.models.load_model(folder / "model.keras")
    assert model.predict(np.array([[130.0]], dtype=np.float32), verbose=0).shape == (1, 1)
    with np.load(folder / "data.npz") as split:
        assert set(split.files) == {"train_x", "train_y", "test_x", "test_y"}
        assert len(split["train_x"]) + len(split["test_x"]) == 392
    for variant in ("float32", "int8"):
        read_tflite(folder / f"model_{variant}.tflite")
    plan_from_model(read_tflite(folder / "model_int8.tflite"))


def check_versions(folder: Path, payload_dir: Path, files) -> dict[str, str]:
    """Each file is exactly version A or version B: never a mix, a truncation or missing."""
    seen = {}
    for name in files:
        data = (folder / name).read_bytes()
        versions = [v for v in "AB" if (payload_dir / v / name).read_bytes() == data]
        assert versions, f"{name} is neither version after the kill ({len(data)} bytes)"
        seen[name] = versions[0]
    return seen


def check_flash(root: Path, payload_dir: Path) -> None:
    """Every build-cache entry that says it is complete is; the next flash gets a real ELF."""
    check_cache_entries(root, payload_dir)
    check_next_flash(root, payload_dir)


def check_cache_entries(root: Path, payload_dir: Path) -> None:
    cache = root / NAME / "build" / "sim" / "cache"
    for entry in (cache.iterdir() if cache.is_dir() else ()):
        if entry.name.startswith(".") or not (entry / "build.json").is_file():
            continue
        json.loads((entry / "build.json").read_text())
        for ext in ("elf", "hex"):
            assert (entry / f"firmware.{ext}").read_bytes() == (payload_dir / f"firmware.{ext}").read_bytes(), \
                f"cache entry {entry.name} has build.json but no complete firmware.{ext}"


def check_next_flash(root: Path, payload_dir: Path) -> None:
    from ipytinyml import deploy
    from ipytinyml.toolchain import avr_build

    compiled = []

    def fake_build(sketch, build_dir, fqbn="arduino:avr:uno", **_):
        compiled.append(fqbn)
        build_dir = Path(build_dir)
        build_dir.mkdir(parents=True, exist_ok=True)
        for ext in ("elf", "hex"):
            shutil.copyfile(payload_dir / f"firmware.{ext}", build_dir / f"{sketch.name}.ino.{ext}")
        return avr_build.BuildResult(elf=build_dir / f"{sketch.name}.ino.elf",
                                     hex=build_dir / f"{sketch.name}.ino.hex", flash_bytes=1,
                                     ram_bytes=1, log="")

    real = avr_build.build_sketch
    avr_build.build_sketch = fake_build
    try:
        sketch, _, _ = deploy.generate(NAME, root)
        for fqbn in ("arduino:avr:uno", "arduino:avr:uno:cpu=atmega328"):
            result = deploy.build(sketch, root / NAME / "build" / "sim", fqbn=fqbn)
            assert result.elf.read_bytes() == (payload_dir / "firmware.elf").read_bytes()
    finally:
        avr_build.build_sketch = real


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("trial", range(LIGHT_TRIALS))
def test_kill_during_atomic_writes(payloads, tmp_path, trial):
    mode = LIGHT_MODES[trial % len(LIGHT_MODES)]
    rng = random.Random(trial)
    root = copy_root(payloads["base"], tmp_path / "root")
    folder = root / NAME
    payload_dir = light_payload_dir(payloads, mode, tmp_path / "payloads")
    before = digests(folder)
    kill_after_ready(start_child(mode, root, payload_dir), rng.uniform(0.0, 0.15))

    check_loads(folder)
    after = digests(folder)
    if mode in ("train", "quantize"):
        from hardening.kill_child import ORDER
        check_versions(folder, payload_dir, ORDER[mode])
        untouched = {k: v for k, v in before.items() if k.split("/")[0] not in ORDER[mode]
                     and not k.startswith(".")}
        assert {k: after.get(k) for k in untouched} == untouched, "another step's files changed"
    else:
        for name in ("data.npz", "model.keras", "report.json", "model_float32.tflite",
                     "model_int8.tflite"):
            assert after[name] == before[name]
        check_flash(root, payload_dir)


def test_kill_during_real_train_and_quantize(payloads, tmp_path):
    """The real steps, TensorFlow and all, killed at a random point of their loop."""
    procs = []
    for mode, seed in HEAVY:
        root = copy_root(payloads["base"], tmp_path / f"root{seed}")
        delay = random.Random(1000 + seed).uniform(0.0, 3.0)
        procs.append((mode, root, delay, start_child(mode, root, tmp_path)))
    threads = [threading.Thread(target=kill_after_ready, args=(p, d)) for _, _, d, p in procs]
    errors = []
    for t, (_, _, d, p) in zip(threads, procs):
        t.run = (lambda p=p, d=d: _catch(errors, kill_after_ready, p, d))
        t.start()
    for t in threads:
        t.join(READY_TIMEOUT + 60)
    assert not errors, errors
    for mode, root, _, _ in procs:
        check_loads(root / NAME)


def _catch(errors, func, *args):
    try:
        func(*args)
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


class _Killed(BaseException):
    """Stands for SIGKILL arriving at one exact point."""


def test_a_kill_half_way_through_evicting_a_build_leaves_no_entry_that_looks_complete(
        payloads, tmp_path, monkeypatch):
    """The build cache drops the previous build when it adds one. A kill in the middle of that
    delete (here: after one file) must not leave a folder that a later flash of the same
    sketch would take for a complete build."""
    from ipytinyml import deploy
    from ipytinyml.toolchain import avr_build

    root = copy_root(payloads["base"], tmp_path / "root")
    payload_dir = payloads["dir"]
    check_flash(root, payload_dir)  # both FQBNs built once: the cache holds the second
    real_rmtree = shutil.rmtree

    def killed_rmtree(path, *args, **kwargs):
        files = sorted(p for p in Path(path).rglob("*") if p.is_file())
        if not files:
            return real_rmtree(path, *args, **kwargs)
        files[-1].unlink()  # firmware.hex goes first: build.json and firmware.elf are left
        raise _Killed

    def fake_build(sketch, build_dir, fqbn="arduino:avr:uno", **_):
        build_dir = Path(build_dir)
        build_dir.mkdir(parents=True, exist_ok=True)
        for ext in ("elf", "hex"):
            shutil.copyfile(payload_dir / f"firmware.{ext}", build_dir / f"{sketch.name}.ino.{ext}")
        return avr_build.BuildResult(elf=build_dir / f"{sketch.name}.ino.elf",
                                     hex=build_dir / f"{sketch.name}.ino.hex", flash_bytes=1,
                                     ram_bytes=1, log="")

    monkeypatch.setattr(avr_build, "build_sketch", fake_build)
    sketch, _, _ = deploy.generate(NAME, root)
    monkeypatch.setattr(shutil, "rmtree", killed_rmtree)
    with pytest.raises(_Killed):
        deploy.build(sketch, root / NAME / "build" / "sim", fqbn="arduino:avr:uno")
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    check_flash(root, payload_dir)


def test_a_cache_entry_left_incomplete_is_rebuilt(payloads, tmp_path, monkeypatch):
    """An entry with build.json but a missing firmware file (left by an older version, or a
    disk clean-up) is rebuilt, not returned."""
    root = copy_root(payloads["base"], tmp_path / "root")
    cache = root / NAME / "build" / "sim" / "cache"
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    (entry / "firmware.elf").unlink()
    check_next_flash(root, payloads["dir"])
    check_cache_entries(root, payloads["dir"])


def test_quantize_refuses_the_model_of_an_interrupted_training(payloads, tmp_path):
    """train writes data.npz, model.keras, then report.json. Killed after model.keras, the
    folder holds a new model and the old report: quantize must say so (one line), not convert
    the new model under the old model's hash, which would hide it from the stale-build check."""
    import ipytinyml as tm
    from ipytinyml.errors import TinyMLError

    root = copy_root(payloads["base"], tmp_path / "root")
    shutil.copyfile(payloads["dir"] / "B" / "model.keras", root / NAME / "model.keras")
    before = digests(root)
    with pytest.raises(TinyMLError, match="interrupted") as info:
        tm.quantize(name=NAME, root=root)
    assert "\n" not in str(info.value) and "%%tinyml_train" in str(info.value)
    assert digests(root) == before
    check_loads(root / NAME)
