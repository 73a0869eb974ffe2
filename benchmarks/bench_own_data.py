"""Accuracy on a user's own data: float32 against int8 behind the input pre-stage, and parity.

For each case, five seeds of ``tm.train`` (the split is drawn once, seed 0; each seed draws
the weights: ``keras.utils.set_random_seed`` then the default model), ``tm.quantize``, and for
the first seed ``tm.flash(board="sim")`` + ``tm.evaluate_on_board`` on the virtual Uno
(test set through the pre-stage on the board, and all 256 int8 inputs per feature column).

Cases: AutoMPG with 1 (the tutorial), 4 and 7 numeric features; two synthetic features
10,000x apart in scale; the same with a constant column; the same with the label x 1e7;
AutoMPG 4 features -> mpg and acceleration (two outputs).

Goals (DESIGN.md §6): AutoMPG 4 and 7 features int8 within 0.05 MPG of float32 (goal 0.02);
any scales and label magnitude within 5 % of float32 or what the int8 output step allows.

    python benchmarks/bench_own_data.py [--seeds 5] [--no-board] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FOUR = ["cylinders", "displacement", "horsepower", "weight"]
SEVEN = FOUR + ["acceleration", "model_year", "origin"]


def synthetic(n: int = 400, *, constant: bool = False, factor: float = 1.0):
    import pandas as pd
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"small": rng.uniform(0, 1, n), "large": rng.uniform(0, 10_000, n)})
    if constant:
        df["flat"] = 7.25
    df["y"] = (3 * np.sin(3 * df["small"]) + df["large"] / 2_000 + rng.normal(0, 0.02, n)) * factor
    return df


def cases():
    """name -> (data, features, label, bound kind)"""
    return {
        "AutoMPG horsepower -> mpg": ("autompg", ["horsepower"], "mpg", "mpg"),
        "AutoMPG 4 features -> mpg": ("autompg", FOUR, "mpg", "mpg"),
        "AutoMPG 7 features -> mpg": ("autompg", SEVEN, "mpg", "mpg"),
        "synthetic, 2 features 10^4 apart": (synthetic(), ["small", "large"], "y", "relative"),
        "synthetic + a constant column": (synthetic(constant=True), ["small", "flat", "large"], "y", "relative"),
        "synthetic, label x 1e7": (synthetic(factor=1e7), ["small", "large"], "y", "relative"),
        "AutoMPG 4 features -> mpg, acceleration": ("autompg", FOUR, ["mpg", "acceleration"], "relative"),
    }


def run_case(name, spec, seeds, root, board: bool, log) -> dict:
    import keras

    import ipytinyml as tm
    from ipytinyml import training
    from ipytinyml.data import load_data

    data, features, label, bound = spec
    split = load_data(data, features, label, seed=0)
    rows = []
    parity = None
    for seed in range(seeds):
        keras.utils.set_random_seed(seed)
        model = training.default_model(split.train_x, split.train_y.shape[1])
        tm.train(data=data, features=features, label=label, name="case", root=root, model=model, seed=0)
        report = tm.quantize(name="case", root=root)
        v = report["variants"]
        rows.append({"seed": seed, "keras": v["keras"]["mae"], "float32": v["float32"]["mae"],
                     "int8": v["int8"]["mae"], "gate_ok": v["int8"]["gate"]["ok"],
                     "limit": v["int8"]["gate"]["limit"], "basis": v["int8"]["gate"]["basis"]})
        if board and seed == 0:
            with tm.flash(name="case", root=root, board="sim") as b:
                p = tm.evaluate_on_board(name="case", root=root, board=b)["parity"]
            parity = {"matched": p["matched"], "total": p["total"], "raw_matched": p["raw_matched"],
                      "raw_total": p["raw_total"], "oracle": p["oracle"]}
    f32 = [r["float32"] for r in rows]
    i8 = [r["int8"] for r in rows]
    diff = [a - b for a, b in zip(i8, f32)]
    mean_f32, mean_diff = statistics.fmean(f32), statistics.fmean(diff)
    if bound == "mpg":
        met, goal = abs(mean_diff) <= 0.05, abs(mean_diff) <= 0.02
    else:
        met = all(r["gate_ok"] for r in rows)
        goal = abs(mean_diff) <= 0.01 * mean_f32
    result = {"case": name, "features": len(features), "rows": rows, "float32": mean_f32,
              "int8": statistics.fmean(i8), "diff": mean_diff, "worst_diff": max(diff, key=abs),
              "bound": bound, "met": met, "goal": goal, "parity": parity}
    log(f"{name:42s} float32 {mean_f32:10.4g} int8 {result['int8']:10.4g} diff {mean_diff:+.4g} "
        f"(worst {result['worst_diff']:+.4g}) {'met' if met else 'MISSED'}"
        + (f"; parity {parity['matched']}/{parity['total']}, int8 {parity['raw_matched']}/{parity['raw_total']}"
           if parity else ""))
    return result


ORIGIN_FEATURES = ["mpg", "cylinders", "displacement", "horsepower", "weight", "acceleration", "model_year"]


def run_classifier(seeds, root, board: bool, log) -> dict:
    """AutoMPG origin from the 7 other numeric columns: the default softmax classifier."""
    import keras

    import ipytinyml as tm
    from ipytinyml import training
    from ipytinyml.data import load_data

    split = load_data("autompg", ORIGIN_FEATURES, "origin", seed=0, task="classification")
    rows, parity = [], None
    for seed in range(seeds):
        keras.utils.set_random_seed(seed)
        model = training.default_model(split.train_x, n_classes=len(split.classes))
        tm.train(features=ORIGIN_FEATURES, label="origin", task="classification", name="origin", root=root,
                 model=model, seed=0)
        v = tm.quantize(name="origin", root=root)["variants"]
        rows.append({"seed": seed, "float32": v["float32"]["accuracy"], "int8": v["int8"]["accuracy"]})
        if board and seed == 0:
            with tm.flash(name="origin", root=root, board="sim") as b:
                result = tm.evaluate_on_board(name="origin", root=root, board=b)
            p = result["parity"]
            parity = {"matched": p["matched"], "total": p["total"], "raw_matched": p["raw_matched"],
                      "raw_total": p["raw_total"], "cycles": result["latency"]["device_cycles"],
                      "board_accuracy": result["accuracy"]}
    f32 = statistics.fmean(r["float32"] for r in rows)
    i8 = statistics.fmean(r["int8"] for r in rows)
    out = {"rows": rows, "float32": f32, "int8": i8, "diff": i8 - f32, "n_test": split.n_test,
           "met": abs(i8 - f32) <= 0.04 and i8 >= 0.70, "goal": abs(i8 - f32) <= 1 / split.n_test,
           "parity": parity}
    log(f"{'AutoMPG origin classifier (7 features)':42s} float32 accuracy {f32:.3f} int8 {i8:.3f} "
        f"({i8 - f32:+.3f}) {'met' if out['met'] else 'MISSED'}"
        + (f"; parity {parity['matched']}/{parity['total']}, int8 {parity['raw_matched']}/{parity['raw_total']}, "
           f"{parity['cycles']:,.0f} cycles per inference" if parity else ""))
    return out


def run(seeds: int = 5, board: bool = True, log=print) -> dict:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in cases().items():
            results.append(run_case(name, spec, seeds, Path(tmp) / "tinyml", board, log))
        classifier = run_classifier(seeds, Path(tmp) / "tinyml", board, log)
    parity_met = all(r["parity"] is None or (r["parity"]["matched"] == r["parity"]["total"]
                                             and r["parity"]["raw_matched"] == r["parity"]["raw_total"])
                     for r in results)
    p = classifier["parity"]
    parity_met = parity_met and (p is None or (p["matched"] == p["total"] and p["raw_matched"] == p["raw_total"]))
    return {"seeds": seeds, "cases": results, "classifier": classifier,
            "met": all(r["met"] for r in results) and classifier["met"] and parity_met, "parity_met": parity_met}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--no-board", action="store_true", help="skip the virtual-board parity runs")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    r = run(args.seeds, board=not args.no_board, log=lambda s: print(s, flush=True))
    print("own data:", "met" if r["met"] else "MISSED")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
