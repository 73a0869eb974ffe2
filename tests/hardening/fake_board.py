"""A misbehaving "board" on a pseudo-terminal, for the link's bad-input cases.

The test keeps the pty's master end; the slave path is what the host opens, like
a USB port. A thread answers what the host sends:

- ``garbage``: binary noise, no line ends (a sketch at another baud rate, a modem);
- ``stale``: a well-formed info answer for another model (a board running an old build);
- ``babble``: correct info answers (the real model's), then noise for every other request.
"""
from __future__ import annotations

import os
import random
import re
import select
import threading
import tty


class FakeBoard:
    def __init__(self, mode: str, info_fields: str = "", seed: int = 0):
        self.mode = mode
        self.info_fields = info_fields
        self.rng = random.Random(seed)
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        os.close(slave)  # nobody holds the port until the host opens it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"fake-board-{mode}")
        self._thread.start()

    def _noise(self, n: int = 400) -> bytes:
        return bytes(self.rng.choice([b for b in range(256) if b not in (10, 13)]) for _ in range(n))

    def _serve(self) -> None:
        rx = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 1024)
            except OSError:  # EIO while no one has the slave open
                self._stop.wait(0.02)
                continue
            rx += chunk
            while b"\n" in rx:
                line, _, rest = bytes(rx).partition(b"\n")
                rx = bytearray(rest)
                self._answer(line.strip().decode("ascii", "replace"))

    def _answer(self, line: str) -> None:
        if not line:
            return
        m = re.match(r"!(\d+) i \*[0-9a-fA-F]{6}$", line)  # an info request with its check field
        if self.mode == "garbage" or (self.mode == "babble" and not m):
            reply = self._noise(3000)  # more than a link takes from a line without an end
        elif m:
            reply = f"@{m.group(1)} ok {self.info_fields}\r\n".encode()
        else:
            reply = b"#err 4 unknown command\r\n"
        try:
            os.write(self.master, reply)
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self.master)


def info_fields(model_folder, *, model_hash: str | None = None) -> str:
    """The key=value fields an ipytinyml Uno sketch answers to ``i`` for the saved model in
    ``model_folder`` (its int8 graph and input pre-stage)."""
    from pathlib import Path

    from ipytinyml.deploy import int8_model
    from ipytinyml.prestage import model_hash as stage_hash
    from ipytinyml.quant import plan_from_model
    from ipytinyml.tflite_file import read_tflite

    from .fuzz import f32_bits

    folder = Path(model_folder)
    data, _, stage = int8_model(folder.name, folder.parent)
    plan = plan_from_model(read_tflite(data))
    model_hash = model_hash or stage_hash(data, stage)
    hexes = lambda values: ",".join(f"{f32_bits(v):#010x}" for v in values)  # noqa: E731
    return (f"proto=2 runtime=native board=uno model={model_hash} in={plan.n_inputs} "
            f"out={plan.n_outputs} iscale={f32_bits(plan.input.scale):#010x} "
            f"izp={plan.input.zero_point} oscale={f32_bits(plan.output.scale):#010x} "
            f"ozp={plan.output.zero_point} arena=65 free=1500 max=16 "
            f"imean={hexes(stage.mean)} idiv={hexes(stage.div)}")
