"""The per-model artifacts folder (default ``./tinyml/<name>/``) and report.json.

Every write goes to a temporary file in the same folder and is renamed over
the target, so a crash or a failed step never leaves a half-written file:
readers see the old version or the new one.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import TinyMLError

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
REPORT = "report.json"
KERAS_MODEL = "model.keras"
SPLIT_FILE = "data.npz"
SPLIT_KEYS = ("train_x", "train_y", "test_x", "test_y")


def tflite_filename(variant: str) -> str:
    return f"model_{variant}.tflite"


def check_name(name: str) -> str:
    """A model name is a plain identifier: it becomes a folder, a sketch and C symbols."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise TinyMLError(f"model name {name!r} is not a plain identifier; use letters, digits "
                          "and underscores, starting with a letter (e.g. hp_mpg)")
    return name


def model_dir(root: str | os.PathLike, name: str, *, create: bool = False) -> Path:
    path = Path(root) / check_name(name)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def atomic_path(target: Path, suffix: str = ".tmp"):
    """Yield a temporary path beside ``target``; rename it over ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: Path, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def save_keras(model, folder: Path) -> Path:
    target = folder / KERAS_MODEL
    with atomic_path(target, suffix=".tmp.keras") as tmp:
        tmp.unlink()  # keras refuses to overwrite silently in some versions
        model.save(tmp)
    return target


def load_keras(folder: Path):
    import keras
    path = folder / KERAS_MODEL
    if not path.is_file():
        raise TinyMLError(f"no trained model in {folder}; run %%tinyml_train (tm.train) first")
    try:
        return keras.models.load_model(path)
    except Exception as exc:  # noqa: BLE001 - a damaged zip fails in many ways inside keras
        raise TinyMLError(f"{path} is damaged and cannot be loaded ({type(exc).__name__}); re-run "
                          "%%tinyml_train to save the model again") from exc


def read_report(folder: Path) -> dict:
    path = folder / REPORT
    if not path.is_file():
        raise TinyMLError(f"no model named {folder.name!r} in {folder.parent}; "
                          "run %%tinyml_train (tm.train) first")
    try:
        report = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise TinyMLError(f"{path} is not valid JSON; re-run %%tinyml_train to rebuild it") from exc
    variants = report.get("variants") if isinstance(report, dict) else None
    keras_entry = variants.get("keras") if isinstance(variants, dict) else None
    if not isinstance(keras_entry, dict) or not isinstance(keras_entry.get("sha256"), str) \
            or not all(isinstance(v, dict) for v in variants.values()):
        raise TinyMLError(f"{path} is damaged (no entry for the trained model); re-run "
                          "%%tinyml_train to rebuild it")
    return report


def write_report(folder: Path, report: dict) -> None:
    write_text(folder / REPORT, json.dumps(report, indent=2, sort_keys=False) + "\n")


def known_models(root: str | os.PathLike) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / REPORT).is_file())


def save_split(folder: Path, dataset) -> None:
    """The train/test arrays of a ``data.Dataset``, atomically."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, train_x=dataset.train_x, train_y=dataset.train_y,
             test_x=dataset.test_x, test_y=dataset.test_y)
    write_bytes(Path(folder) / SPLIT_FILE, buffer.getvalue())


def load_split(folder: Path) -> dict:
    """The train/test arrays saved in a model folder; one-line TinyMLError when damaged."""
    import numpy as np

    folder = Path(folder)
    damaged = TinyMLError(f"the saved data split of {folder.name!r} is missing or damaged; "
                          "re-run %%tinyml_train")
    try:
        with np.load(folder / SPLIT_FILE, allow_pickle=False) as saved:
            split = {key: saved[key] for key in saved.files}
    except Exception as exc:  # noqa: BLE001 - OSError, BadZipFile, EOFError, a bare .npy...: all damage
        raise damaged from exc
    if not all(key in split for key in SPLIT_KEYS):
        raise damaged
    return split


def tflite_file(folder: Path, variant: str) -> Path:
    """The saved ``.tflite`` of a variant, checked against the model's current Keras model."""
    folder = Path(folder)
    report = read_report(folder)
    entry = report["variants"].get(variant)
    path = folder / tflite_filename(variant)
    if entry is None or not path.is_file():
        raise TinyMLError(f"model {folder.name!r} has no {variant} variant yet; run %tinyml_quantize first")
    if entry.get("source") != report["variants"]["keras"]["sha256"]:
        raise TinyMLError(f"the {variant} model of {folder.name!r} is older than its last training; "
                          "run %tinyml_quantize again")
    return path


def model_classes(name: str, root) -> list | None:
    """A classifier's class names saved with a model; None for a regression or when unknown."""
    try:
        return read_report(model_dir(root, name)).get("data", {}).get("classes")
    except TinyMLError:
        return None


def model_columns(name: str, root) -> tuple[list, list]:
    """(feature names, label names) saved with a model; empty lists when unknown."""
    try:
        data = read_report(model_dir(root, name)).get("data", {})
    except TinyMLError:
        return [], []
    labels = data.get("labels") or ([data["label"]] if data.get("label") else [])
    return list(data.get("features", [])), list(labels)
