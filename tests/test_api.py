"""tm.train / tm.quantize end to end on real TensorFlow, and the artifact guarantees."""
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

import ipytinyml as tm
from ipytinyml.errors import TinyMLError

EPOCHS = 200


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    report = tm.train(name="hp_mpg", root=root, epochs=EPOCHS)
    return root, report


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_train_writes_report_model_and_split(trained):
    root, report = trained
    folder = root / "hp_mpg"
    assert report["data"] == {"source": "autompg", "features": ["horsepower"], "label": "mpg",
                              "labels": ["mpg"], "n_train": 314, "n_test": 78, "seed": 0,
                              "task": "regression", "constant_features": [], "n_dropped": 6}
    assert report["variants"]["keras"]["mae"] < 3.6
    assert json.loads((folder / "report.json").read_text()) == report
    assert (folder / "model.keras").is_file()
    split = tm.load_split("hp_mpg", root)
    assert split["test_x"].shape == (78, 1)
    assert not list(folder.glob(".*tmp*")), "no temporary files left behind"


def test_training_is_reproducible(tmp_path):
    a = tm.train(name="a", root=tmp_path, epochs=50, seed=3)
    b = tm.train(name="b", root=tmp_path, epochs=50, seed=3)
    assert a["variants"]["keras"]["mae"] == b["variants"]["keras"]["mae"]


def test_quantize_writes_every_variant(trained):
    root, _ = trained
    report = tm.quantize(name="hp_mpg", root=root, variants=("float32", "int8", "float16", "dynamic"))
    variants = report["variants"]
    for v in ("float32", "int8", "float16", "dynamic"):
        path = root / "hp_mpg" / f"model_{v}.tflite"
        assert variants[v]["bytes"] == path.stat().st_size
        assert variants[v]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert variants["int8"]["per_channel"] is False
    assert abs(variants["int8"]["mae"] - variants["float32"]["mae"]) <= 0.05
    assert tm.tflite_path("hp_mpg", root) == root / "hp_mpg" / "model_int8.tflite"


def test_name_defaults_to_last_model(trained):
    root, _ = trained
    tm.train(name="latest", root=root, epochs=20)
    assert tm.last_model() == "latest" and tm.last_model(root) == "latest"
    report = tm.quantize(root=root, variants="float32")
    assert report["name"] == "latest"


def test_last_model_belongs_to_its_artifacts_folder(trained, tmp_path):
    root, _ = trained
    tm.train(name="elsewhere", root=tmp_path / "a", epochs=5)
    tm.train(name="other", root=tmp_path / "b", epochs=5)
    assert tm.last_model(tmp_path / "a") is None  # "other" lives in b/
    report = tm.quantize(root=tmp_path / "a", variants="float32")  # the only model in a/
    assert report["name"] == "elsewhere"
    tm.train(name="third", root=tmp_path / "a", epochs=5)
    with pytest.raises(TinyMLError, match="no model yet"):
        tm.quantize(root=tmp_path / "c")


@pytest.mark.parametrize("name", ["../x", "a/b", "", "1abc", "x" * 80, "hp mpg", "..", "/tmp/x"])
def test_names_that_are_not_identifiers_are_refused(tmp_path, name):
    with pytest.raises(TinyMLError, match="not a plain identifier"):
        tm.train(name=name, root=tmp_path, epochs=1)
    assert not any(tmp_path.iterdir())


def test_unknown_model_name_suggests_close_match(trained):
    root, _ = trained
    with pytest.raises(TinyMLError, match="did you mean 'hp_mpg'"):
        tm.quantize(name="hp_mgp", root=root)


def test_failed_conversion_leaves_artifacts_byte_identical(tmp_path):
    import keras
    tm.train(name="m", root=tmp_path, epochs=20)
    tm.quantize(name="m", root=tmp_path)
    folder = tmp_path / "m"
    before = _digests(folder)
    # A real model the int8 converter must refuse, saved where quantize will load it.
    bad = keras.Sequential([keras.Input((1,)), keras.layers.Dense(4, activation="softplus"), keras.layers.Dense(1)])
    bad.save(folder / "model.keras")
    before["model.keras"] = hashlib.sha256((folder / "model.keras").read_bytes()).hexdigest()
    report = json.loads((folder / "report.json").read_text())  # as train would record it
    report["variants"]["keras"]["sha256"] = before["model.keras"]
    (folder / "report.json").write_text(json.dumps(report))
    before["report.json"] = hashlib.sha256((folder / "report.json").read_bytes()).hexdigest()
    with pytest.raises(TinyMLError, match="EXP"):
        tm.quantize(name="m", root=tmp_path, variants=("float32", "int8"))
    assert _digests(folder) == before


def test_stale_int8_after_retraining_is_detected(tmp_path):
    tm.train(name="m", root=tmp_path, epochs=20)
    tm.quantize(name="m", root=tmp_path, variants="int8")
    tm.train(name="m", root=tmp_path, epochs=21)
    with pytest.raises(TinyMLError, match="no int8 variant|older than its last training"):
        tm.tflite_path("m", tmp_path)


def test_user_model(tmp_path):
    import keras
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    report = tm.train(name="custom", root=tmp_path, model=model, epochs=30)
    assert np.isfinite(report["variants"]["keras"]["mae"])
    wrong = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(TinyMLError, match="feature"):
        tm.train(name="custom", root=tmp_path, model=wrong, epochs=1)


def test_import_does_not_import_tensorflow():
    code = "import sys, ipytinyml; ipytinyml.TinyMLError; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
