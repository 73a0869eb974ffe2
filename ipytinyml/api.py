"""The plain Python API; the magics are thin wrappers over these functions.

>>> import ipytinyml as tm
>>> report = tm.train(data="autompg", features=["horsepower"], label="mpg", name="hp_mpg")
>>> report = tm.quantize()                      # name defaults to the last model
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import artifacts
from .errors import TinyMLError
from .quiet import tensorflow_quiet

DEFAULT_ROOT = "tinyml"

_last: tuple[str, Path] | None = None  # (name, artifacts root) of the model used last


def last_model(root: str | os.PathLike | None = None) -> str | None:
    """Name of the model most recently trained or used in this process (in ``root``, if given)."""
    if _last is None or (root is not None and Path(root).resolve() != _last[1]):
        return None
    return _last[0]


def _remember(name: str, root: str | os.PathLike) -> str:
    global _last
    _last = (name, Path(root).resolve())
    return name


def resolve_name(name: str | None, root: str | os.PathLike = DEFAULT_ROOT) -> str:
    """``name``, or the last model used; a helpful error when there is neither or it is unknown."""
    if name is None:
        name = last_model(root)
        if name is None:
            known = artifacts.known_models(root)
            if len(known) != 1:
                raise TinyMLError(f"no model yet in {root}/; train one first with %%tinyml_train "
                                  "(tm.train) or pass --name")
            name = known[0]
    artifacts.check_name(name)
    if not (Path(root) / name / artifacts.REPORT).is_file():
        import difflib
        known = artifacts.known_models(root)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else (
            f"known models: {', '.join(known)}" if known else "train it first with %%tinyml_train")
        raise TinyMLError(f"no model named {name!r} in {root}/", hint=hint)
    return _remember(name, root)


def load_split(name: str | None = None, root: str | os.PathLike = DEFAULT_ROOT) -> dict[str, np.ndarray]:
    """The train/test arrays saved with a model (``train_x``, ``train_y``, ``test_x``, ``test_y``)."""
    return artifacts.load_split(artifacts.model_dir(root, resolve_name(name, root)))


@tensorflow_quiet
def train(data="autompg", features=("horsepower",), label="mpg", name: str = "hp_mpg",
          root: str | os.PathLike = DEFAULT_ROOT, model=None, epochs: int | None = None,
          seed: int = 0, progress=None, task: str | None = None) -> dict:
    """Train a Keras regression model or classifier and save it with its data split and report.

    Parameters
    ----------
    data : "autompg" (bundled), a CSV path or a pandas DataFrame
    features : numeric columns of ``data`` (bool columns count as 0/1)
    label : the numeric column to predict, or several (a list, or names joined by commas); a
        classifier's column of classes
    task : "regression" or "classification"; default: classification when the label is text
    name : model name, a plain identifier; artifacts go to ``root/name/``
    model : optional ``keras.Model``; default Normalization -> Dense(64, relu) -> Dense(labels), or
        for a classifier Normalization -> Dense(32, relu) -> Dense(classes, softmax) (sigmoid for 2)
    epochs : training length (default: 1000 full-batch steps, or 100 epochs of ``fit``
        for a model the user compiled)
    seed : seeds the split and the weight initialisation
    progress : callable ``(done, total, loss)`` called during training

    Returns
    -------
    dict
        The report (also written to ``root/name/report.json``).

    Raises
    ------
    DataError, TinyMLError
    """
    from . import data as data_mod
    from . import training as train_mod

    from .convert import constant_features
    from .metrics import metrics

    artifacts.check_name(name)
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise TinyMLError(f"epochs must be a positive whole number, not {epochs!r}")
    dataset = data_mod.load_data(data, features, label, seed=seed, task=task)
    n_classes = len(dataset.classes) if dataset.classes else None
    constant = constant_features(dataset.train_x)
    default = model is None
    if default:
        train_mod.seed_everything(seed)
        model = train_mod.default_model(dataset.train_x, dataset.train_y.shape[1], n_classes=n_classes)
    train_mod.check_model(model, dataset.train_x.shape[1], dataset.train_y.shape[1], n_classes=n_classes)
    train_mod.fit(model, dataset.train_x, dataset.train_y, epochs=epochs, seed=seed, progress=progress,
                  task=dataset.task)
    if default:
        train_mod.ignore_constant_features(model, constant)
    scores = metrics(dataset.task, train_mod.predict(model, dataset.test_x), dataset.test_y, n_classes)
    if not all(np.isfinite(v) for v in scores.values() if isinstance(v, float)):
        raise TinyMLError("training diverged (test error is not finite); try fewer epochs or "
                          "scale the features")

    folder = artifacts.model_dir(root, name, create=True)
    artifacts.save_split(folder, dataset)
    keras_path = artifacts.save_keras(model, folder)
    report = {
        "name": name,
        "data": {**dataset.describe(),
                 "constant_features": [f for f, c in zip(dataset.features, constant) if c]},
        "variants": {"keras": {**scores, "sha256": artifacts.sha256(keras_path.read_bytes())}},
    }
    artifacts.write_report(folder, report)
    _remember(name, root)
    return report


@tensorflow_quiet
def quantize(name: str | None = None, root: str | os.PathLike = DEFAULT_ROOT,
             variants=("float32", "int8"), per_channel: bool = False, int8_io: bool = False,
             progress=None) -> dict:
    """Convert the saved Keras model to TFLite variants and measure each on the test set.

    Parameters
    ----------
    name : model name (default: the last model)
    variants : any of "float32", "float16", "dynamic", "int8"
    per_channel : int8 with one weight scale per Dense unit (not for the Arduino TFLM ports)
    int8_io : int8 with int8 input/output tensors instead of float32
    progress : callable ``(variant)`` called before each conversion

    Returns
    -------
    dict
        The updated report; ``report["variants"][v]`` has ``mae``, ``bytes``, ``sha256``.

    Nothing is written unless every requested variant converts.
    """
    from . import convert as convert_mod
    from . import reference

    variants = [variants] if isinstance(variants, str) else list(variants)
    unknown = [v for v in variants if v not in convert_mod.VARIANTS]
    if unknown or not variants:
        raise TinyMLError(f"unknown variant(s) {unknown}; choose from {', '.join(convert_mod.VARIANTS)}")
    name = resolve_name(name, root)
    folder = artifacts.model_dir(root, name)
    report = artifacts.read_report(folder)
    split = load_split(name, root)
    model = artifacts.load_keras(folder)
    keras_sha = report["variants"]["keras"]["sha256"]
    if artifacts.sha256((folder / artifacts.KERAS_MODEL).read_bytes()) != keras_sha:
        # train writes report.json last: a training stopped half-way left a new model.keras
        raise TinyMLError(f"{artifacts.KERAS_MODEL} of {name!r} is not the model its report.json "
                          "describes (was a training interrupted?); re-run %%tinyml_train")

    converted: dict[str, bytes] = {}
    entries: dict[str, dict] = {}
    for variant in variants:
        if progress:
            progress(variant)
        if variant == "int8":
            converted[variant], entries[variant], int8_plan = _quantize_int8(
                model, split, report, per_channel, int8_io)
            continue
        flatbuffer = convert_mod.convert(model, variant, split["train_x"])
        prediction = reference.run_litert(flatbuffer, split["test_x"])
        converted[variant] = flatbuffer
        entries[variant] = {**_scores(report, prediction, split["test_y"]), "bytes": len(flatbuffer),
                            "sha256": artifacts.sha256(flatbuffer), "source": keras_sha}
    if "int8" in entries:
        reference_entry = entries.get("float32") or report["variants"].get("float32") or report["variants"]["keras"]
        entries["int8"]["gate"] = _gate(reference_entry, entries["int8"], int8_plan, split, report)

    for variant, flatbuffer in converted.items():
        artifacts.write_bytes(folder / artifacts.tflite_filename(variant), flatbuffer)
    report["variants"].update(entries)
    artifacts.write_report(folder, report)
    return report


def _scores(report: dict, prediction, y) -> dict:
    from .metrics import metrics
    data = report["data"]
    classes = data.get("classes")
    return metrics(data.get("task", "regression"), prediction, y, len(classes) if classes else None)


def _quantize_int8(model, split, report, per_channel, int8_io):
    """``(flatbuffer, report entry, plan or None)``: the int8 graph, its pre-stage, its test
    metrics and what each runtime says of it; the plan (with its pre-stage) when a runtime of
    ours can run the graph."""
    from . import convert as convert_mod
    from . import runtimes

    int8 = convert_mod.to_int8(model, split["train_x"], per_channel=per_channel, int8_io=int8_io)
    plan = _plan_of(int8)
    prediction, computed_by = _int8_prediction(int8, plan, split["test_x"])
    features = report["data"]["features"]
    entry = {**_scores(report, prediction, split["test_y"]), "bytes": len(int8.flatbuffer),
             "sha256": artifacts.sha256(int8.flatbuffer), "source": report["variants"]["keras"]["sha256"],
             "per_channel": bool(per_channel), "int8_io": bool(int8_io), "computed_by": computed_by,
             "input_stage": int8.stage.to_json(), "standardized": int8.standardized,
             "constant_features": [f for f, c in zip(features, int8.constant) if c],
             "runtimes": runtimes.problems(int8.flatbuffer)}
    return int8.flatbuffer, entry, plan


def _plan_of(int8):
    """The graph's ModelPlan with its pre-stage, or None when no runtime of ours runs it."""
    import dataclasses

    from .errors import ConvertError
    from .quant import plan_from_model
    try:
        return dataclasses.replace(plan_from_model(int8.flatbuffer), stage=int8.stage)
    except ConvertError:
        return None


