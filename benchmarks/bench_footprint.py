"""Footprint of the generated Uno sketch (protocol + model) over a bare Serial sketch.

Both are built with ``ipytinyml.toolchain.avr_build.build_sketch`` (Debian's
arduino-builder, the Arduino AVR core, avr-gcc -Os with LTO), exactly as
``tm.flash(board="sim")`` builds the virtual board:

- the sketch ``tm.flash`` generates for the default AutoMPG model
  (horsepower -> mpg, 1->64->1, int8, native runtime);
- a bare sketch: ``Serial.begin(115200)`` and an echo loop.

Flash is ``.text + .data``, RAM ``.data + .bss`` (what the Arduino IDE
reports; the stack is not counted). The difference is what ipytinyml adds.

Where the bytes go: the same two sketches are built again without LTO
(``-fno-lto``, everything else equal), so every function keeps its own symbol;
``avr-nm --size-sort -S`` on the two ELFs, with each symbol traced to the
object that defines it (sketch objects) or to neither (libgcc/avr-libc
helpers), gives a per-part breakdown. The LTO build is usually a few hundred
bytes smaller than the sum (inlining); that difference is reported too.

    python benchmarks/bench_footprint.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BARE_SKETCH = """\
// The baseline: the Arduino Serial driver and nothing else.
void setup() {
  Serial.begin(115200);
}

