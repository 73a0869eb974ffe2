"""AVR cycles of the input pre-stage per value (the virtual Uno, simavr).

The protocol's own code (firmware_templates/common/tinyml_protocol.cpp, included
by a measuring sketch so its static functions are reachable) is built for the
Uno with avr-gcc -Os and run in simavr. For each case a decimal is parsed as
the board parses it, then Timer1 (clk/1, overflow-counted, the protocol's own
tinyml_port_cycles_begin/end) measures:

- ``sub``: fl32(x - mean) (sub_f32), the new part of the pre-stage;
- ``quantize``: QUANTIZE by the divisor (quantize), which every sketch ran before.

Cycles include ~20 of measurement. ``python benchmarks/bench_prestage_cycles.py [--json out]``
"""
from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

# (label, typed x, mean, divisor)
CASES = [
    ("identity (mean 0)", "130", 0.0, 0.0246),
    ("near the mean", "130", 104.47, 1.5094),
    ("3 std away", "219.9", 104.47, 1.5094),
    ("x == mean", "104.47", 104.47, 1.5094),
    ("x = 0", "0", 104.47, 1.5094),
    ("small features", "-0.0011", -0.00123, 1.635e-5),
    ("big features", "4.1e6", 3.2e6, 43137.26),
    ("far outside: 1e30", "1e30", 104.47, 1.5094),
    ("far outside: 3.4e38 vs mean 1", "3.4e38", 1.0, 1.5094),
    ("tiny x vs huge mean", "1e-30", 1e30, 1e28),
]

SKETCH = r"""
// Measures the pre-stage's steps with the protocol's own Timer1 cycle counter.
#include "proto_impl.h"

struct Case { const char *x; uint32_t mean, div; };
static const Case cases[] = {
%(cases)s
};

void setup() {
  Serial.begin(115200);
  for (uint8_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int8_t q = 0;
    strcpy(line, cases[i].x);
    cur = line;
    parse_value('p', &q);
    tinyml_port_cycles_begin();
    sub_f32(cases[i].mean);
    uint32_t sub = tinyml_port_cycles_end();
    tinyml_port_cycles_begin();
    q = quantize(cases[i].div);
    uint32_t quant = tinyml_port_cycles_end();
    Serial.print(i);
    Serial.print(' ');
    Serial.print(sub);
    Serial.print(' ');
    Serial.print(quant);
    Serial.print(' ');
    Serial.println(q);
  }
  Serial.println("done");
}

void loop() {}
"""


def _bits(v: float) -> int:
    return struct.unpack("<I", struct.pack("<f", v))[0]


def run() -> list[dict]:
    import serial

    from fake_model import avr_uno
    from ipytinyml.prestage import InputStage
    from ipytinyml.toolchain.sim import VirtualBoard, harness_path

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sk = tmp / "stage_cycles"
        sk.mkdir()
        common = ROOT / "firmware_templates" / "common"
        for f in ("tinyml_protocol.h", "tinyml_port.h"):
            shutil.copy(common / f, sk)
        shutil.copy(common / "tinyml_protocol.cpp", sk / "proto_impl.h")
        shutil.copy(ROOT / "tests" / "fake_model" / "tinyml_model.cpp", sk)
        shutil.copy(ROOT / "tests" / "fake_model" / "tinyml_model.h", sk)
        rows = ",\n".join(f'  {{"{x}", {_bits(m):#010x}UL, {_bits(d):#010x}UL}}'
                          for _, x, m, d in CASES)
        (sk / "stage_cycles.ino").write_text(SKETCH % {"cases": rows})
        core = avr_uno.build_core(tmp / "core")
        elf, _ = avr_uno.build_sketch(sk, tmp / "build", core, warnings=())
        with VirtualBoard(elf, harness=harness_path(), speed=0) as vb, \
                serial.Serial(vb.port, 115200, timeout=20) as ser:
            lines = []
            while True:
                line = ser.readline().decode().strip()
                if not line or line == "done":
                    break
                lines.append(line)
    out = []
    for (label, x, m, d), line in zip(CASES, lines):
        i, sub, quant, q = (int(v) for v in line.split())
        stage = InputStage(mean=(float(struct.unpack("<f", struct.pack("<f", m))[0]),),
                           div=(float(struct.unpack("<f", struct.pack("<f", d))[0]),),
                           zero_point=-128)  # the fake model's input zero point
        want = int(stage.quantize([float(x)])[0, 0])
        out.append({"case": label, "x": x, "mean": m, "div": d, "sub_cycles": sub,
                    "quantize_cycles": quant, "q": q, "reference_q": want})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = run()
    for r in rows:
        ok = "ok" if r["q"] == r["reference_q"] else f"MISMATCH (reference {r['reference_q']})"
        print(f"{r['case']:32s} sub {r['sub_cycles']:5d} cycles, quantize {r['quantize_cycles']:5d} "
              f"cycles, q={r['q']} {ok}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
