"""Serial throughput of the virtual board against the 115200-baud wire bound, and why.

Trains and quantizes the default AutoMPG model (1->64->1, int8), flashes the
virtual Uno (``tm.flash(board="sim")``) and measures:

1. ``tm.evaluate_on_board`` (what ``%tinyml_predict --test`` runs), repeated:
   ``predictions_per_s`` against the ``wire_bound_per_s`` it reports, and the
   same bound recomputed from the bytes of the test-set batch itself
   (``Link.wire_bound_per_s`` right after that batch);
2. the timeline of one test-set batch (``Link.request_values("p")`` with every
   write and answer time-stamped), the simulated cycles over the batch against
   the wall time (simulator pacing), and the time to the first answer;
3. variants on the same board: lockstep (one request in flight,
   ``link.RX_WINDOW = 0`` for the experiment), a long batch (the test set 10
   times: steady state, no fill/drain), the long batch as int8 ``r`` requests
   (quantized on the host: no decimal parsing on the board), and a host that
   sends the next request as soon as the board must have emptied its RX buffer
   (``early_send`` below: a prototype of the only host-side change the window
   allows);
4. the board's CPU cost of each request line, off the wire: the sketch's own
   ``tinyml_protocol.cpp`` and ``tinyml_model.cpp``, compiled with avr-g++
   -Os -flto as the Arduino build does, driven in simavr by a driver that feeds
   the very lines of (2) from flash and times each ``tinyml_protocol_poll()``
   with Timer1, split into reading + parsing + QUANTIZE, inference (the
   protocol's own cycle hooks) and formatting the answer. The Arduino Serial
   driver is not in this figure (reads come from flash, writes are counted);
   its interrupts show in the sketch's ``cyc=`` (Timer0 and UART ISRs that
   land inside an inference are counted there).

    python benchmarks/bench_serial.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from avr_timer1 import TIMER1_NOW  # benchmarks/ is on sys.path: they run as scripts

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_RATIO = 0.80
F_CPU = 16_000_000
BYTE_S = 10 / 115200  # 8N1
ARDUINO_FLAGS = ["-Os", "-mmcu=atmega328p", "-DF_CPU=16000000UL", "-ffunction-sections", "-fdata-sections",
                 "-flto", "-x", "c++", "-std=gnu++11", "-fno-exceptions", "-fno-threadsafe-statics",
                 "-fpermissive", "-w"]

DRIVER = r"""
/* Times tinyml_protocol_poll() on request lines fed from flash (bench_serial.py). */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/pgmspace.h>
#include <avr/sleep.h>
#include <stdint.h>
#include "tinyml_protocol.h"
#include "bench_lines.h"

""" + TIMER1_NOW + r"""
static const char *rp;
static uint8_t line_done;
static uint16_t n_out;
static uint32_t t_first_write, model_t0, model_cycles;

extern "C" int tinyml_port_read(void)
{
    if (line_done)
        return -1;
    char c = (char)pgm_read_byte(rp++);
    if (c == '\n')
        line_done = 1;
    return (uint8_t)c;
}
extern "C" void tinyml_port_write(char c)
{
    (void)c;
    if (!n_out++)
        t_first_write = now();
}
extern "C" uint32_t tinyml_port_micros(void) { return 0; }
extern "C" uint32_t tinyml_port_millis(void) { return 0; }  /* no silence: lines come whole */
extern "C" void tinyml_port_cycles_begin(void) { model_t0 = now(); }
extern "C" uint32_t tinyml_port_cycles_end(void)
{
    uint32_t d = now() - model_t0;
    model_cycles += d;
    return d;
}
extern "C" uint16_t tinyml_port_free_ram(void) { return 0; }

static void put_char(char c)
{
    while (!(UCSR0A & _BV(UDRE0))) {
    }
    UDR0 = (uint8_t)c;
}
static void put_u(uint32_t v)
{
    char d[11];
    uint8_t n = 0;
    put_char(' ');
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        put_char(d[--n]);
}

