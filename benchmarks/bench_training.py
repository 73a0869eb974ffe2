"""Accuracy and training speed on AutoMPG horsepower -> mpg (the TF tutorial split).

For each seed: the default ``tm.train`` recipe, then float32 and int8 test MAE
from ``tm.quantize``; against it, the tutorial's plain
``model.fit(epochs=100, validation_split=0.2)`` of the same architecture, same data.

    python benchmarks/bench_training.py [--seeds 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def plain_fit(seed: int, data) -> tuple[float, float]:
    """The tutorial's recipe: Adam(0.001), MAE loss, 100 epochs, batch 32, validation_split=0.2."""
    import keras
    from ipytinyml import training

    training.seed_everything(seed)
    model = training.default_model(data.train_x)
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="mean_absolute_error")
    start = time.perf_counter()
    model.fit(data.train_x, data.train_y, epochs=100, validation_split=0.2, verbose=0)
    seconds = time.perf_counter() - start
    return seconds, training.mae(training.predict(model, data.test_x), data.test_y)


def ours(seed: int, root: str) -> tuple[float, dict]:
    import ipytinyml as tm

    start = time.perf_counter()
    tm.train(name=f"s{seed}", root=root, seed=seed)
    seconds = time.perf_counter() - start
    report = tm.quantize(name=f"s{seed}", root=root)
    return seconds, {v: report["variants"][v]["mae"] for v in ("keras", "float32", "int8")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    from ipytinyml.data import load_data

    rows = []
    with tempfile.TemporaryDirectory() as root:
        ours(99, root)  # warm-up: first-call TensorFlow start-up is not training time
        for seed in range(args.seeds):
            data = load_data(seed=0)  # the tutorial split; the seed varies the initialisation
            t_ours, mae = ours(seed, root)
            t_plain, mae_plain = plain_fit(seed, data)
            rows.append({"seed": seed, "train_s": t_ours, "plain_s": t_plain, "plain_mae": mae_plain, **mae})
            print(f"seed {seed}: ours {t_ours:.2f} s float32 MAE {mae['float32']:.3f} int8 MAE {mae['int8']:.3f}"
                  f" | plain fit {t_plain:.2f} s MAE {mae_plain:.3f}", flush=True)

    def summary(key):
        values = [r[key] for r in rows]
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    f32, i8, plain = summary("float32"), summary("int8"), summary("plain_mae")
    gap = [abs(r["int8"] - r["float32"]) for r in rows]
    speedup = statistics.mean(r["plain_s"] for r in rows) / statistics.mean(r["train_s"] for r in rows)
    print(f"float32 MAE {f32[0]:.3f} ± {f32[1]:.3f}; int8 MAE {i8[0]:.3f} ± {i8[1]:.3f}; "
          f"|int8 - float32| max {max(gap):.3f}")
    print(f"training: ours {summary('train_s')[0]:.2f} s vs plain fit {summary('plain_s')[0]:.2f} s "
          f"-> {speedup:.1f}x faster; plain fit MAE {plain[0]:.3f} ± {plain[1]:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "speedup": speedup}, f, indent=2)


if __name__ == "__main__":
    main()