void loop() {
  int c = Serial.read();
  if (c >= 0)
    Serial.write((uint8_t)c);
}
"""

GOAL_FLASH = 3 * 1024
GOAL_RAM = 200

# protocol symbols -> part (anything else in tinyml_protocol.cpp.o: "protocol: line handling")
PARSER = re.compile(r"^(value|parse_value|small_round|round_mantissa|big_mul_add|big_cmp|big_round|"
                    r"big_clear|big_u32|quantize|sub_f32|input_stage|big|big_n|f_mant|f_exp|f_neg)\b")
FORMAT_STRINGS = re.compile(r"(::__c$|^err_texts$|^powers_of_10$)")


def _nm(path: Path) -> list[tuple[int, str, str]]:
    """(size, type, demangled name) of every sized symbol."""
    out = subprocess.run(["avr-nm", "--size-sort", "-S", "-C", str(path)], capture_output=True,
                         text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4:
            rows.append((int(parts[1], 16), parts[2], parts[3]))
    return rows


def _defined(obj: Path) -> set[str]:
    return {name for _, kind, name in _nm(obj) if kind.upper() != "U"}


def _is_ram(kind: str) -> bool:
    return kind in "bBdD"


def _key(name: str) -> str:
    """Demangled name without its argument list, for matching across objects."""
    return name.split("(")[0] if "::__c" not in name else name


def attribute(sketch_elf: Path, bare_elf: Path, sketch_build: Path) -> dict:
    """Per-part flash/RAM of what the sketch adds over the bare build (both without LTO)."""
    bare = {}
    for size, kind, name in _nm(bare_elf):
        bare[(name, _is_ram(kind))] = bare.get((name, _is_ram(kind)), 0) + size
    objects = {}
    for obj in sorted((sketch_build / "sketch").glob("*.o")):
        objects[obj.name] = {_key(n) for n in _defined(obj)}
    parts: dict[str, dict[str, int]] = {}
    symbols = []

    def add(part, ram, size, name):
        entry = parts.setdefault(part, {"flash": 0, "ram": 0})
        entry["ram" if ram else "flash"] += size
        symbols.append({"part": part, "name": name, "bytes": size, "ram": ram})

    for size, kind, name in _nm(sketch_elf):
        ram = _is_ram(kind)
        base = bare.get((name, ram), 0)
        extra = size - base
        if extra == 0:
            continue
        owner = next((o for o, names in objects.items() if _key(name) in names), None)
        if owner is None:
            part = "Arduino core / libgcc helpers" if base else "libgcc/avr-libc helpers"
        elif owner.startswith("tinyml_model"):
            part = "model: tables" if ("progmem" in name or name.endswith(("weights", "channels",
                                                                           "bias", "biases")))\
                else "model: activations" if ram else "model: code"
        elif owner.startswith("tinyml_protocol"):
            if PARSER.match(name):
                part = "protocol: exact decimal parser (float32 + QUANTIZE)"
            elif FORMAT_STRINGS.search(name):
                part = "protocol: strings and tables"
            elif ram:
                part = "protocol: line buffer and state"
            else:
                part = "protocol: line handling, answers, Timer1 cycles"
        else:
            part = "sketch .ino (setup/loop, sleep)"
        add(part, ram, extra, name)
    return {"parts": parts, "symbols": sorted(symbols, key=lambda s: -s["bytes"])}


def build_pair(sketch: Path, work: Path, extra_flags=(), core_cache="auto") -> dict:
    from ipytinyml.toolchain.avr_build import build_sketch

    bare_dir = work / "bare_serial"
    bare_dir.mkdir(parents=True, exist_ok=True)
    (bare_dir / "bare_serial.ino").write_text(BARE_SKETCH)
    tag = "nolto" if extra_flags else "lto"
    ours = build_sketch(sketch, work / f"build_sketch_{tag}", extra_flags=extra_flags,
                        core_cache=core_cache)
    bare = build_sketch(bare_dir, work / f"build_bare_{tag}", extra_flags=extra_flags,
                        core_cache=core_cache)
    return {"sketch": ours, "bare": bare, "sketch_build": work / f"build_sketch_{tag}"}


def protocol_functions(sketch: Path, work: Path) -> list[dict]:
    """Sizes of the protocol's functions with inlining off (-fno-lto -fno-inline), so the
    big inlined ones (tinyml_protocol_poll, value) split into what they are made of.
    The sum is larger than the real (inlined) code; the proportions are what matter."""
    from ipytinyml.toolchain.avr_build import build_sketch

    build = work / "build_sketch_noinline"
    build_sketch(sketch, build, extra_flags=("-fno-lto", "-fno-inline"), core_cache=None)
    rows = [{"name": name, "bytes": size, "ram": _is_ram(kind)}
            for size, kind, name in _nm(build / "sketch" / "tinyml_protocol.cpp.o")
            if kind in "tTrR" and "::__c" not in name]
    return sorted(rows, key=lambda r: -r["bytes"])


def run(work: Path | None = None) -> dict:
    import ipytinyml as tm
    from ipytinyml import deploy

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work or tmp)
        root = work / "tinyml"
        tm.train(name="hp_mpg", root=root)
        tm.quantize(name="hp_mpg", root=root)
        sketch, plan, _ = deploy.generate("hp_mpg", root, deploy.VIRTUAL_BOARD)
        lto = build_pair(sketch, work)
        # attribution builds keep their own core (no writes to the shared core cache)
        nolto = build_pair(sketch, work, extra_flags=("-fno-lto",), core_cache=None)
        breakdown = attribute(nolto["sketch"].elf, nolto["bare"].elf, nolto["sketch_build"])
        functions = protocol_functions(sketch, work)
        s, b = lto["sketch"], lto["bare"]
        result = {
            "model": "1->64->1 (default tm.train, int8 per-tensor, native runtime)",
            "sketch": {"flash": s.flash_bytes, "ram": s.ram_bytes},
            "bare": {"flash": b.flash_bytes, "ram": b.ram_bytes},
            "added": {"flash": s.flash_bytes - b.flash_bytes, "ram": s.ram_bytes - b.ram_bytes},
            "goal": {"flash": GOAL_FLASH, "ram": GOAL_RAM},
            "nolto": {"added_flash": nolto["sketch"].flash_bytes - nolto["bare"].flash_bytes,
                      "added_ram": nolto["sketch"].ram_bytes - nolto["bare"].ram_bytes},
            "breakdown": breakdown["parts"],
            "top_symbols": breakdown["symbols"][:25],
            "protocol_functions_noinline": functions,
        }
        result["met"] = {"flash": result["added"]["flash"] <= GOAL_FLASH,
                         "ram": result["added"]["ram"] <= GOAL_RAM}
        return result


def report(r: dict) -> str:
    lines = [f"sketch {r['sketch']['flash']} B flash / {r['sketch']['ram']} B RAM; bare Serial sketch "
             f"{r['bare']['flash']} / {r['bare']['ram']}",
             f"added by ipytinyml: {r['added']['flash']} B flash (goal <= {GOAL_FLASH}, "
             f"{'met' if r['met']['flash'] else 'MISSED'}), {r['added']['ram']} B RAM (goal <= {GOAL_RAM}, "
             f"{'met' if r['met']['ram'] else 'MISSED'})",
             f"without LTO: {r['nolto']['added_flash']} B flash / {r['nolto']['added_ram']} B RAM added; "
             "by part:"]
    for part, v in sorted(r["breakdown"].items(), key=lambda kv: -kv[1]["flash"] - kv[1]["ram"]):
        lines.append(f"  {part:55s} {v['flash']:5d} B flash {v['ram']:4d} B RAM")
    lines.append("largest symbols (no-LTO build, bytes over the bare sketch):")
    for s in r["top_symbols"][:15]:
        lines.append(f"  {s['bytes']:5d} {'RAM  ' if s['ram'] else 'flash'} {s['name']}  [{s['part']}]")
    lines.append("protocol functions with inlining off (-fno-inline; sizes add up to more than the "
                 "inlined build):")
    lines.append("  " + ", ".join(f"{f['name'].split('(')[0]} {f['bytes']}"
                                  for f in r["protocol_functions_noinline"][:16]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    r = run()
    print(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
