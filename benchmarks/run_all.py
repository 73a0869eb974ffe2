"""Run every benchmark and rewrite BENCHMARKS.md.

    python benchmarks/run_all.py [--only training,serial,...] [--out BENCHMARKS.md]

Each benchmark runs in its own Python process (``python benchmarks/bench_X.py
--json <file>``), one after the other, so none inherits another's caches,
threads or TensorFlow state. The load average is sampled before and after
each one (other work on the machine slows the timing rows; the cycle, byte
and parity rows do not depend on it). A benchmark that fails gets a "failed"
row with its last error line; the others still run. Total: about 4-6 minutes
on 2 cores.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
GOAL_FLASH = 3 * 1024
GOAL_RAM = 200

# name -> (script, extra arguments); run in this order (the timing-sensitive ones first-ish,
# the ones that start simulators after)
BENCHES = {
    "training": ("bench_training.py", ["--seeds", "5"]),
    "own_data": ("bench_own_data.py", ["--seeds", "5"]),
    "cycles": ("bench_native_cycles.py", []),
    "arm": ("bench_arm_icount.py", []),
    "emlearn": ("bench_emlearn.py", []),
    "parity": ("bench_parity.py", []),
    "footprint": ("bench_footprint.py", []),
    "build": ("bench_build.py", []),
    "notebook": ("bench_notebook.py", []),
    "serial": ("bench_serial.py", []),
    "upload": ("bench_upload.py", []),
}


# --------------------------------------------------------------- environment

def _cmd(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> dict:
    lscpu = _cmd(["lscpu"])
    model = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M) \
        if Path("/proc/meminfo").is_file() else None
    versions = {"python": platform.python_version()}
    for label, args in (("avr-gcc", ["avr-gcc", "--version"]), ("arm-none-eabi-gcc", ["arm-none-eabi-gcc", "--version"]),
                        ("qemu-system-arm", ["qemu-system-arm", "--version"]), ("arduino core", None)):
        if args:
            versions[label] = (_cmd(args).splitlines() or [""])[0]
    core = Path("/usr/share/arduino/hardware/arduino/avr/platform.txt")
    if core.is_file():
        v = re.search(r"^version=(.+)$", core.read_text(), re.M)
        versions["arduino core"] = v.group(1) if v else "?"
    simavr = _cmd(["dpkg-query", "-W", "-f", "${Version}", "simavr"])
    versions["simavr"] = simavr or "?"
    try:
        from importlib.metadata import version
        for pkg in ("tensorflow", "keras", "tflite-micro", "emlearn", "jupyter_client", "ipykernel"):
            try:
                versions[pkg] = version(pkg)
            except Exception:  # noqa: BLE001 - not installed
                versions[pkg] = "not installed"
    except ImportError:
        pass
    commit = _cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _cmd(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return {"cpu": model.group(1).strip() if model else platform.processor() or "?",
            "cores": os.cpu_count(), "ram_gb": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
            "os": platform.platform(), "versions": versions,
            "commit": commit + (" (with uncommitted changes to tracked files)" if dirty else ""),
            "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# ------------------------------------------------------------------ running

def run_bench(name: str, log) -> dict:
    script, extra = BENCHES[name]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}.json"
        cmd = [sys.executable, str(HERE / script), *extra, "--json", str(out)]
        shown = " ".join(["python", f"benchmarks/{script}", *extra])
        before = load()
        log(f"== {shown}  (load {before})")
        start = time.perf_counter()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=1800)
        seconds = time.perf_counter() - start
        after = load()
        text = "\n".join(ln for ln in proc.stdout.splitlines() if not ln.startswith(("I0000", "WARNING: All")))
        log(text)
        entry = {"command": shown, "seconds": seconds, "load_before": before, "load_after": after,
                 "output": text}
        if proc.returncode == 0 and out.is_file():
            entry["data"] = json.loads(out.read_text())
        else:
            err = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            entry["error"] = err[-1] if err else f"exit status {proc.returncode}"
            log(f"FAILED: {entry['error']}")
        return entry


# ----------------------------------------------------------------- BENCHMARKS.md

def _met(flag) -> str:
    return "**met**" if flag else "**missed**"


def rows_training(e):
    d = e["data"]
    f32, i8 = d["float32"], d["int8"]
    seeds = ", ".join(f"{r['int8'] - r['float32']:+.3f}" for r in d["rows"])
    worst = max(d["rows"], key=lambda r: abs(r["int8"] - r["float32"]))
    acc_note = "" if d["met"]["int8_every_seed"] else (
        f" (on the means; seed {worst['seed']} alone is {abs(worst['int8'] - worst['float32']):.3f} off: "
        f"putting just the input on the int8 grid ({worst['input_scale']:.2f} hp steps) moves its MAE "
        f"{worst['mae_input_quantized'] - worst['keras']:+.3f}, the output grid "
        f"{worst['mae_input_output_quantized'] - worst['mae_input_quantized']:+.3f}, int8 weights and "
        f"activations the remaining {worst['int8'] - worst['mae_input_output_quantized']:+.3f})")
    acc = (f"float32 {f32['mean']:.3f} ± {f32['sd']:.3f} (5 seeds, {f32['min']:.3f}-{f32['max']:.3f}); "
           f"int8 {i8['mean']:.3f} ± {i8['sd']:.3f}; int8 - float32 per seed {seeds}",
           "float32 <= 2.90; int8 within 0.02 of float32",
           _met(d["met"]["float32"] and d["met"]["int8"]) + acc_note)
    speed = (f"{d['speedup']:.1f}x: {d['train_s']['mean']:.2f} s vs {d['plain_s']['mean']:.2f} s "
             f"(mean of 5); MAE {d['keras']['mean']:.3f} vs {d['plain_mae']['mean']:.3f}",
             ">= 4x faster at equal or better MAE", _met(d["met"]["speed"]))
    return [("accuracy", *acc), ("training speed", *speed)]


def rows_cycles(e):
    data = e["data"]
    if isinstance(data, list):  # bench_native_cycles.py --json writes its rows
        data = {"rows": data, "met": all(r["fast"]["cycles_mean"] <= 10_000 for r in data
                                         if r["model"] == "1->64->1")}
    rows = {(r["model"], r["variant"]): r for r in data["rows"]}

    def c(m, v):
        r = rows.get((m, v))
        return f"{r['fast']['cycles_mean']:,.0f}" if r else "?"
    text = (f"1->64->1: {c('1->64->1', 'per-tensor')} (per-tensor), {c('1->64->1', 'per-channel')} "
            f"(per-channel); 1->32->16->1: {c('1->32->16->1', 'per-tensor')} / "
            f"{c('1->32->16->1', 'per-channel')} (mean of the 256 int8 inputs, bit-exact)")
    classifier = rows.get(("7->32->3 softmax", "per-tensor"))
    if classifier:
        ops = classifier.get("ops", {})
        alone = "; ".join(f"{label} {op['fast']['cycles_mean']:,.0f}" for label, op in ops.items())
        text += (f"; classifier 7->32->3 softmax (AutoMPG origin): {c('7->32->3 softmax', 'per-tensor')} "
                 f"per inference, ops alone: {alone} (bit-exact)")
    return [("device cost", text, "<= 10,000 cycles for 1->64->1", _met(data["met"]))]


def rows_arm(e):
    d = e["data"]
    rows = {(r["model"], r["variant"]): r for r in d["rows"]}

    def c(m, v, k="fast"):
        r = rows.get((m, v))
        return f"{r[k]['instructions_mean']:,.0f}" if r else "?"
    text = (f"1->64->1: {c('1->64->1', 'per-tensor')} (per-tensor), {c('1->64->1', 'per-channel')} "
            f"(per-channel); 1->32->16->1: {c('1->32->16->1', 'per-tensor')} / "
            f"{c('1->32->16->1', 'per-channel')}; reference kernels {c('1->64->1', 'per-tensor', 'reference')} / "
            f"{c('1->64->1', 'per-channel', 'reference')} for 1->64->1 (instructions, QEMU -icount, mean of "
            f"the 256 int8 inputs, bit-exact: {'yes' if d['exact'] else 'NO'})")
    return [("device cost, Cortex-M4F", text, "report (bit-exact)", "reported" if d["exact"] else "**not exact**")]


def rows_emlearn(e):
    d = e["data"]
    o, m = d["ours"], d["emlearn"]
    text = (f"emlearn {d['ratio']:.1f}x our cycles: ours {o['cycles_mean']:,.0f} cyc, {o['flash']} B flash, "
            f"{o['ram']} B RAM, MAE {o['mae']:.3f} (int8, bit-exact); emlearn {d['emlearn_version']} "
            f"{m['cycles_mean']:,.0f} cyc, {m['flash']} B flash, {m['ram']} B RAM, MAE {m['mae']:.3f} (float32)")
    return [("peer on the same chip", text, ">= 3x fewer cycles than emlearn at our bit-exact int8",
             _met(d["met"]))]


def rows_parity(e):
    rows = e["data"]["rows"]
    text = "; ".join(f"{r['model']} {r['flavour']}: test {r['test_matched']}/{r['test_total']}, int8 "
                     f"{r.get('raw_matched_quant', r['raw_matched_micro'])}/{r['raw_total']} "
                     f"(tflite-micro wheel {r['raw_matched_micro']}/{r['raw_total']})" for r in rows)
    return [("parity", f"vs the boards' TFLM arithmetic (ipytinyml.quant) -- {text}", "100 %",
             _met(e["data"]["met"]))]


def rows_footprint(e):
    d = e["data"]
    parts = d["breakdown"]

    def part(prefix):
        return sum(v["flash"] for k, v in parts.items() if k.startswith(prefix))
    why = (f"the protocol is {part('protocol'):,} B of it (exact decimal parser "
           f"{parts.get('protocol: exact decimal parser (float32 + QUANTIZE)', {}).get('flash', 0):,} B), "
           f"the model {part('model'):,} B; see below")
    flash_ok, ram_ok = d["met"]["flash"], d["met"]["ram"]
    text = (f"+{d['added']['flash']:,} B flash, +{d['added']['ram']} B RAM (sketch {d['sketch']['flash']:,} / "
            f"{d['sketch']['ram']} B, bare Serial sketch {d['bare']['flash']:,} / {d['bare']['ram']} B)")
    verdict = (f"flash {_met(flash_ok)}, RAM {_met(ram_ok)}"
               + ("" if flash_ok and ram_ok else f": {why}"))
    return [("footprint", text, "<= 3 KB flash, <= 200 B RAM", verdict)]


def rows_build(e):
    d = e["data"]

    def stages(v):
        return ", ".join(f"{k} {s:.2f}" for k, s in v["stages"].items())
    text = (f"cold {d['cold']['total_s']:.1f} s ({stages(d['cold'])}); cached re-flash "
            f"{d['cached']['total_s']:.2f} s; rebuild after retraining {d['rebuild']['total_s']:.2f} s "
            "(flash -> first prediction)")
    return [("virtual board build", text, "report", "reported")]


def rows_notebook(e):
    d = e["data"]
    first = (f"{d['warm']['first_prediction_s']:.1f} s with warm caches, {d['cold']['first_prediction_s']:.1f} s "
             f"cold (empty caches: core, harness, matplotlib fonts built)")
    return [("notebook loop", f"kernel start -> first prediction {first}; retrain + requantize + reflash "
             f"{d['warm']['loop_s']:.1f} s; `%load_ext` {1000 * d['load_ext_s']:.0f} ms",
             "<= 20 s; <= 8 s; <= 0.3 s",
             ", ".join(f"{k} {_met(v)}" for k, v in (("first", d["met"]["first"]), ("loop", d["met"]["loop"]),
                                                      ("load_ext", d["met"]["load_ext"]))))]


def rows_serial(e):
    d = e["data"]
    ev = d["evaluate"]
    text = (f"{ev['per_s']:,.0f} predictions/s = {100 * d['ratio']:.0f} % of the reported wire bound "
            f"{ev['reported_bound']:,.0f}/s ({100 * d['ratio_batch_bound']:.0f} % of "
            f"{ev['batch_bound']:,.0f}/s from the batch's own bytes); device {ev['device_us']:.0f} us "
            f"({ev['device_cycles']:,.0f} cyc) per inference")
    why = "" if d["met"] else (
        f": the board's CPU needs {d['cpu_us_per_prediction']:.0f} us per prediction (inference, exact decimal "
        f"parsing, answer) against {d['wire_us_per_prediction']:.0f} us of wire time, so even a perfect "
        f"pipeline of `p` requests stays under {100 * d['cpu_ceiling_ratio']:.0f} %; see below")
    return [("serial throughput", text, ">= 80 % of the 115200-baud wire bound", _met(d["met"]) + why)]


def rows_own_data(e):
    d = e["data"]
    autompg = [c for c in d["cases"] if c["bound"] == "mpg" and c["features"] > 1]
    others = [c for c in d["cases"] if c["bound"] != "mpg"]
    mpg = "; ".join(f"{c['features']} features: float32 {c['float32']:.3f}, int8 {c['int8']:.3f} "
                    f"({c['diff']:+.3f})" for c in autompg)
    rest = "; ".join(f"{c['case']}: {c['diff'] / c['float32']:+.0%} ({c['rows'][0]['basis']})" for c in others)
    parity = "100 %" if d["parity_met"] else "NOT 100 %"
    c = d.get("classifier")
    rows = []
    if c:
        p = c["parity"] or {}
        rows.append(("classification",
                     f"AutoMPG origin from 7 features (softmax on the board): float32 accuracy {c['float32']:.3f}, "
                     f"int8 {c['int8']:.3f} ({c['diff']:+.3f}; mean of {d['seeds']} seeds); virtual Uno: parity "
                     f"{p.get('matched')}/{p.get('total')}, int8 {p.get('raw_matched')}/{p.get('raw_total')}, "
                     f"{p.get('cycles') or 0:,.0f} cycles per inference",
                     "int8 within 0.04 of float32 and >= 0.70 (goal: within 1 test row)",
                     _met(c["met"]) + ("" if c["goal"] else " (1-row goal missed)")))
    return rows + [("accuracy, own data",
             f"AutoMPG {mpg} (mean of {d['seeds']} seeds); {rest}; virtual-Uno parity {parity} "
             f"(table below)",
             "AutoMPG 4/7 features: int8 within 0.05 MPG of float32 (goal 0.02); any scales: within 5 % "
             "of float32 or half an int8 output step",
             _met(d["met"]) + ("" if all(c["goal"] for c in autompg) else " (0.02 goal missed)"))]


def rows_upload(e):
    d = e["data"]
    s, met = d["summary"], d["met"]
    text = (f"avrdude -> optiboot: {s['bytes']:,} B written + verified in {s['upload_s']:.2f} s (mean of "
            f"{len(d['uploads'])} uploads to one running simulator, max {s['upload_s_max']:.2f} s); banners in "
            f"2 s after each upload {s['banners']}; re-flash after retraining {s['reflash_s']:.2f} s to the "
            f"first prediction (max {s['reflash_s_max']:.2f}; upload {s['reflash_upload_s']:.2f}, connect "
            f"{s['reflash_connect_s']:.2f})")
    verdict = (("real tools **met**" if met["no_reset_loop"] else "real tools **missed** (reset loop)")
               + ", re-flash " + ("**met**" if met["reflash"] else
                                  "minimum **met**, goal **missed**" if met["reflash_minimum"] else "**missed**"))
    return [("virtual Uno upload", text, "uploads through its bootloader with the real avrdude; re-flash "
             "after retraining <= 8 s (minimum < 10 s)", verdict)]




def details_own_data(d) -> list[str]:
    out = ["### Accuracy on your own data", "",
           f"`benchmarks/bench_own_data.py`: {d['seeds']} seeds each (one split, seed 0; the seed draws the "
           "weights), int8 through the input pre-stage exactly as the board computes it; parity on the "
           "virtual Uno for seed 0 (test set, and all 256 int8 inputs of every feature column).", "",
           "| case | features | float32 MAE | int8 MAE | int8 - float32 (worst seed) | bound | parity test / int8 |",
           "|---|---|---|---|---|---|---|"]
    for c in d["cases"]:
        p = c["parity"]
        parity = f"{p['matched']}/{p['total']} / {p['raw_matched']}/{p['raw_total']}" if p else "not run"
        bound = "0.05 MPG" if c["bound"] == "mpg" else c["rows"][0]["basis"]
        out.append(f"| {c['case']} | {c['features']} | {c['float32']:.4g} | {c['int8']:.4g} | "
                   f"{c['diff']:+.4g} ({c['worst_diff']:+.4g}) | {bound} | {parity} |")
    return out + [""]


ROWS = {"own_data": rows_own_data, "training": rows_training, "cycles": rows_cycles, "arm": rows_arm,
        "emlearn": rows_emlearn, "parity": rows_parity, "footprint": rows_footprint, "build": rows_build,
        "notebook": rows_notebook, "serial": rows_serial, "upload": rows_upload}

FALLBACK_ROW = {"own_data": ["classification", "accuracy, own data"], "training": ["accuracy", "training speed"],
                "cycles": ["device cost"], "arm": ["device cost, Cortex-M4F"],
                "emlearn": ["peer on the same chip"], "parity": ["parity"], "footprint": ["footprint"],
                "build": ["virtual board build"], "notebook": ["notebook loop"],
                "serial": ["serial throughput"], "upload": ["virtual Uno upload"]}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def details_footprint(d) -> list[str]:
    out = ["### Footprint: where the bytes go", "",
           f"Built with `build_sketch` as `tm.flash` does (LTO): the sketch adds {d['added']['flash']:,} B of "
           f"flash and {d['added']['ram']} B of RAM over a bare `Serial.begin` + echo sketch. Built again "
           f"without LTO (`-fno-lto`, so every function keeps its symbol; "
           f"+{d['nolto']['added_flash']:,} B / +{d['nolto']['added_ram']} B), `avr-nm --size-sort -S -C` "
           "on both ELFs, each symbol traced to the object file that defines it:", "",
           "| part | flash B | RAM B |", "|---|---:|---:|"]
    for part, v in sorted(d["breakdown"].items(), key=lambda kv: -kv[1]["flash"] - kv[1]["ram"]):
        out.append(f"| {part} | {v['flash']:,} | {v['ram']} |")
    out += ["", "Largest symbols (bytes over the bare sketch): " + ", ".join(
        f"`{s['name'].split('(')[0]}` {s['bytes']}{' RAM' if s['ram'] else ''}" for s in d["top_symbols"][:12]) + ".",
        "", "Inside the protocol, with inlining off (`-fno-inline`; these add up to more than the inlined "
        "code, the proportions are what matter): " + ", ".join(
            f"`{f['name'].split('(')[0]}` {f['bytes']}" for f in d["protocol_functions_noinline"][:14]) + ".", ""]
    parts = d["breakdown"]
    parser = parts.get("protocol: exact decimal parser (float32 + QUANTIZE)", {"flash": 0, "ram": 0})
    handling = parts.get("protocol: line handling, answers, Timer1 cycles", {"flash": 0})
    strings = parts.get("protocol: strings and tables", {"flash": 0})
    model = sum(v["flash"] for k, v in parts.items() if k.startswith("model"))
    model_ram = sum(v["ram"] for k, v in parts.items() if k.startswith("model"))
    proto_ram = sum(v["ram"] for k, v in parts.items() if k.startswith("protocol"))
    out += [f"Why the flash goal is missed: the protocol alone is "
            f"{parser['flash'] + handling['flash'] + strings['flash']:,} B, more than the whole 3 KB budget "
            f"before the model's {model:,} B. Its largest piece is the exact decimal parser "
            f"({parser['flash']:,} B: `parse_value`, `big_round`, `sub_f32`, `quantize`, `small_round`, "
            f"`round_mantissa` and a 2 x 26-byte big integer) that turns a typed decimal into the correctly "
            f"rounded float32, subtracts the input's mean and QUANTIZEs by its divisor (the input pre-stage) "
            f"bit-exactly without a float library; then the request loop and "
            f"answers ({handling['flash']:,} B: `run_values` with its two passes, `handle_line`, the "
            f"human-readable answer `put_dequantized`, the info answer, `put_hex`, `put_u`, the Timer1 cycle "
            f"hooks), and the texts ({strings['flash']:,} B: error texts, banner/info field names)."
            f" The overshoot ({d['added']['flash'] - GOAL_FLASH:,} B) is about the size of the exact "
            f"decimal parser alone."
            f" Why RAM is missed: the protocol keeps {proto_ram} B (the 80-byte line buffer, the 52-byte "
            f"big integer, 16 bytes of outputs, state) and the model {model_ram} B of activations; the "
            f"overshoot ({d['added']['ram'] - GOAL_RAM} B) is less than the big integer. Also in the sketch: "
            f"{parts.get('libgcc/avr-libc helpers', {}).get('flash', 0)} B of libgcc arithmetic helpers "
            f"(multiplies, an 8-bit divide).", ""]
    return out


def details_serial(d) -> list[str]:
    ev, tb, lp, lr, sl, fa = (d["evaluate"], d["test_batch"], d["long_p"], d["long_r"], d["steady_line"],
                              d["first_answer"])
    dp, dr = d["device_p"], d["device_r"]
    us = 1e6 / 16e6
    out = ["### Serial throughput: where the time goes", "",
           "| measurement | predictions/s | of its wire bound |", "|---|---:|---:|",
           f"| `tm.evaluate_on_board`, test set ({tb['n']} values, {tb['requests']} requests), median of "
           f"{len(ev['runs'])} | {ev['per_s']:,.0f} | {100 * d['ratio']:.0f} % (reported bound "
           f"{ev['reported_bound']:,.0f}/s) |",
           f"| the test set again, time-stamped (`Link.request_values`), bound from its own bytes "
           f"({tb['tx_bytes']} B out, {tb['rx_bytes']} B back) | "
           f"{tb['per_s']:,.0f} | {100 * tb['ratio']:.0f} % of {tb['wire_bound_per_s']:,.0f}/s |",
           f"| lockstep: one request in flight | {d['lockstep']['per_s']:,.0f} | {100 * d['lockstep']['ratio']:.0f} % |",
           f"| long batch: test set x 10 ({lp['requests']} requests, steady state) | {lp['per_s']:,.0f} | "
           f"{100 * lp['ratio']:.0f} % |",
           f"| long batch as int8 `r` requests (no decimal parsing on the board) | {lr['per_s']:,.0f} | "
           f"{100 * lr['ratio']:.0f} % |",
           f"| prototype host sending as soon as the board's RX buffer is free: test set / long batch | "
           f"{d['early_send']['per_s']:,.0f} / {d['early_send']['long_per_s']:,.0f} | "
           f"{100 * d['early_send']['per_s'] / tb['wire_bound_per_s']:.0f} % / "
           f"{100 * d['early_send']['long_per_s'] / lp['wire_bound_per_s']:.0f} % |", "",
           "Board CPU per prediction, off the wire (the sketch's own protocol and model compiled like the "
           "Arduino build, fed the test set's request lines from flash in simavr, Timer1 around each "
           "`tinyml_protocol_poll()`; the Serial driver is not in these figures):", "",
           "| | cycles | us |", "|---|---:|---:|",
           f"| read + exact decimal parse + QUANTIZE (`p`) | {dp['parse']:,.0f} | {dp['parse'] * us:.0f} |",
           f"| inference (1->64->1, fast kernel) | {dp['inference']:,.0f} | {dp['inference'] * us:.0f} |",
           f"| answer formatting | {dp['format']:,.0f} | {dp['format'] * us:.0f} |",
           f"| **total per prediction** | **{dp['total']:,.0f}** | **{dp['total'] * us:.0f}** |",
           f"| for comparison, an int8 `r` value: read + parse / total | {dr['parse']:,.0f} / {dr['total']:,.0f} | "
           f"{dr['parse'] * us:.0f} / {dr['total'] * us:.0f} |",
           f"| wire time per prediction at 115200 baud (answers dominate) | | "
           f"{d['wire_us_per_prediction']:.0f} |", "",
           f"Why the goal is missed: **the board is the bottleneck, not the wire or the host.** Its CPU "
           f"time per prediction ({dp['total'] * us:.0f} us) is longer than the wire time per prediction "
           f"({d['wire_us_per_prediction']:.0f} us), so no host sending `p` requests can get above "
           f"~{100 * d['cpu_ceiling_ratio']:.0f} % of the wire bound with this firmware (the Serial "
           f"driver's interrupts and writes come on top; with `r` requests the ceiling is "
           f"~{100 * d['wire_us_per_prediction'] / (dr['total'] * us):.0f} %). In steady state one request of "
           f"{sl['values']:.1f} values takes {sl['period_ms']:.1f} ms: {sl['cpu_ms']:.1f} ms of CPU, "
           f"{sl['tx_tail_ms']:.1f} ms blocked writing the part of the {sl['answer_bytes']:.0f}-byte answer "
           f"that does not fit the 64-byte TX buffer, and {sl['rest_ms']:.1f} ms of Serial driver and "
           f"waiting, of which the early-send prototype removes {sl['waiting_ms']:.1f} ms (period "
           f"{sl['early_period_ms']:.1f} ms); the wire needs {sl['wire_ms']:.1f} ms. For the 78-value test set "
           f"the pipeline's fill and drain add to that: the first answer comes after "
           f"{fa['measured_ms']:.1f} ms = the first request on the wire ({fa['request_ms']:.1f}) + its "
           f"CPU time ({fa['cpu_ms']:.1f}) + its answer on the wire ({fa['answer_ms']:.1f}), "
           f"{100 * fa['measured_ms'] / (1000 * tb['host_s']):.0f} % of the whole batch. Simulator pacing "
           f"is not a factor: simulated time / wall time over the long batch is {lp['sim_over_wall']:.3f}. The host is not a factor either: Python sends the next request "
           f"{lp['host_reaction_ms']:.2f} ms (median) after the answer that allows it, its process is on the "
           f"CPU {100 * lp['host_cpu_fraction']:.0f} % of the batch's wall time (the rest is waiting for "
           f"bytes), and the pipelining window (two requests in flight, all an "
           f"Uno's 63-byte RX buffer allows) only costs the waiting above.", "",
           "Host-side findings: (1) `deploy.evaluate` computes `wire_bound_per_s` after its raw 256-value "
           "batch, so the bound uses that batch's answer bytes per value "
           f"(reported {ev['reported_bound']:,.0f}/s; the test batch's own bytes give "
           f"{ev['batch_bound']:,.0f}/s); computing it right after the test-set loop, before "
           "`board.predict_raw`, fixes the figure (the ratio then reads lower, not higher). (2) Sending the "
           "next request once the board must have emptied its RX buffer (when all but 64 bytes of an "
           "upper bound of the previous answer have arrived) instead of when that answer is complete is "
           f"worth {100 * (d['early_send']['long_per_s'] / lp['per_s'] - 1):+.0f} % in steady state and "
           f"{100 * (d['early_send']['per_s'] / tb['per_s'] - 1):+.0f} % on the test set: not enough to "
           "matter. (3) Sending the test set as int8 `r` requests, quantized exactly on the host "
           f"(`link.quantize`), is worth {100 * (lr['per_s'] / lp['per_s'] - 1):+.0f} % in steady state, "
           "but then `--test` no longer checks the board's own parsing and QUANTIZE of the floats; still "
           "short of 80 %. Firmware levers, in order of effect: a cheaper parse for plain short decimals (the "
           f"{dp['parse']:,.0f}-cycle exact path runs two 25-step long divisions per value), answers that "
           "fit the TX buffer, and a faster kernel.", ""]
    return out


def details_cycles(data) -> list[str]:
    rows = data["rows"] if isinstance(data, dict) else data
    out = ["### Device cost: cycles per inference on the ATmega328P (simavr, 16 MHz)", "",
           "Mean over the 256 int8 inputs (min-max), fast kernel as on the board, against the reference "
           "port of TFLM's kernel and a plain float32 loop of the same shape; flash = what the model adds "
           "to a minimal program (code, tables, libgcc helpers), RAM = its activation buffers.", "",
           "| model | Dense | fast kernel | reference | float32 loop | flash B | RAM B | kernels |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        f = r["fast"]
        out.append(f"| {r['model']} | {r['variant']} | {f['cycles_mean']:,.0f} ({f['cycles_min']:,}-"
                   f"{f['cycles_max']:,}) | {r['reference']['cycles_mean']:,.0f} | "
                   f"{r['float_mlp']['cycles_mean']:,.0f} | {f['flash_linked']:,} | {f['ram']} | "
                   f"{' '.join(r['kernels'])} |")
    return out + [""]


def details_arm(data, avr=None) -> list[str]:
    avr_rows = {}
    if avr is not None:
        for r in avr["rows"] if isinstance(avr, dict) else avr:
            avr_rows[(r["model"], r["variant"])] = r
    out = ["### Device cost: instructions per inference on a Cortex-M4F (QEMU), next to the ATmega328P", "",
           f"The same generated `tinyml_model.cpp` built by {data['gcc']} (`-O2 -mcpu=cortex-m4 -mthumb "
           f"-mfpu=fpv4-sp-d16 -mfloat-abi=hard`) and run bare-metal in {data['qemu']} "
           "(`-M mps2-an386 -icount shift=3`: a fixed 8 ns of virtual time per instruction, counted with "
           "SysTick and calibrated with `nop`s). Mean over the 256 int8 inputs (min-max); instructions, not "
           "cycles (QEMU does not model the core's timing). AVR cycles from the table above.", "",
           "| model | Dense | M4 fast kernel | M4 reference | M4 flash B (fast / ref) | AVR fast cycles | "
           "AVR reference cycles |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        f, ref = r["fast"], r["reference"]
        a = avr_rows.get((r["model"], r["variant"]))
        avr_cells = (f"{a['fast']['cycles_mean']:,.0f} | {a['reference']['cycles_mean']:,.0f}" if a else "- | -")
        out.append(f"| {r['model']} | {r['variant']} | {f['instructions_mean']:,.0f} ({f['instructions_min']:,}-"
                   f"{f['instructions_max']:,}) | {ref['instructions_mean']:,.0f} | {f['flash_object']:,} / "
                   f"{ref['flash_object']:,} | {avr_cells} |")
    return out + [""]


def write_markdown(results: dict, env: dict, path: Path, total_s: float, command: str) -> None:
    rows = []
    for name, entry in results.items():
        if "data" in entry:
            try:
                produced = ROWS[name](entry)
            except Exception as exc:  # noqa: BLE001 - a row that cannot be rendered must not lose the rest
                produced = [(r, f"could not render: {exc}", "", "") for r in FALLBACK_ROW[name]]
        else:
            produced = [(r, f"failed: {entry.get('error')}", "", "not measured") for r in FALLBACK_ROW[name]]
        for row in produced:
            rows.append((*row, entry["command"], entry["load_before"]))
    v = env["versions"]
    lines = [
        "# Benchmarks", "",
        f"Written by `{command}` (one command runs them all; each row says which script produced it and "
        "each script runs alone too). Goals are DESIGN.md §6's.", "",
        f"- Machine: {env['cpu']}, {env['cores']} cores, {env['ram_gb']} GB RAM; {env['os']}",
        f"- Date: {env['date']}; commit {env['commit']}; total {total_s / 60:.1f} min",
        f"- Tools: Python {v.get('python')}, TensorFlow {v.get('tensorflow')}, Keras {v.get('keras')}, "
        f"tflite-micro {v.get('tflite-micro')}, {v.get('avr-gcc')}, Arduino AVR core {v.get('arduino core')}, "
        f"simavr {v.get('simavr')}, {v.get('arm-none-eabi-gcc')}, {v.get('qemu-system-arm')}, "
        f"emlearn {v.get('emlearn')}",
        "- Load: the 1-minute load average before each benchmark is in the last column. Other sessions "
        "share this machine; timing rows (training speed, build, notebook loop, serial, upload) are slower under "
        "load, cycle counts, bytes and parity are not.", "",
        "| row | measured | goal | verdict | command | load |", "|---|---|---|---|---|---|"]
    for row, measured, goal, verdict, cmd, load_before in rows:
        lines.append(f"| {row} | {_cell(measured)} | {_cell(goal)} | {_cell(verdict)} | `{cmd}` | "
                     f"{load_before.split()[0]} |")
    lines += ["", "## Details", ""]
    if "data" in results.get("own_data", {}):
        lines += details_own_data(results["own_data"]["data"])
    if "data" in results.get("cycles", {}):
        lines += details_cycles(results["cycles"]["data"])
    if "data" in results.get("arm", {}):
        lines += details_arm(results["arm"]["data"], results.get("cycles", {}).get("data"))
    if "data" in results.get("footprint", {}):
        lines += details_footprint(results["footprint"]["data"])
    if "data" in results.get("serial", {}):
        lines += details_serial(results["serial"]["data"])
    lines += ["### Output of each benchmark", ""]
    for name, entry in results.items():
        lines += [f"`{entry['command']}` ({entry['seconds']:.0f} s, load {entry['load_before']} -> "
                  f"{entry['load_after']})", "", "```", entry["output"].strip() or "(no output)", "```", ""]
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(BENCHES))
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--json", help="also write every result to this file")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHES)}")
    env = machine()
    start = time.perf_counter()
    results = {n: run_bench(n, lambda s: print(s, flush=True)) for n in names}
    total = time.perf_counter() - start
    command = "python benchmarks/run_all.py" + (f" --only {args.only}" if args.only else "")
    write_markdown(results, env, Path(args.out), total, command)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": env, "results": results}, indent=2, default=str))
    print(f"wrote {args.out} ({total / 60:.1f} min)")
    return 0 if all("data" in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
