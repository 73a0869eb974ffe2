"""Virtual board build and start time: cold caches, cached re-flash, rebuild after retraining.

Runs in a fresh Python process (this script starts itself with ``--child``)
whose ``XDG_CACHE_HOME`` is an empty temporary folder and whose artifacts root
is new, so nothing is cached: not the compiled Arduino core, not the simavr
harness, not a build of the sketch. In that process, after training and
quantizing the default model (not timed):

1. cold: ``tm.flash(board="sim")`` -> first ``board.predict``, timed per stage
   (generate, compile = arduino-builder incl. the Arduino core, start =
   the simavr harness incl. its first compile and the bootloader's, upload =
   avrdude into the virtual Uno's optiboot, connect = banner + info);
2. cached: close, ``tm.flash`` the unchanged model again (the build cache
   hits; the harness is already built) -> first prediction;
3. rebuild: retrain with another seed and requantize (not timed), then
   ``tm.flash`` -> first prediction: the sketch is compiled again, the core
   comes from the (now warm) core cache.

Goal: report (DESIGN.md §6 has none for this; the notebook loop's re-flash
goal is in bench_notebook.py).

    python benchmarks/bench_build.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed_flash(name: str, root: Path) -> dict:
    import ipytinyml as tm

    marks = []
    start = time.perf_counter()
    board = tm.flash(name=name, root=root, board="sim",
                     progress=lambda stage: marks.append((str(stage), time.perf_counter())))
    flashed = time.perf_counter()
    board.predict([130.0])
    predicted = time.perf_counter()
    board.close()
    stages, previous = {}, start
    names = [m for m in marks if " " not in m[0]]  # single words are stages; sentences are notes
    for (stage, t), nxt in zip(names, [*names[1:], ("end", flashed)]):
        stages[stage] = nxt[1] - t
    return {"total_s": predicted - start, "flash_s": flashed - start, "predict_s": predicted - flashed,
            "stages": stages, "log": board.build.get("log") if isinstance(board.build, dict) else None}


def child() -> dict:
    import ipytinyml as tm

    root = Path(os.environ["BENCH_ROOT"])
    tm.train(name="hp_mpg", root=root)
    tm.quantize(name="hp_mpg", root=root)
    cold = timed_flash("hp_mpg", root)
    cached = timed_flash("hp_mpg", root)
    tm.train(name="hp_mpg", root=root, seed=1)
    tm.quantize(name="hp_mpg", root=root)
    rebuild = timed_flash("hp_mpg", root)
    return {"cold": cold, "cached": cached, "rebuild": rebuild}


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, XDG_CACHE_HOME=str(Path(tmp) / "cache"), BENCH_ROOT=str(Path(tmp) / "tinyml"))
        proc = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True,
                              timeout=900)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            raise RuntimeError(f"bench_build child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(lines[-1])


def report(r: dict) -> str:
    out = []
    for key, what in (("cold", "cold (empty caches)"), ("cached", "cached re-flash, unchanged model"),
                      ("rebuild", "rebuild after retraining (core cached)")):
        v = r[key]
        stages = ", ".join(f"{k} {s:.2f}" for k, s in v["stages"].items())
        out.append(f"{what:42s} {v['total_s']:6.2f} s to the first prediction ({stages}; predict "
                   f"{v['predict_s']:.2f})")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child()), flush=True)
        return 0
    r = run()
    print(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
