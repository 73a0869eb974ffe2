"""Datasets: the bundled AutoMPG copy, any DataFrame or CSV, and the seeded split.

The split reproduces TensorFlow's "Basic regression: Predict fuel efficiency"
tutorial: rows with a missing value are dropped, then
``df.sample(frac=0.8, random_state=seed)`` is the training set and the rest
is the test set.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError

AUTOMPG_COLUMNS = [
    "mpg", "cylinders", "displacement", "horsepower",
    "weight", "acceleration", "model_year", "origin",
]
BUILTIN_DATASETS = ("autompg",)
MIN_ROWS = 10


@dataclass(frozen=True)
class Dataset:
    """A cleaned, split dataset: float32 arrays ready for Keras and TFLite."""

    source: str
    features: list[str]
    labels: list[str]
    seed: int
    train_x: np.ndarray = field(repr=False)
    train_y: np.ndarray = field(repr=False)
    test_x: np.ndarray = field(repr=False)
    test_y: np.ndarray = field(repr=False)
    task: str = "regression"
    classes: list[str] | None = None  # classification: class names, in the order of their index
    n_dropped: int = 0  # rows left out for a missing feature value

    @property
    def label(self) -> str:
        """The label column, or the label columns joined by commas."""
        return ",".join(self.labels)

    @property
    def n_train(self) -> int:
        return len(self.train_x)

    @property
    def n_test(self) -> int:
        return len(self.test_x)

    def describe(self) -> dict:
        """The ``data`` section of report.json."""
        out = {"source": self.source, "features": list(self.features), "label": self.label,
               "labels": list(self.labels), "n_train": self.n_train, "n_test": self.n_test,
               "seed": self.seed, "task": self.task, "n_dropped": self.n_dropped}
        if self.classes is not None:
            out["classes"] = list(self.classes)
        return out


def load_autompg() -> pd.DataFrame:
    """The UCI Auto MPG data shipped with the package (398 rows, CC BY 4.0, Quinlan 1993).

    Columns are lower-case (``mpg``, ``horsepower``, ...); the six missing
    horsepower values are NaN.
    """
    raw = resources.files("ipytinyml").joinpath("datasets/auto-mpg.data")
    with raw.open("r") as f:
        # The car name follows a tab; treating tab as a comment drops it, as the TF tutorial does.
        return pd.read_csv(f, names=AUTOMPG_COLUMNS, na_values="?", comment="\t",
                           sep=" ", skipinitialspace=True)


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a user's CSV file, turning every way it can fail into one DataError line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such data file: {path}", hint="pass 'autompg', a CSV path or a DataFrame")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty; give a CSV file with a header row and data rows")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path} has no columns; give a CSV file with a header row") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path} is not a readable CSV file ({type(exc).__name__}); "
                        "save it as comma-separated text with a header row") from exc
    if len(df) == 0:
        raise DataError(f"{path} has a header but no data rows; add rows below the header")
    header = _header(path)
    duplicated = sorted({n for n in header if header.count(n) > 1})
    if duplicated:
        raise DataError(f"{path} repeats column name(s) {duplicated}; give every column a unique name")
    if df.shape[1] < 2:
        raise DataError(f"{path} has {df.shape[1]} column; a CSV needs at least one feature "
                        "and one label column separated by commas")
    return df


def _header(path: Path) -> list[str]:
    """The header row as written (pandas renames repeated names to 'x.1')."""
    import csv
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        return [name.strip() for name in next(csv.reader(f), [])]


def _frame_for(data) -> tuple[pd.DataFrame, str]:
    if isinstance(data, pd.DataFrame):
        return data, "DataFrame"
    if isinstance(data, (str, os.PathLike)):
        text = os.fspath(data)
        if text.lower() in BUILTIN_DATASETS:
            return load_autompg(), text.lower()
        if not text.lower().endswith((".csv", ".txt", ".data")) and not Path(text).exists():
            close = difflib.get_close_matches(text.lower(), BUILTIN_DATASETS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "pass 'autompg', a CSV path or a DataFrame"
            raise DataError(f"unknown dataset {text!r}", hint=hint)
        return read_csv(text), text
    raise DataError(f"data must be 'autompg', a CSV path or a pandas DataFrame, not {type(data).__name__}")


def _check_columns(df: pd.DataFrame, columns: list[str]) -> None:
    names = [str(c) for c in df.columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataError(f"duplicate column names {duplicated}; give every column a unique name")
    for column in columns:
        if column not in df.columns:
            close = difflib.get_close_matches(column, names, n=3)
            hint = f"did you mean {', '.join(map(repr, close))}?" if close else f"columns are {names}"
            raise DataError(f"no column {column!r} in the data", hint=hint)
    for column in columns:
        if _is_boolean(df[column]):
            continue
        if not pd.api.types.is_numeric_dtype(df[column]):
            bad = df[column][pd.to_numeric(df[column], errors="coerce").isna() & df[column].notna()]
            example = f" (e.g. {bad.iloc[0]!r})" if len(bad) else ""
            raise DataError(f"column {column!r} is not numeric{example}; clean it or choose another column")


def _is_boolean(column: pd.Series) -> bool:
    """True/False values (a bool column, or a CSV's True/False text): used as 1/0."""
    if pd.api.types.is_bool_dtype(column):
        return True
    values = column.dropna()
    return column.dtype == object and len(values) > 0 and all(isinstance(v, (bool, np.bool_)) for v in values)


def _names(value, what: str) -> list[str]:
    """Column names from a name, a comma-separated string or a list."""
    if isinstance(value, str):
        names = [v.strip() for v in value.split(",")] if "," in value else [value]
    else:
        try:
            names = list(value)
        except TypeError:
            raise DataError(f"{what} must be a column name or a list of names, not {value!r}") from None
    if not all(isinstance(n, str) for n in names):
        raise DataError(f"{what} must be column names (strings), not {value!r}")
    return names


TASKS = ("regression", "classification")
MAX_CLASSES = 64


def _class_name(value) -> str:
    """A class as text: 2.0 -> "2", "Japan" -> "Japan"."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _is_categorical(column: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def load_data(data="autompg", features=("horsepower",), label="mpg", seed: int = 0,
              train_fraction: float = 0.8, task: str | None = None) -> Dataset:
    """Load, clean and split a dataset.

    Parameters
    ----------
    data : "autompg", a CSV path, or a pandas DataFrame
    features : list of numeric column names used as model inputs (bool columns count as 0/1)
    label : the numeric column to predict, or a list of them (several outputs); for
        classification one column of classes (text, numbers or bool)
    seed : random_state of the split (0 reproduces the TF tutorial)
    train_fraction : share of rows used for training
    task : "regression", "classification" or None: classification when the label is text

    Raises
    ------
    DataError
        Unknown or non-numeric column, too few rows, missing labels, unreadable file.
    """
    features = [features] if isinstance(features, str) else _names(features, "features")
    labels = _names(label, "label")
    if not features:
        raise DataError("no feature columns given; name at least one, e.g. features=['horsepower']")
    if not labels or not all(labels):
        raise DataError("no label column given; name one, e.g. label='mpg'")
    both = [name for name in labels if name in features]
    if both:
        raise DataError(f"{both[0]!r} is both a feature and the label; pick a different label column")
    repeated = sorted({n for n in features + labels if (features + labels).count(n) > 1})
    if repeated:
        raise DataError(f"column(s) {repeated} named twice; name each column once")
    if task not in (None, *TASKS):
        raise DataError(f"unknown task {task!r}; use regression or classification")
    if not 0.0 < train_fraction < 1.0:
        raise DataError(f"train_fraction must be between 0 and 1, not {train_fraction}")
    df, source = _frame_for(data)
    _check_columns(df, features)
    if task is None:
        task = "classification" if any(name in df.columns and _is_categorical(df[name])
                                        for name in labels) else "regression"
    if task == "classification" and len(labels) != 1:
        raise DataError(f"classification takes one label column, not {len(labels)}; "
                        "train one classifier per label")
    _check_columns(df, features + labels if task == "regression" else features)
    missing = [name for name in labels if name not in df.columns]
    if missing:
        _check_columns(df, missing)  # the one-line "no column" error with its suggestion
    df = df[features + labels]
    for name in labels:
        if df[name].isna().any():
            n = int(df[name].isna().sum())
            raise DataError(f"label column {name!r} has {n} missing value(s); drop or fill those rows first")
    n_rows = len(df)
    df = df.dropna().reset_index(drop=True)
    bools = features + labels if task == "regression" else features
    df = df.astype({name: np.float64 for name in bools if _is_boolean(df[name])})
    values = df[bools].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise DataError("the data holds infinite values; remove them first")
    if len(df) < MIN_ROWS:
        raise DataError(f"only {len(df)} usable row(s) after dropping missing values; "
                        f"at least {MIN_ROWS} are needed")
    train = df.sample(frac=train_fraction, random_state=seed)
    test = df.drop(train.index)
    if len(test) == 0 or len(train) == 0:
        raise DataError("the split left no test rows; give more data")
    as_x = lambda part: part[features].to_numpy(dtype=np.float32)  # noqa: E731
    classes = None
    if task == "classification":
        values = sorted(df[labels[0]].unique(), key=lambda v: (str(type(v)), v))
        classes = [_class_name(v) for v in values]
        if len(classes) < 2:
            raise DataError(f"label {labels[0]!r} has only one class ({classes[0]!r}); "
                            "a classifier needs at least two")
        if len(classes) > MAX_CLASSES:
            raise DataError(f"label {labels[0]!r} has {len(classes)} classes; at most {MAX_CLASSES} "
                            "are supported (is it a number to predict? use task='regression')")
        index = {v: i for i, v in enumerate(values)}
        as_y = lambda part: part[labels[0]].map(index).to_numpy(dtype=np.float32)[:, None]  # noqa: E731
    else:
        as_y = lambda part: part[labels].to_numpy(dtype=np.float32)  # noqa: E731
    return Dataset(source=source, features=features, labels=labels, seed=seed,
                   train_x=as_x(train), train_y=as_y(train), test_x=as_x(test), test_y=as_y(test),
                   task=task, classes=classes, n_dropped=n_rows - len(df))