def _int8_prediction(int8, plan, x) -> tuple[np.ndarray, str]:
    """What a board answers for ``x``: the boards' TFLM arithmetic (``quant``) behind the
    pre-stage when a runtime of ours can run the graph, else LiteRT (whose int8 SOFTMAX, for
    one, is not TFLM's)."""
    from . import reference
    from .quant import predict_float
    if plan is None:
        return reference.run_staged(int8.flatbuffer, int8.stage, x), "LiteRT"
    return predict_float(plan, x), "the boards' TFLM arithmetic (ipytinyml.quant)"


def _gate(reference_entry: dict, entry: dict, plan, split, report) -> dict:
    from . import accuracy
    from .prestage import InputStage

    if "accuracy" in entry:
        return accuracy.class_gate(reference_entry["accuracy"], entry["accuracy"], report["data"]["n_test"])
    cause = lambda: accuracy.likely_cause(  # noqa: E731 - only computed when the gate fails
        features=report["data"]["features"], stage=InputStage.from_json(entry["input_stage"]),
        standardized=entry["standardized"], plan=plan, test_x=split["test_x"])
    output_scale = plan.output.scale if plan is not None else 0.0
    return accuracy.gate(reference_entry["mae"], entry["mae"], output_scale, cause)


def tflite_path(name: str | None = None, root: str | os.PathLike = DEFAULT_ROOT,
                variant: str = "int8") -> Path:
    """The saved ``.tflite`` of a variant, checked against the current Keras model."""
    return artifacts.tflite_file(artifacts.model_dir(root, resolve_name(name, root)), variant)