int main(void)
{
    uint32_t overhead;
    UBRR0 = 0;
    UCSR0B = _BV(TXEN0);
    TCCR1A = 0;
    TCCR1B = _BV(CS10);
    TIMSK1 = _BV(TOIE1);
    sei();
    {
        const uint32_t t0 = now();
        overhead = now() - t0;
    }
    tinyml_protocol_begin(TINYML_FLASH("bench"));
    rp = bench_lines;
    for (uint16_t k = 0; k < BENCH_N_LINES; k++) {
        line_done = 0;
        n_out = 0;
        model_cycles = 0;
        const uint32_t t0 = now();
        tinyml_protocol_poll();
        const uint32_t total = now() - t0 - overhead;
        put_char('L');
        put_u(total);
        put_u(model_cycles);
        put_u(t_first_write - t0);
        put_u(n_out);
        put_char('\n');
    }
    put_char('d'); put_char('o'); put_char('n'); put_char('e');
    while (!(UCSR0A & _BV(UDRE0))) {
    }
    UCSR0A |= _BV(TXC0);
    put_char('\n');
    while (!(UCSR0A & _BV(TXC0))) {
    }
    cli();
    sleep_enable();
    sleep_cpu();
    return 0;
}
"""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ----------------------------------------------------------------- on the wire

def timed_batch(board, values, command="p"):
    """request_values with every write and answer time-stamped; also sim cycles over the batch."""
    link = board.link
    events = []
    write, wait = link._write, link._await

    def timed_write(data, doing):
        write(data, doing)
        events.append((time.monotonic(), "tx", data))

    def timed_await(rid, what):
        answer, size = wait(rid, what)
        events.append((time.monotonic(), "rx", size, dict(answer.fields), len(answer.values)))
        return answer, size

    link._write, link._await = timed_write, timed_await
    try:
        c0 = board.cycles()
        cpu0 = time.process_time()
        outputs, timing = link.request_values(command, values)
        host_cpu = time.process_time() - cpu0
        c1 = board.cycles()
    finally:
        del link._write, link._await
    t0 = events[0][0]
    lines = [e[2] for e in events if e[1] == "tx"]
    answers = [{"t_ms": 1000 * (e[0] - t0), "bytes": e[2], "values": e[4], "cyc": int(e[3].get("cyc", 0))}
               for e in events if e[1] == "rx"]
    sends = [1000 * (e[0] - t0) for e in events if e[1] == "tx"]
    n = len(values)
    return {
        "outputs": outputs, "lines": lines, "answers": answers, "sends_ms": sends,
        "n": n, "requests": timing.requests, "host_s": timing.host_s,
        "per_s": n / timing.host_s, "tx_bytes": timing.tx_bytes, "rx_bytes": timing.rx_bytes,
        "wire_bound_per_s": n * (1 / BYTE_S) / max(timing.tx_bytes, timing.rx_bytes),
        "sim_s": (c1 - c0) / F_CPU, "cycles": timing.cycles,
        "host_cpu_fraction": host_cpu / timing.host_s,
    }


def early_send(link, command, values):
    """Prototype host: send the next request once the board must have taken the previous one
    out of its 63-byte RX buffer, instead of when the answer before it is complete.

    The sketch takes line j+1 out of its RX buffer as soon as it has queued answer j into its
    63-byte TX buffer, i.e. once at most 64 bytes of answer j are still to go out. The host does
    not know an answer's length before its end, so it uses an upper bound. Returns
    (outputs, seconds).
    """
    from ipytinyml import link as link_mod

    command, chunks, _ = link._plan(command, values)
    ser = link._ser
    lines = []
    for chunk in chunks:
        rid = link._take_id()
        lines.append((rid, link_mod.format_request(rid, command, chunk), len(chunk)))

    def answer_bound(rid, n):
        return len(f"@{rid} ok") + 5 * n + len(" us=4294967295 cyc=4294967295\r\n")

    outputs, sent, answered, partial = [], 0, 0, bytearray()
    start = time.monotonic()
    deadline = start + 30
    while answered < len(lines):
        while sent < len(lines):
            drained = len(partial) >= answer_bound(lines[answered][0], lines[answered][2]) - 64
            unread = sum(len(lines[j][1]) for j in range(answered + 1, sent)
                         if not (j == answered + 1 and drained))
            if sent > answered and unread + len(lines[sent][1]) > link_mod.RX_WINDOW:
                break
            ser.write(lines[sent][1])
            sent += 1
        partial += ser.read(ser.in_waiting or 1)
        while b"\n" in partial:
            i = partial.index(b"\n")
            text = partial[:i].decode("ascii", "replace").strip()
            del partial[:i + 1]
            if text.startswith("@"):
                answer = link_mod.parse_answer(text)
                if not answer.ok or answer.rid != lines[answered][0]:
                    raise RuntimeError(f"unexpected answer {text!r}")
                outputs.extend(answer.values)
                answered += 1
        if time.monotonic() > deadline:
            raise RuntimeError("early_send: no answer")
    return outputs, time.monotonic() - start


def lockstep(board, values):
    from ipytinyml import link as link_mod
    saved = link_mod.RX_WINDOW
    link_mod.RX_WINDOW = 0
    try:
        return timed_batch(board, values)
    finally:
        link_mod.RX_WINDOW = saved


# ------------------------------------------------------------- off the wire

def device_costs(sketch: Path, lines: list[bytes], work: Path) -> list[dict]:
    """Cycles of tinyml_protocol_poll() for each request line, on the ATmega328P in simavr."""
    work.mkdir(parents=True, exist_ok=True)
    text = b"".join(lines).decode("ascii")
    literal = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    (work / "bench_lines.h").write_text(
        "#include <avr/pgmspace.h>\n"
        f"#define BENCH_N_LINES {len(lines)}\n"
        f'static const char bench_lines[] PROGMEM = "{literal}";\n')
    (work / "proto_driver.cpp").write_text(DRIVER)
    elf = work / "proto_driver.elf"
    subprocess.run(["avr-g++", *ARDUINO_FLAGS, "-DTINYML_PORT_HAS_CYCLES=1", "-I", str(sketch), "-I", str(work),
                    str(sketch / "tinyml_protocol.cpp"), str(sketch / "tinyml_model.cpp"),
                    str(work / "proto_driver.cpp"), "-Wl,--gc-sections", "-o", str(elf)],
                   check=True, capture_output=True)
    run = subprocess.run(["simavr", "-m", "atmega328p", "-f", str(F_CPU), str(elf)],
                         capture_output=True, timeout=120)
    out = _ANSI.sub("", run.stdout.decode("ascii", "replace") + run.stderr.decode("ascii", "replace"))
    rows = []
    for line, raw in zip([ln.strip().rstrip(".") for ln in out.splitlines() if ln.startswith("L ")], lines):
        total, model, first_write, n_out = (int(v) for v in line.split()[1:])
        n_values = len(raw.split()) - 2
        rows.append({"line": raw.decode().strip(), "bytes": len(raw), "values": n_values, "total": total,
                     "inference": model, "parse": first_write - model, "format": total - first_write,
                     "answer_bytes": n_out})
    if len(rows) != len(lines):
        raise RuntimeError(f"protocol driver printed {len(rows)} of {len(lines)} lines:\n{out[-1500:]}")
    return rows


def per_value(rows: list[dict]) -> dict:
    values = sum(r["values"] for r in rows)
    return {k: sum(r[k] for r in rows) / values for k in ("total", "inference", "parse", "format")} | {
        "answer_bytes": sum(r["answer_bytes"] for r in rows) / values,
        "request_bytes": sum(r["bytes"] for r in rows) / values}


# ------------------------------------------------------------------- the run

def run(repeats: int = 5, log=print) -> dict:
    import numpy as np

    import ipytinyml as tm
    from ipytinyml import deploy, quant

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tinyml"
        tm.train(name="hp_mpg", root=root)
        tm.quantize(name="hp_mpg", root=root)
        split = tm.load_split("hp_mpg", root=root)
        test_x = [float(v) for v in split["test_x"].reshape(-1)]
        with tm.flash(name="hp_mpg", root=root, board="sim") as board:
            board.predict([130.0])  # warm-up
            evaluations = []
            for _ in range(repeats):
                r = tm.evaluate_on_board(name="hp_mpg", root=root, board=board)
                # the bound recomputed from the test-set batch's own answer bytes (evaluate computes
                # it after its raw batch, whose answers have another size per value)
                board.link.request_values("p", test_x)
                lat = r["latency"]
                evaluations.append({"per_s": lat["predictions_per_s"], "reported_bound": lat["wire_bound_per_s"],
                                    "batch_bound": board.link.wire_bound_per_s(test_x),
                                    "device_us": lat["device_us"], "device_cycles": lat["device_cycles"],
                                    "parity": r["parity"]})
            log("evaluate_on_board: " + ", ".join(f"{e['per_s']:.0f}/s" for e in evaluations))
            batch = timed_batch(board, test_x)
            lock = lockstep(board, test_x)
            long_x = test_x * 10
            steady = timed_batch(board, long_x)
            q = [int(v) for v in quant.quantize(np.asarray(long_x, np.float32), board.plan.input).reshape(-1)]
            steady_r = timed_batch(board, q, "r")
            early = [early_send(board.link, "p", test_x) for _ in range(3)]
            early_long = early_send(board.link, "p", long_x)
            expected = board.link.request_values("p", long_x)[0]
            if early_long[0] != expected or steady["outputs"] != expected:
                raise RuntimeError("a variant changed the board's answers")
            sketch, _, _ = deploy.generate("hp_mpg", root, deploy.VIRTUAL_BOARD)
        costs_p = device_costs(sketch, batch["lines"], Path(tmp) / "driver_p")
        costs_r = device_costs(sketch, steady_r["lines"][:6], Path(tmp) / "driver_r")

    def median(key):
        return statistics.median(e[key] for e in evaluations)

    p = per_value(costs_p)
    r = per_value(costs_r)
    wire_us = 1e6 / steady["wire_bound_per_s"]
    us = 1e6 / F_CPU
    values_per_line = steady["n"] / steady["requests"]
    answer_per_line = steady["rx_bytes"] / steady["requests"]
    period_ms = 1000 * steady["host_s"] / steady["requests"]
    cpu_ms = p["total"] * values_per_line * us / 1000
    tail_ms = max(0.0, answer_per_line - 64) * BYTE_S * 1000   # answer bytes beyond the TX buffer
    first = device_first = None
    if costs_p:
        row = costs_p[0]
        device_first = {"request_ms": 1000 * row["bytes"] * BYTE_S, "cpu_ms": row["total"] * us / 1000,
                        "answer_ms": 1000 * (row["answer_bytes"] + 2) * BYTE_S}
        first = batch["answers"][0]["t_ms"]
    result = {
        "evaluate": {"per_s": median("per_s"), "reported_bound": median("reported_bound"),
                     "batch_bound": median("batch_bound"), "device_us": median("device_us"),
                     "device_cycles": median("device_cycles"), "runs": evaluations,
                     "parity": evaluations[-1]["parity"]},
        "test_batch": _summary(batch), "lockstep": _summary(lock), "long_p": _summary(steady),
        "long_r": _summary(steady_r),
        "early_send": {"per_s": statistics.median(len(test_x) / s for _, s in early),
                       "long_per_s": len(long_x) / early_long[1]},
        "device_p": p, "device_r": r, "device_rows_p": costs_p,
        "wire_us_per_prediction": wire_us,
        "cpu_us_per_prediction": p["total"] * us,
        "in_sketch_inference_cycles": steady["cycles"] / steady["n"],
        # CPU alone (Serial driver not counted) against the wire: the best any host could do
        "cpu_ceiling_ratio": wire_us / (p["total"] * us),
        "steady_line": {"values": values_per_line, "answer_bytes": answer_per_line, "period_ms": period_ms,
                        "cpu_ms": cpu_ms, "tx_tail_ms": tail_ms,
                        "rest_ms": period_ms - cpu_ms - tail_ms,
                        "wire_ms": 1000 * max(steady["tx_bytes"], steady["rx_bytes"]) * BYTE_S
                        / steady["requests"]},
        "first_answer": {"measured_ms": first, **(device_first or {})},
    }
    # what the early-send host removes from the period is time the board spent waiting for a line
    early_period = 1000 * values_per_line / result["early_send"]["long_per_s"]
    result["steady_line"]["early_period_ms"] = early_period
    result["steady_line"]["waiting_ms"] = period_ms - early_period
    result["ratio"] = result["evaluate"]["per_s"] / result["evaluate"]["reported_bound"]
    result["ratio_batch_bound"] = result["evaluate"]["per_s"] / result["evaluate"]["batch_bound"]
    result["met"] = result["ratio"] >= GOAL_RATIO
    return result


def _summary(b: dict) -> dict:
    first = b["answers"][0]["t_ms"] if b["answers"] else None
    # how long the host takes from an answer to the request it unblocks (2 requests in flight)
    reactions = [b["sends_ms"][i + 2] - b["answers"][i]["t_ms"] for i in range(len(b["sends_ms"]) - 2)
                 if i < len(b["answers"])]
    return {k: b[k] for k in ("n", "requests", "host_s", "per_s", "tx_bytes", "rx_bytes", "wire_bound_per_s",
                              "sim_s", "host_cpu_fraction")} | {
        "host_reaction_ms": statistics.median(reactions) if reactions else None,
        "ratio": b["per_s"] / b["wire_bound_per_s"], "first_answer_ms": first,
        "sim_over_wall": b["sim_s"] / b["host_s"],
        "cycles_per_inference": b["cycles"] / b["n"] if b["cycles"] else None,
        "timeline": [{"t_ms": a["t_ms"], "bytes": a["bytes"], "values": a["values"], "cyc": a["cyc"]}
                     for a in b["answers"]][:12],
        "sends_ms": b["sends_ms"][:12]}


def report(r: dict) -> str:
    e, tb, lp, lr, dp, dr = (r["evaluate"], r["test_batch"], r["long_p"], r["long_r"], r["device_p"],
                             r["device_r"])
    us = 1e6 / F_CPU
    sl, fa = r["steady_line"], r["first_answer"]
    return "\n".join([
        f"evaluate_on_board (test set, {tb['n']} values in {tb['requests']} requests): "
        f"{e['per_s']:.0f} predictions/s; reported wire bound {e['reported_bound']:.0f}/s -> "
        f"{100 * r['ratio']:.0f}% (goal >= 80%); bound from the batch's own bytes {e['batch_bound']:.0f}/s -> "
        f"{100 * r['ratio_batch_bound']:.0f}%",
        f"  parity {e['parity']}",
        f"test batch: first answer after {tb['first_answer_ms']:.1f} ms; sim time / wall time "
        f"{tb['sim_over_wall']:.3f}; lockstep (1 request in flight) {r['lockstep']['per_s']:.0f}/s "
        f"({100 * r['lockstep']['ratio']:.0f}%)",
        f"long batch (test set x10, {lp['requests']} requests): 'p' {lp['per_s']:.0f}/s of "
        f"{lp['wire_bound_per_s']:.0f}/s ({100 * lp['ratio']:.0f}%); int8 'r' {lr['per_s']:.0f}/s of "
        f"{lr['wire_bound_per_s']:.0f}/s ({100 * lr['ratio']:.0f}%)",
        f"early-send host prototype: test set {r['early_send']['per_s']:.0f}/s, long batch "
        f"{r['early_send']['long_per_s']:.0f}/s",
        f"board CPU per prediction, off the wire ('p' lines of the test set): parse+QUANTIZE "
        f"{dp['parse']:.0f} cyc, inference {dp['inference']:.0f} cyc, answer {dp['format']:.0f} cyc, total "
        f"{dp['total']:.0f} cyc = {dp['total'] * us:.0f} us ('r' lines: parse {dr['parse']:.0f}, total "
        f"{dr['total']:.0f} cyc)",
        f"  = {r['cpu_us_per_prediction']:.0f} us of CPU per prediction vs {r['wire_us_per_prediction']:.0f} us "
        f"of wire time: the board alone caps throughput at {100 * r['cpu_ceiling_ratio']:.0f}% of the wire "
        f"bound (Serial driver not counted); in the sketch an inference measures "
        f"{r['in_sketch_inference_cycles']:.0f} cyc",
        f"steady state per request ({sl['values']:.1f} values, {sl['answer_bytes']:.0f} B answer): period "
        f"{sl['period_ms']:.1f} ms = CPU {sl['cpu_ms']:.1f} + blocked on the answer's tail beyond the 64-byte "
        f"TX buffer {sl['tx_tail_ms']:.1f} + rest (Serial driver, waiting) {sl['rest_ms']:.1f}; the wire "
        f"needs {sl['wire_ms']:.1f} ms; with the early-send host the period is {sl['early_period_ms']:.1f} ms "
        f"(so ~{sl['waiting_ms']:.1f} ms of the rest is the board waiting for the next line)",
        f"first answer {fa['measured_ms']:.1f} ms = request on the wire {fa['request_ms']:.1f} + CPU "
        f"{fa['cpu_ms']:.1f} + answer on the wire {fa['answer_ms']:.1f} (sum "
        f"{fa['request_ms'] + fa['cpu_ms'] + fa['answer_ms']:.1f})",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    r = run(args.repeats)
    print(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
