"""Parity: the virtual board's int8 outputs against the boards' TFLM arithmetic, bit for bit.

For each model (the default 1->64->1 and a 1->32->16->1, both trained by
``tm.train`` on the tutorial split) and each int8 flavour (per-tensor, and
per-channel Dense weights via ``tm.quantize(per_channel=True)``):

- ``tm.flash(board="sim")``: the Uno sketch built and run in simavr;
- ``tm.evaluate_on_board``: the test set through the board (``p`` requests,
  floats quantized on the board) and the 256 int8 inputs (``r`` requests)
  against ``ipytinyml.quant`` (the arithmetic of the TFLM that runs on boards)
  -- its ``parity`` field;
- the same 256 int8 inputs against the tflite-micro wheel, for information:
  each int8 ``q`` is given to it as the float ``scale * (q - zero_point)``,
  which its QUANTIZE maps back to ``q`` (checked), and its output requantized
  exactly. The wheel takes a per-tensor layer's ``s_in * s_w`` in double where
  the boards take it in float32, so it may differ by 1 LSB on a few inputs.

Goal (DESIGN.md §6): 100 % against the boards' arithmetic.

    python benchmarks/bench_parity.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = {"1->64->1": None, "1->32->16->1": [32, 16]}


def custom_model(hidden, train_x):
    import keras
    from ipytinyml import training

    training.seed_everything(0)
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(train_x)
    return keras.Sequential([keras.Input((1,)), norm] + [keras.layers.Dense(u, activation="relu") for u in hidden]
                            + [keras.layers.Dense(1)])


def raw_vs_micro(board, tflite_path) -> dict:
    """All 256 int8 inputs: the board's int8 outputs against tflite-micro's."""
    from ipytinyml import quant
    from ipytinyml.reference import run_micro

    q = np.arange(-128, 128, dtype=np.int64).reshape(-1, 1)
    x = quant.dequantize(q, board.plan.input).astype(np.float32)
    round_trip = int(np.sum(quant.quantize(x, board.plan.input).astype(np.int64) == q))
    micro = quant.quantize(run_micro(tflite_path.read_bytes(), x), board.plan.output).astype(np.int64)
    got = board.predict_raw(q.reshape(-1))
    return {"matched": int(np.sum(np.all(got == micro, axis=1))), "total": len(q), "round_trip": round_trip}


def run(log=print) -> dict:
    import ipytinyml as tm
    from ipytinyml.data import load_data

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tinyml"
        data = load_data(seed=0)
        for model_name, hidden in MODELS.items():
            for flavour, per_channel in (("per-tensor", False), ("per-channel", True)):
                name = f"m{len(rows)}"
                model = custom_model(hidden, data.train_x) if hidden else None
                tm.train(name=name, root=root, model=model)
                tm.quantize(name=name, root=root, per_channel=per_channel)
                with tm.flash(name=name, root=root, board="sim") as board:
                    result = tm.evaluate_on_board(name=name, root=root, board=board)
                    raw = raw_vs_micro(board, tm.tflite_path(name, root=root))
                p = result["parity"]
                row = {"model": model_name, "flavour": flavour,
                       "test_matched": p["matched"], "test_total": p["total"],
                       "raw_matched_quant": p["raw_matched"], "raw_total": p["raw_total"],
                       "raw_matched_micro": raw["matched"], "raw_round_trip": raw["round_trip"],
                       "oracle": p["oracle"], "board_mae": result["mae"]}
                rows.append(row)
                log(f"{model_name:13s} {flavour:11s} test set {row['test_matched']}/{row['test_total']} "
                    f"vs {row['oracle']}; 256 int8 inputs {row['raw_matched_quant']}/{row['raw_total']} vs "
                    f"ipytinyml.quant, {row['raw_matched_micro']}/{row['raw_total']} vs the tflite-micro wheel")
    met = all(r["test_matched"] == r["test_total"] and r["raw_matched_quant"] == r["raw_total"] for r in rows)
    return {"rows": rows, "met": met}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    r = run(log=lambda s: print(s, flush=True))
    print("parity 100 %:", "met" if r["met"] else "MISSED")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