BOARDS = ("auto", "sim", "uno", "nano33ble")


def flash(name: str | None = None, root: str | os.PathLike = DEFAULT_ROOT, board: str = "auto",
          port: str | None = None, runtime: str | None = None, progress=None, release=None):
    """Generate, build and start (or upload) the firmware for a saved int8 model.

    Parameters
    ----------
    name : model name (default: the last model)
    board : "auto" (a connected board, else the virtual board), "sim" (the virtual Uno in
        simavr), "uno", "nano33ble" or a full FQBN
    port : serial port of a real board (default: discovered)
    runtime : "native" (plain C, any Arduino) or "tflm" (TensorFlow Lite Micro, 32-bit boards);
        default: tflm on the Nano 33 BLE (mbed cores), native elsewhere
    progress : callable ``(stage: str)``; stages are "generate", "compile", "start"/"upload",
        "connect", and a one-line note when the board was chosen automatically
    release : a Board (or Link) holding the board's port, closed before uploading

    Returns
    -------
    Board
        Connected; ``board.predict([130, 150])``, ``board.info()``, ``board.close()``.
        Building an unchanged model again reuses the cached build.
    """
    from . import deploy
    return deploy.flash(resolve_name(name, root), root, board=board, port=port, runtime=runtime,
                        progress=progress, release=release)


def evaluate_on_board(name: str | None = None, root: str | os.PathLike = DEFAULT_ROOT, board=None,
                      progress=None) -> dict:
    """Stream the whole test set through the board; write ``parity`` and ``latency`` to report.json.

    Returns
    -------
    dict
        ``{"mae", "parity": {"matched", "total", "runtime"}, "latency": {"device_us",
        "device_cycles", "host_roundtrip_ms", "predictions_per_s", "wire_bound_per_s"},
        "test_rows": {"board", "actual"}}``; ``test_rows`` (the board's prediction and the true
        label of every test row, lists of rows) is not saved to report.json.
        ``ipytinyml.views.EvaluateResult(result)`` shows it as tables and, for a regression, a
        predicted-vs-actual plot.
    """
    from . import deploy
    return deploy.evaluate(resolve_name(name, root), root, board, progress=progress)
