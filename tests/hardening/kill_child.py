"""The process test_kill.py SIGKILLs: it rewrites a model's artifacts in a loop until killed.

    python kill_child.py MODE ROOT PAYLOADS

MODE ``train``, ``quantize``, ``flash``: the atomic writers of ipytinyml.artifacts and
ipytinyml.deploy with real payloads (two versions, A and B, alternating), in the order
the step writes them; no TensorFlow, so it starts in a fraction of a second. ``flash``
runs the real ``deploy.generate`` and ``deploy.build`` (build cache insertion and
eviction), with the compiler replaced by a copy of a real ELF and HEX.

MODE ``tm-train``, ``tm-quantize``: the real ``tm.train`` / ``tm.quantize``
(TensorFlow and all), alternating two settings so that every round changes the files.

Prints READY once a first round is complete, then loops forever.
"""
from __future__ import annotations

import itertools
import os
import shutil
import sys
from pathlib import Path

NAME = "hp_mpg"
ORDER = {  # the files each step writes, in the order it writes them
    "train": ("data.npz", "model.keras", "report.json"),
    "quantize": ("model_float32.tflite", "model_int8.tflite", "report.json"),
}
FQBNS = ("arduino:avr:uno", "arduino:avr:uno:cpu=atmega328")


def main(mode: str, root: str, payloads: str) -> None:
    root, payloads = Path(root), Path(payloads)
    folder = root / NAME
    rounds = itertools.count()
    if mode in ORDER:
        from ipytinyml import artifacts
        data = {v: {f: (payloads / v / f).read_bytes() for f in ORDER[mode]} for v in "AB"}
        for n in rounds:
            version = "AB"[n % 2]
            for file in ORDER[mode]:
                artifacts.write_bytes(folder / file, data[version][file])
            ready(n)
    elif mode == "flash":
        from ipytinyml import deploy
        from ipytinyml.toolchain import avr_build

        def fake_build(sketch, build_dir, fqbn="arduino:avr:uno", **_):
            build_dir = Path(build_dir)
            build_dir.mkdir(parents=True, exist_ok=True)
            for ext in ("elf", "hex"):
                shutil.copyfile(payloads / f"firmware.{ext}", build_dir / f"{sketch.name}.ino.{ext}")
            return avr_build.BuildResult(elf=build_dir / f"{sketch.name}.ino.elf",
                                         hex=build_dir / f"{sketch.name}.ino.hex",
                                         flash_bytes=1234, ram_bytes=56, log="")

        avr_build.build_sketch = fake_build
        for n in rounds:
            sketch, _, _ = deploy.generate(NAME, root)
            deploy.build(sketch, folder / "build" / "sim", fqbn=FQBNS[n % 2])
            ready(n)
    elif mode in ("tm-train", "tm-quantize"):
        import ipytinyml as tm
        for n in rounds:
            if mode == "tm-train":
                tm.train(name=NAME, root=root, epochs=3, seed=n % 2)
            else:
                tm.quantize(name=NAME, root=root, per_channel=bool(n % 2))
            ready(n)
    else:
        raise SystemExit(f"unknown mode {mode}")


def ready(n: int) -> None:
    if n == 0:
        os.write(1, b"READY\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
